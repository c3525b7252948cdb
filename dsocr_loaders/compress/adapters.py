"""The compression tools as framework components (COMPRESSION.md §4.7): text Documents / nodes in, one rendered
page each out, the page's exact text slice as content, the image written to a folder (never base64 in metadata),
the counts in metadata, deterministic ids; `verify=True` decodes each page through an engine and adds fidelity.
`OpticalCompressor` is a LangChain BaseDocumentTransformer, `OpticalCompressionTransform` a LlamaIndex
TransformComponent; both share `compress_text`, which imports neither framework."""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..ocr.ids import stable_id
from .count import compression_stats, page_tokens, token_counter
from .fidelity import fidelity
from .render import render_text_pages
from .roundtrip import decompress


@dataclass(frozen=True)
class CompressedPage:
    text: str
    image_path: str
    metadata: dict[str, Any]
    id: str


def compress_text(text: str, source_id: str, *, image_dir: str | Path, mode: str = "small",
                  font_px: float | None = None, target_ratio: float | None = None, fit: str = "paginate",
                  tokenizer: Callable[[str], int] | Any = None, engine: Any = None, verify: bool = False) -> list[CompressedPage]:
    """One CompressedPage per rendered page of `text` (`source_id` names the input in ids and file names)."""
    count = token_counter(tokenizer) if tokenizer is not None else (lambda s: len(s.split()))
    pages = render_text_pages(text, mode=mode, font_px=font_px, target_ratio=target_ratio, fit=fit,
                              tokenizer=count if target_ratio else None)
    stats = compression_stats(text, pages, tokenizer=count)
    decoded = decompress(pages, engine=engine) if verify else [None] * len(pages)
    folder = Path(image_dir)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, (page, counted, decode) in enumerate(zip(pages, stats.per_page, decoded)):
        page_id = stable_id(source_id, page.span, page.config_hash)
        path = folder / f"{hashlib.sha256(page_id.encode()).hexdigest()[:16]}.png"
        path.write_bytes(page.png())
        paper, valid, positions = page_tokens(page)
        meta = {"dsocr_mode": mode, "dsocr_page": k, "dsocr_span": list(page.span), "dsocr_font_px": page.font_px,
                "dsocr_text_tokens": counted.text_tokens, "dsocr_vision_tokens": paper,
                "dsocr_ratio": round(counted.text_tokens / paper, 3), "dsocr_image_path": str(path)}
        if decode is not None:
            f = fidelity(page.text, decode.text)
            meta |= {"dsocr_status": decode.status, "dsocr_precision": f.precision, "dsocr_recall": f.recall,
                     "dsocr_edit_distance": f.edit_distance}
        out.append(CompressedPage(page.text, str(path), meta, page_id))
    return out


def _settings(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in ("image_dir", "mode", "font_px", "target_ratio", "fit", "tokenizer",
                                          "engine", "verify")}


def langchain_compressor():
    """The LangChain transformer class (built on demand, so this module imports no framework)."""
    from langchain_core.documents import BaseDocumentTransformer, Document

    class OpticalCompressor(BaseDocumentTransformer):
        def __init__(self, *, image_dir: str | Path, mode: str = "small", font_px: float | None = None,
                     target_ratio: float | None = None, fit: str = "paginate", tokenizer: Any = None,
                     engine: Any = None, verify: bool = False) -> None:
            if verify and engine is None:
                raise ValueError("verify=True decodes the pages: pass engine=")
            self.image_dir, self.mode, self.font_px, self.target_ratio = image_dir, mode, font_px, target_ratio
            self.fit, self.tokenizer, self.engine, self.verify = fit, tokenizer, engine, verify

        def transform_documents(self, documents, **kwargs: Any) -> list[Document]:
            out = []
            for doc in documents:
                source = doc.id or hashlib.sha256(doc.page_content.encode()).hexdigest()
                for page in compress_text(doc.page_content, source, **_settings(self)):
                    out.append(Document(page.text, metadata={**doc.metadata, **page.metadata}, id=page.id))
            return out

    return OpticalCompressor


def llama_index_transform():
    """The LlamaIndex transform class (built on demand)."""
    from llama_index.core.schema import ImageNode, NodeRelationship, TransformComponent

    class OpticalCompressionTransform(TransformComponent):
        image_dir: str
        mode: str = "small"
        font_px: float | None = None
        target_ratio: float | None = None
        fit: str = "paginate"
        tokenizer: Any = None
        engine: Any = None
        verify: bool = False

        def __call__(self, nodes, **kwargs: Any):
            out = []
            for node in nodes:
                for page in compress_text(node.get_content(), node.node_id, **_settings(self)):
                    keys = list(page.metadata)
                    image = ImageNode(text=page.text, image_path=page.image_path, id_=page.id,
                                      metadata={**node.metadata, **page.metadata},
                                      excluded_embed_metadata_keys=keys, excluded_llm_metadata_keys=keys)
                    image.relationships[NodeRelationship.SOURCE] = node.as_related_node_info()
                    out.append(image)
            return out

    return OpticalCompressionTransform

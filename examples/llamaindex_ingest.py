"""DeepSeek-OCR -> LlamaIndex ingestion (SimpleDirectoryReader -> IngestionPipeline -> index -> retrieval).

    python examples/llamaindex_ingest.py docs/ --query "termination clause"               # real model (hub)
    python examples/llamaindex_ingest.py tests/data/fixtures/pdf --model tests/data/golden \
        --device cpu --mode tiny --max-new-tokens 16                                     # tiny test checkpoint

One Document per page with `page_number`/`page_label`; MarkdownNodeParser keeps the model's `#` headings as
`header_path`. The embedding is MockEmbedding so the example runs offline; swap in any LlamaIndex embedding.
"""
from __future__ import annotations

import argparse

from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import MarkdownNodeParser

from dsocr_loaders.llama_index import DeepSeekOCRReader

SUFFIXES = [".pdf", ".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", help="a folder or a file")
    ap.add_argument("--query", default="What is this document about?")
    ap.add_argument("--model", default="deepseek-ai/DeepSeek-OCR")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--mode", default="gundam")
    ap.add_argument("--pages", default=None, help='e.g. "1-3,7" (1-based), applied to every file')
    ap.add_argument("--max-new-tokens", type=int, default=8192)
    args = ap.parse_args()

    reader = DeepSeekOCRReader(model=args.model, device=args.device, mode=args.mode, pages=args.pages,
                               max_new_tokens=args.max_new_tokens)
    files = SimpleDirectoryReader(input_dir=args.input, required_exts=SUFFIXES,
                                  file_extractor={s: reader for s in SUFFIXES}) \
        if not args.input.lower().endswith(tuple(SUFFIXES)) else \
        SimpleDirectoryReader(input_files=[args.input], file_extractor={s: reader for s in SUFFIXES})
    docs = files.load_data()
    print(f"{len(docs)} pages; statuses: {sorted({d.metadata['ocr_status'] for d in docs})}")
    embed = MockEmbedding(embed_dim=64)
    nodes = IngestionPipeline(transformations=[MarkdownNodeParser(), embed]).run(documents=docs)
    index = VectorStoreIndex(nodes, embed_model=embed)
    for hit in index.as_retriever(similarity_top_k=3).retrieve(args.query):
        m = hit.node.metadata
        print(f"[{m['file_name']} p.{m['page_label']}] {hit.node.get_content()[:120]!r}")


if __name__ == "__main__":
    main()

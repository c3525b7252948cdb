"""DeepSeek-OCR -> LangChain retrieval with page-and-box citations.

    python examples/langchain_rag.py report.pdf --query "What was measured?"            # real model (hub)
    python examples/langchain_rag.py tests/data/fixtures/pdf/multi_page.pdf --model tests/data/golden \
        --device cpu --mode tiny --max-new-tokens 16                                    # tiny test checkpoint

Each grounded block (heading, paragraph, table, caption) becomes one Document (`split="elements"`), so a
retrieved chunk cites its page and its box on the page. The embedding is a deterministic stand-in so the
example runs offline; pass `--embeddings hf` to use sentence-transformers via langchain-huggingface.
"""
from __future__ import annotations

import argparse
import json

from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import InMemoryVectorStore

from dsocr_loaders.langchain import DeepSeekOCRLoader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--query", default="What is this document about?")
    ap.add_argument("--model", default="deepseek-ai/DeepSeek-OCR")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--mode", default="gundam")
    ap.add_argument("--pages", default=None, help='e.g. "1-3,7" (1-based)')
    ap.add_argument("--max-new-tokens", type=int, default=8192)
    ap.add_argument("--embeddings", choices=["fake", "hf"], default="fake")
    args = ap.parse_args()

    loader = DeepSeekOCRLoader(args.file, model=args.model, device=args.device, mode=args.mode, pages=args.pages,
                               max_new_tokens=args.max_new_tokens, split="elements", show_progress=True)
    docs = [d for d in loader.lazy_load() if d.page_content.strip()]
    print(f"{len(docs)} blocks from {args.file}")
    if args.embeddings == "hf":
        from langchain_huggingface import HuggingFaceEmbeddings

        embeddings = HuggingFaceEmbeddings(model_name="sentence-transformers/all-MiniLM-L6-v2")
    else:
        embeddings = DeterministicFakeEmbedding(size=256)
    store = InMemoryVectorStore.from_documents(docs, embeddings)
    for doc in store.similarity_search(args.query, k=3):
        m = doc.metadata
        box = json.loads(m["bbox"]) if "bbox" in m else None
        print(f"[page {m['page_label']}, {m['category']}, box {box} {m['page_unit']}] {doc.page_content[:120]!r}")


if __name__ == "__main__":
    main()

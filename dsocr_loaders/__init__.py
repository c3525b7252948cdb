"""dsocr_loaders: LangChain / LlamaIndex adapters over dsocr_model (work in progress).

Importing this package must never import torch: every heavy import happens where it is used.
"""
__all__: list[str] = []

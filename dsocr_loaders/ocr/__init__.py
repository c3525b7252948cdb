"""The framework-free OCR core: page types, settings, sources, engines, parsing, pipeline, cache, ids."""

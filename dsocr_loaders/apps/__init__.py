"""Apps over the OCR core: the `dsocr` CLI and the layout PDF (later: the server and the Ray job)."""

"""Typed errors for bad input: each names the file and says what to do."""
from __future__ import annotations


class DsocrInputError(ValueError):
    """Base class: a source that cannot be read as asked."""


class UnsupportedFormatError(DsocrInputError):
    """Neither a PDF nor an image format we can read."""


class EmptyInputError(DsocrInputError):
    """Zero bytes, or a PDF with no pages."""


class CorruptFileError(DsocrInputError):
    """Looks like a PDF or an image but cannot be decoded."""


class PasswordError(DsocrInputError):
    """An encrypted PDF without a password, or with the wrong one."""


class PageRangeError(DsocrInputError):
    """A page selection that does not fit the document."""


class TooLargeError(DsocrInputError):
    """An image above Pillow's decompression-bomb limit (raise PIL.Image.MAX_IMAGE_PIXELS to accept it)."""


class EngineError(RuntimeError):
    """Base class: the OCR engine failed."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RemoteEngineError(EngineError):
    """An OCR server refused a page, or kept failing after every retry (the page becomes an error page)."""


class EngineUnavailableError(EngineError):
    """The engine cannot work at all: its model cannot be loaded or fetched, or its server is unreachable or
    refuses the credentials after every retry. Raised at once by the pipeline and the loaders (never turned
    into empty pages); the CLI stops with exit code 3."""

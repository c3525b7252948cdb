"""The installed distribution's version (one source: pyproject.toml), for both packages' `__version__`."""
from __future__ import annotations


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dsocr")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"

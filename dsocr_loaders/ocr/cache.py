"""Result cache: re-OCR of an unchanged page is wasted GPU time.

One sqlite file (WAL, so several processes can read and write it) maps a key to the engine's raw answer
(text, finish reason, token count, the engine's quality signals). The key hashes the rendered page's pixels, the prompt and every
setting that changes the output (OCRSettings.key) and the engine identity (model id or path). Only the
raw answer is stored: on a hit the page is parsed again, so figure crops and table format follow the
current call. Each page is committed when it finishes, so a killed run loses nothing done. A corrupt,
locked or unwritable cache logs a warning and turns itself off; it never fails a page.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from concurrent.futures import CancelledError, Future, InvalidStateError
from pathlib import Path
from typing import Any

from .types import OCRResponse

logger = logging.getLogger(__name__)


def default_cache_path() -> Path:
    root = os.environ.get("DSOCR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dsocr")
    return Path(root) / "results.sqlite"


def page_key(image: Any, settings_key: str, engine_identity: str) -> str:
    """Hash of the page pixels (size and mode included) + settings + model identity."""
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.size}:{settings_key}:{engine_identity}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


class ResultCache:
    def __init__(self, path: str | os.PathLike | None = None, timeout: float = 30.0) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.timeout = timeout
        self._local = threading.local()
        self.enabled = True
        self.hits = self.misses = 0
        try:
            self._db().execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        except (sqlite3.Error, OSError) as e:
            self._disable(e)

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:  # one connection per thread: sqlite3 objects are not shared across threads
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    def _disable(self, error: BaseException) -> None:
        logger.warning("result cache %s disabled: %s", self.path, error)
        self.enabled = False

    def get(self, key: str) -> OCRResponse | None:
        if not self.enabled:
            return None
        try:
            row = self._db().execute("SELECT value FROM results WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            d = json.loads(row[0])
            self.hits += 1
            return OCRResponse(d["text"], d["finish_reason"], d.get("text_tokens"), {"cache_hit": 1.0},
                               d.get("signals") or {})
        except (sqlite3.Error, OSError, ValueError, KeyError, TypeError) as e:
            self._disable(e)
            return None

    def put(self, key: str, response: OCRResponse) -> None:
        if not self.enabled:
            return
        value = json.dumps({"text": response.text, "finish_reason": response.finish_reason,
                            "text_tokens": response.text_tokens, "signals": response.signals})
        try:
            self._db().execute("INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)", (key, value))
        except (sqlite3.Error, OSError) as e:
            self._disable(e)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "timeout": self.timeout, "enabled": self.enabled, "hits": 0, "misses": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()


def stored_future(future: Future, cache: ResultCache, key: str) -> Future:
    """A future that resolves once the engine's answer is in the cache: written when it arrives (a page that
    finished behind a slow one is kept on a kill), and committed before the caller sees the page."""
    stored: Future = Future()

    def store(f: Future) -> None:
        try:
            response = f.result()
            cache.put(key, response)
            stored.set_result(response)
        except CancelledError:
            stored.cancel()
        except InvalidStateError:  # the caller cancelled `stored` meanwhile
            pass
        except BaseException as e:
            if not stored.done():
                stored.set_exception(e)

    future.add_done_callback(store)
    stored.add_done_callback(lambda s: s.cancelled() and future.cancel())
    return stored


def open_cache(cache: Any) -> ResultCache | None:
    if cache is None or cache is False:
        return None
    if isinstance(cache, ResultCache):
        return cache
    return ResultCache(None if cache is True else cache)

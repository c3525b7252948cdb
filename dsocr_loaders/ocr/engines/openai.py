"""OpenAIEngine: DeepSeek-OCR behind an OpenAI-compatible server (vLLM, SGLang, Ollama, hosted APIs).

One chat-completions request per page (or per multi-page pass: one image part per page): the page as a
PNG data URL, then the task prompt without its `<image>` tags (the server's chat template puts images first), temperature 0, and, as the vLLM recipe
serves the model, `skip_special_tokens: false` so the grounding tags survive, plus the n-gram guard's
per-request arguments in `vllm_xargs` (read by vLLM's `NGramPerReqLogitsProcessor`). A server that
refuses those extra fields with a 400 is asked again without them, once, and remembered; one that strips
special tokens anyway answers `label[[x1, y1, x2, y2]]`, which the grounding parser reads as well.

Requests run in a bounded thread pool (stdlib HTTP, no client library), so `submit` returns a Future like
the local engine and `asubmit` an awaitable. Time-outs, dropped connections, malformed bodies, 429 and 5xx
are retried with exponential backoff (honouring Retry-After); other 4xx fail the page at once with the
server's message. The resolution mode is the server's own setting (vLLM: Gundam), not a request field.
"""
from __future__ import annotations

import asyncio
import base64
import http.client
import io
import json
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from dsocr_model.family.registry import spec_for
from dsocr_model.family.spec import ModelSpec

from ..errors import EngineUnavailableError, RemoteEngineError
from ..settings import DEFAULT_MODEL
from ..types import OCRRequest, OCRResponse

logger = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
FINISH = {"stop": "eos", "length": "length"}  # OpenAI finish_reason -> ours; anything else: unknown
API_KEY_ENV = ("DSOCR_API_KEY", "OPENAI_API_KEY")


class _Retry(Exception):
    """A failure worth another attempt (after `wait` seconds, when the server said so). `unreachable`: no
    connection at all, which after the last retry means the engine, not the page, is unusable."""

    def __init__(self, message: str, wait: float | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.wait, self.unreachable = wait, unreachable


def chat_base_url(base_url: str) -> str:
    """`http://host:8000` and `http://host:8000/v1/` both mean `http://host:8000/v1` (the OpenAI client's form)."""
    url = base_url.rstrip("/")
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
    return url if urlsplit(url).path else url + "/v1"


def image_data_url(image: Any, fmt: str = "png") -> str:
    """The page as a data URL. PNG (default) keeps every pixel the local engine would see: an A4 page at 144 dpi
    is ~300 KiB and ~37 ms to encode on one core; JPEG q95 encodes ~5x faster but is lossy and no smaller
    for text pages (~480 KiB)."""
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG", compress_level=1)  # speed over size: the server decodes it anyway
    elif fmt == "jpeg":
        image.save(buf, format="JPEG", quality=95)
    else:
        raise ValueError("image_format must be 'png' or 'jpeg'")
    return f"data:image/{fmt};base64,{base64.b64encode(buf.getvalue()).decode()}"


class OpenAIEngine:
    """Send pages to an OpenAI-compatible chat-completions server.

    Args:
        base_url: the server, e.g. "http://localhost:8000/v1" (vLLM) or "http://localhost:30000/v1" (SGLang).
        model: the served model name (vLLM: the id given to `vllm serve`; Ollama: "deepseek-ocr:3b").
        api_key: sent as a Bearer token; default from $DSOCR_API_KEY, else $OPENAI_API_KEY, else none.
        concurrency: requests in flight at once (the server batches them).
        timeout: seconds to connect and then for each read of the answer (a non-streamed answer arrives
            all at once, so this bounds the wait for one page).
        retries: further attempts after a retryable failure; backoff doubles from `backoff` up to `max_backoff`.
        image_format: "png" (lossless, default) or "jpeg".
        ngram_args: send the n-gram guard and `skip_special_tokens: false` (vLLM recipe fields).
        extra_body: more JSON fields merged into every request.
        spec: the served model's ModelSpec (prompts, guard defaults); default: the family `model` names
            (deepseek-ai/DeepSeek-OCR-2 and baidu/Unlimited-OCR are known by id), else DeepSeek-OCR v1.
    """

    def __init__(self, base_url: str, *, model: str = DEFAULT_MODEL, api_key: str | None = None,
                 concurrency: int = 8, timeout: float = 600.0, retries: int = 4, backoff: float = 1.0,
                 max_backoff: float = 30.0, image_format: str = "png", ngram_args: bool = True,
                 extra_body: dict[str, Any] | None = None, spec: ModelSpec | None = None) -> None:
        if concurrency < 1 or retries < 0 or timeout <= 0:
            raise ValueError("concurrency >= 1, retries >= 0 and timeout > 0 are required")
        if image_format not in ("png", "jpeg"):
            raise ValueError("image_format must be 'png' or 'jpeg'")
        self.base_url, self.model_name = chat_base_url(base_url), model
        self.api_key = api_key if api_key is not None else next(
            (os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None)
        self.concurrency, self.timeout, self.retries = concurrency, timeout, retries
        self.backoff, self.max_backoff, self.image_format = backoff, max_backoff, image_format
        self.ngram_args, self.extra_body = ngram_args, dict(extra_body or {})
        self.identity = f"openai:{self.base_url}#{model}"
        self.spec = spec or spec_for(model)
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._send_max_tokens = True  # turned off once if the server rejects max_tokens beyond its context
        self._told_mode = False

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIEngine({self.base_url!r}, model={self.model_name!r}, concurrency={self.concurrency})"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_lock": None, "_pool": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def max_in_flight(self) -> int:
        """Pages the pipeline keeps submitted: every request slot busy, and as many encoded and waiting."""
        return 2 * self.concurrency

    def submit(self, request: OCRRequest) -> Future:
        request = request.resolve(self.spec)
        several = len(request.images) > 1  # servers read several images of a request without tiles anyway
        if request.mode != self.spec.default_mode and not several and not self._told_mode:
            self._told_mode = True
            logger.warning("mode=%r is not sent: %s uses its own resolution mode (vLLM: %s)", request.mode,
                           self.base_url, self.spec.default_mode)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="dsocr-remote")
        return self._pool.submit(self._run, request)

    async def asubmit(self, request: OCRRequest) -> OCRResponse:
        return await asyncio.wrap_future(self.submit(request))

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "OpenAIEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- one page --------------------------------------------------------------------------------
    def _run(self, request: OCRRequest) -> OCRResponse:
        t0 = time.perf_counter()
        urls = [image_data_url(image, self.image_format) for image in request.images]
        t_encode = time.perf_counter() - t0
        attempt = 0
        while True:
            body = self._body(request, urls)
            try:
                reply = self._post(body)
                break
            except RemoteEngineError as e:
                if not self._adapt(e, body):  # a 400 about a field we can drop: ask again without it
                    raise
            except _Retry as e:
                if attempt >= self.retries:
                    error = EngineUnavailableError if e.unreachable else RemoteEngineError
                    raise error(f"{self.base_url}: {e} (gave up after {attempt + 1} attempts)") from None
                wait = min(self.max_backoff, e.wait if e.wait is not None else
                           self.backoff * 2 ** attempt * random.uniform(0.5, 1.0))
                logger.info("%s: %s; retrying in %.1f s", self.base_url, e, wait)
                time.sleep(wait)
                attempt += 1
        text, finish, tokens = _read_choice(reply)
        return OCRResponse(text, finish, tokens, {"encode_s": t_encode, "request_s": time.perf_counter() - t0,
                                                  "attempts": float(attempt + 1)})

    def _body(self, request: OCRRequest, urls: list[str]) -> dict[str, Any]:
        # the images go first as parts (the server's template places them); the text keeps what follows them
        prompt = request.prompt.replace("<image>\n", "").replace("<image>", "")
        images = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
        body: dict[str, Any] = {
            "model": self.model_name, "temperature": 0.0,
            "messages": [{"role": "user", "content": images + [{"type": "text", "text": prompt}]}],
        }
        if self._send_max_tokens:
            body["max_tokens"] = request.max_new_tokens
        if self.ngram_args:
            body["skip_special_tokens"] = False
            if request.ngram_size:
                body["vllm_xargs"] = {"ngram_size": request.ngram_size, "window_size": request.window_size,
                                      "whitelist_token_ids": list(request.whitelist)}
        return body | self.extra_body

    def _adapt(self, error: RemoteEngineError, body: dict[str, Any]) -> bool:
        """Drop what a strict server refused (HTTP 400): our extra fields, or a max_tokens beyond its context.
        Judged on the refused body, not the current flags, since pages in flight race to the same 400; each
        field goes at most once, so a page is asked at most three times."""
        if error.status != 400:
            return False
        msg = str(error).lower()
        if ("vllm_xargs" in body or "skip_special_tokens" in body) and any(
                k in msg for k in ("vllm_xargs", "skip_special_tokens", "extra", "unrecognized")):
            if self.ngram_args:
                logger.warning("%s refused the n-gram guard fields; sending plain requests: %s", self.base_url, error)
            self.ngram_args = False
            return True
        if "max_tokens" in body and any(k in msg for k in ("max_tokens", "context length", "maximum context")):
            if self._send_max_tokens:
                logger.warning("%s refused max_tokens; letting the server fill its context: %s", self.base_url, error)
            self._send_max_tokens = False
            return True
        return False

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.base_url + "/chat/completions", data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = _error_message(e.read())
            if e.code in RETRY_STATUS:
                raise _Retry(f"HTTP {e.code} {detail}", _retry_after(e.headers.get("Retry-After"))) from None
            if e.code in (401, 403):  # every page would be refused the same way
                raise EngineUnavailableError(f"{self.base_url}: HTTP {e.code} {detail} (check the API key: "
                                             f"$DSOCR_API_KEY or $OPENAI_API_KEY)", status=e.code) from None
            raise RemoteEngineError(f"{self.base_url}: HTTP {e.code} {detail}", status=e.code) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:  # refused, reset, timed out
            reason = getattr(e, "reason", e)
            unreachable = isinstance(reason, (ConnectionRefusedError, socket.gaierror))  # nobody is listening
            raise _Retry(f"{type(reason).__name__}: {reason}", unreachable=unreachable) from None
        try:
            reply = json.loads(raw)
            choices = reply.get("choices") if isinstance(reply, dict) else None
            if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
                raise ValueError("no choices")
        except ValueError as e:
            raise _Retry(f"malformed response ({e}): {raw[:120]!r}") from None
        return reply


def _read_choice(reply: dict[str, Any]) -> tuple[str, str | None, int | None]:
    choice = reply["choices"][0]
    message = choice.get("message") or {}
    text = message.get("content") or ""
    if isinstance(text, list):  # content parts, as some servers answer
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    tokens = (reply.get("usage") or {}).get("completion_tokens")
    return text, FINISH.get(choice.get("finish_reason")), tokens if isinstance(tokens, int) else None


def _error_message(raw: bytes) -> str:
    """The server's own words: OpenAI-style {"error": {"message": ...}}, {"detail": ...}, or the body."""
    try:
        d = json.loads(raw)
        err = d.get("error", d) if isinstance(d, dict) else d
        msg = err.get("message") or err.get("detail") if isinstance(err, dict) else err
        return str(msg if msg is not None else d)[:500]
    except ValueError:
        return raw[:500].decode("utf-8", "replace")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None

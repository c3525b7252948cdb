"""`dsocr serve`: an OpenAI-compatible chat-completions server over our batching engine (`dsocr[serve]`).

It takes what vLLM takes for DeepSeek-OCR (SCALEOUT.md §3.2), so our `OpenAIEngine` and the official `openai`
client work against it unchanged: one user message whose content is image parts (data URLs; http(s) URLs only
when `allow_remote_images`) and a text part (the task prompt without `<image>`), `temperature` 0 (greedy is all
the engine does), `max_tokens`, `skip_special_tokens` (default true, as vLLM: grounding tags stripped) and the
n-gram guard in `vllm_xargs` (`ngram_size`, `window_size`, `whitelist_token_ids`; our extension: `mode`).
Concurrent requests share the engine's continuous batching. A bounded number of requests may be in flight
(429 with Retry-After beyond it); bodies and images have size limits (413); an API key is optional (401);
`/health` and Prometheus-style `/metrics` (pages, tokens, tokens/s, queue depth, latency).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import io
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
except ImportError as e:  # say which extra brings it
    raise ImportError(f"dsocr serve needs FastAPI and uvicorn ({e}): pip install 'dsocr[serve]'") from e

from ..ocr.settings import DEFAULT_MAX_IN_FLIGHT
from ..ocr.types import DEFAULT_MAX_NEW_TOKENS, OCREngine, OCRRequest

logger = logging.getLogger(__name__)
SPECIAL = re.compile(r"<\|/?(?:ref|det|grounding)\|>|<｜end▁of▁sentence｜>")
DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,(?P<data>.+)$", re.DOTALL)


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class ServerSettings:
    model_name: str  # what /v1/models lists and requests must name (any name is accepted when None)
    api_key: str | None = None  # None: no key required
    max_in_flight: int | None = None  # requests admitted at once, more get 429 (None: as many as the engine holds)
    retry_after_s: int = 2
    max_request_bytes: int = 32 << 20
    max_image_pixels: int = 40_000_000
    allow_remote_images: bool = False  # fetch http(s) image URLs (off: a server must not fetch what clients name)


@dataclass
class Metrics:
    started: float = field(default_factory=time.time)
    requests: int = 0
    pages: int = 0
    tokens: int = 0
    rejected: int = 0
    failed: int = 0
    in_flight: int = 0
    latency_sum: float = 0.0
    decode_s: float = 0.0

    def text(self) -> str:
        rate = self.tokens / self.decode_s if self.decode_s else 0.0
        lines = [("dsocr_requests_total", "counter", self.requests), ("dsocr_pages_total", "counter", self.pages),
                 ("dsocr_generated_tokens_total", "counter", self.tokens),
                 ("dsocr_rejected_total", "counter", self.rejected), ("dsocr_failed_total", "counter", self.failed),
                 ("dsocr_queue_depth", "gauge", self.in_flight), ("dsocr_tokens_per_second", "gauge", round(rate, 2)),
                 ("dsocr_request_latency_seconds_sum", "counter", round(self.latency_sum, 4)),
                 ("dsocr_request_latency_seconds_count", "counter", self.pages),
                 ("dsocr_uptime_seconds", "gauge", round(time.time() - self.started, 1))]
        return "".join(f"# TYPE {name} {kind}\n{name} {value}\n" for name, kind, value in lines)


def decode_image(url: str, settings: ServerSettings):
    """A data URL (or, when allowed, an http(s) URL) -> RGB PIL image within the pixel limit."""
    from PIL import Image

    m = DATA_URL.match(url)
    if m:
        try:
            data = base64.b64decode(m.group("data"), validate=True)
        except (binascii.Error, ValueError):
            raise HTTPError(400, "image data URL is not valid base64") from None
    elif url.startswith(("http://", "https://")):
        if not settings.allow_remote_images:
            raise HTTPError(400, "image URLs are not fetched by this server (start it with --allow-remote-images); "
                                 "send the image as a data URL")
        import urllib.request

        with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - only when the operator allows it
            data = r.read(settings.max_request_bytes + 1)
        if len(data) > settings.max_request_bytes:
            raise HTTPError(413, "remote image is larger than the request size limit")
    else:
        raise HTTPError(400, "image_url must be a data:image/...;base64 URL")
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > settings.max_image_pixels:
            raise HTTPError(413, f"image of {image.width}x{image.height} pixels exceeds {settings.max_image_pixels}")
        return image.convert("RGB")
    except HTTPError:
        raise
    except Exception as e:
        raise HTTPError(400, f"image could not be decoded: {e}") from None


def to_request(body: dict[str, Any], spec, settings: ServerSettings) -> tuple[OCRRequest, bool]:
    """A vLLM-style chat-completions body -> (OCRRequest, skip_special_tokens)."""
    if body.get("temperature", 0) not in (0, 0.0, None):
        raise HTTPError(400, "only greedy decoding is served: temperature must be 0")
    if body.get("n", 1) != 1:
        raise HTTPError(400, "n must be 1")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        raise HTTPError(400, "messages must be a non-empty list")
    content = messages[-1].get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise HTTPError(400, "message content must be a string or a list of parts")
    images = [decode_image(str((p.get("image_url") or {}).get("url", "")), settings)
              for p in parts if isinstance(p, dict) and p.get("type") == "image_url"]
    text = "".join(p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text").strip()
    if not images:
        raise HTTPError(400, "the message holds no image_url part: this server reads images")
    xargs = body.get("vllm_xargs") or {}
    if not isinstance(xargs, dict):
        raise HTTPError(400, "vllm_xargs must be an object")
    for key in ("ngram_size", "window_size", "max_tokens"):
        value = xargs.get(key) if key != "max_tokens" else body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise HTTPError(400, f"{key} must be a positive integer")
    # the image tags go back where the model's own prompts put them: "<image>\n..." (v1, OCR-2) or "<image>..."
    joiner = "\n" if spec.prompt().startswith(spec.image_token + "\n") and len(images) == 1 else ""
    prompt = spec.image_token * len(images) + joiner + text
    mode = xargs.get("mode")
    if len(images) > 1:  # several pages in one pass, as vLLM reads several images: no tiles
        mode = mode or spec.multi_page_mode
    whitelist = xargs.get("whitelist_token_ids")
    request = OCRRequest(tuple(images) if len(images) > 1 else images[0], prompt, mode, xargs.get("crop_max"),
                         body.get("max_tokens") or DEFAULT_MAX_NEW_TOKENS, xargs.get("ngram_size", 0),
                         xargs.get("window_size", 100) if xargs.get("ngram_size") else None,
                         tuple(whitelist) if whitelist is not None else ())
    return request, body.get("skip_special_tokens", True) is not False


def completion(model: str, text: str, finish: str | None, tokens: int | None, request_id: str) -> dict[str, Any]:
    return {"id": request_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop" if finish == "eos" else finish or "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": tokens or 0, "total_tokens": tokens or 0}}


def create_app(engine: OCREngine, settings: ServerSettings) -> FastAPI:
    """The app over `engine` (any OCREngine; a LocalEngine streams token by token)."""
    app = FastAPI(title="dsocr", version="1")
    metrics = Metrics()
    spec = getattr(engine, "spec")

    def check(request: Request) -> None:
        if settings.api_key is not None:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not secrets.compare_digest(given, settings.api_key):
                raise HTTPError(401, "invalid or missing API key")

    @app.exception_handler(HTTPError)
    async def http_error(_: Request, e: HTTPError) -> JSONResponse:
        return JSONResponse({"error": {"message": e.message, "type": "invalid_request_error", "code": e.status}},
                            status_code=e.status, headers=e.headers)

    def limit() -> int:
        """Requests admitted at once: fewer than the engine's rows would leave rows idle (on an H200, 64 clients on
        a 256-row engine gave 58 % of its in-process rate, 256 gave 96 %; benchmarks/RESULTS.md)."""
        return settings.max_in_flight or int(getattr(engine, "max_in_flight", DEFAULT_MAX_IN_FLIGHT))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "max_in_flight": limit()}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.text())

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check(request)
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "owned_by": "dsocr"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        check(request)
        size = int(request.headers.get("content-length") or 0)
        if size > settings.max_request_bytes:
            raise HTTPError(413, f"request body of {size} bytes exceeds {settings.max_request_bytes}")
        if metrics.in_flight >= limit():
            metrics.rejected += 1
            raise HTTPError(429, "too many requests in flight; retry later",
                            {"Retry-After": str(settings.retry_after_s)})
        metrics.in_flight += 1
        metrics.requests += 1
        try:
            raw = await request.body()
            if len(raw) > settings.max_request_bytes:
                raise HTTPError(413, f"request body exceeds {settings.max_request_bytes} bytes")
            try:
                body = json.loads(raw)
            except ValueError:
                raise HTTPError(400, "body is not JSON") from None
            ocr, skip = await asyncio.to_thread(to_request, body, spec, settings)
        except BaseException:
            metrics.in_flight -= 1
            raise
        model = body.get("model") or settings.model_name
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        if body.get("stream"):
            return StreamingResponse(_stream(engine, ocr, skip, model, request_id, metrics),
                                     media_type="text/event-stream")
        try:
            return completion(model, *await _answer(engine, ocr, skip, metrics), request_id)
        finally:
            metrics.in_flight -= 1

    return app


async def _answer(engine: OCREngine, ocr: OCRRequest, skip: bool, metrics: Metrics, on_text=None):
    t0 = time.perf_counter()
    try:
        future = engine.submit(ocr, on_text=on_text) if on_text else engine.submit(ocr)
        response = await asyncio.wrap_future(future)
    except Exception as e:
        metrics.failed += 1
        logger.warning("request failed: %s: %s", type(e).__name__, e)
        raise HTTPError(500, f"{type(e).__name__}: {e}") from None
    metrics.pages += len(ocr.images)
    metrics.tokens += response.text_tokens or 0
    metrics.latency_sum += time.perf_counter() - t0
    metrics.decode_s += response.timings.get("total_s", time.perf_counter() - t0)
    text = SPECIAL.sub("", response.text) if skip else response.text
    return text, response.finish_reason, response.text_tokens


async def _stream(engine: OCREngine, ocr: OCRRequest, skip: bool, model: str, request_id: str,
                  metrics: Metrics) -> AsyncIterator[str]:
    """Server-sent events as OpenAI streams them: a role chunk, text deltas as decoded, a finish chunk, [DONE]."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()
    streams = "on_text" in inspect.signature(engine.submit).parameters  # a LocalEngine streams token by token

    def chunk(delta: dict, finish: str | None = None) -> str:
        return "data: " + json.dumps({"id": request_id, "object": "chat.completion.chunk", "created": int(time.time()),
                                      "model": model, "choices": [{"index": 0, "delta": delta,
                                                                   "finish_reason": finish}]}) + "\n\n"
    try:
        yield chunk({"role": "assistant", "content": ""})
        on_text = (lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece)) if streams else None
        task = asyncio.ensure_future(_answer(engine, ocr, skip, metrics, on_text))
        while not task.done() or not pieces.empty():
            getter = asyncio.ensure_future(pieces.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                piece = SPECIAL.sub("", getter.result()) if skip else getter.result()
                if piece:
                    yield chunk({"content": piece})
            else:
                getter.cancel()
        try:
            text, finish, _ = task.result()
        except HTTPError as e:
            yield "data: " + json.dumps({"error": {"message": e.message, "code": e.status}}) + "\n\n"
            return
        if not streams and text:
            yield chunk({"content": text})
        yield chunk({}, "stop" if finish == "eos" else finish or "stop")
        yield "data: [DONE]\n\n"
    finally:
        metrics.in_flight -= 1


def serve(model: str, *, device: str = "auto", host: str = "127.0.0.1", port: int = 8000,
          served_model_name: str | None = None, engine_options: dict[str, Any] | None = None,
          **settings: Any) -> None:
    """Load `model` here and serve it until interrupted (what `dsocr serve` runs)."""
    import uvicorn

    from ..ocr.engines import LocalEngine

    engine = LocalEngine(model, device=device, **(engine_options or {}))
    engine.load()  # fail before listening, not at the first request
    app = create_app(engine, ServerSettings(served_model_name or model, **settings))
    logger.info("serving %s on http://%s:%d/v1", model, host, port)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        engine.close()

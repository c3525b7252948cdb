"""A real chat-completions HTTP server on 127.0.0.1 for the remote-engine tests.

Each POST /v1/chat/completions is answered by `answer(body, n)` (n counts requests from 0), which returns
a reply built with the helpers below: a normal completion, an HTTP error, a raw body (malformed JSON), a
dropped connection, or any of those after a delay. `model_answer` answers with the real tiny model, so a
page read through the server can be compared with the same page read in-process.
"""
from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

Reply = tuple  # ("json", status, payload, headers) | ("raw", status, bytes) | ("drop",) | ("slow", s, Reply)
SPECIAL = re.compile(r"<\|/?(ref|det)\|>")


def ok(text: str, finish: str = "stop", tokens: int | None = None) -> Reply:
    usage = {"prompt_tokens": 10, "completion_tokens": tokens if tokens is not None else len(text.split())}
    return ("json", 200, {"id": "cmpl-test", "object": "chat.completion", "created": 0, "model": "m",
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                       "finish_reason": finish}], "usage": usage}, {})


def error(status: int, message: str, headers: dict | None = None) -> Reply:
    return ("json", status, {"error": {"message": message, "type": "BadRequestError", "code": status}}, headers or {})


def raw(status: int, data: bytes) -> Reply:
    return ("raw", status, data)


def drop() -> Reply:
    return ("drop",)


def slow(seconds: float, then: Reply) -> Reply:
    return ("slow", seconds, then)


def script(*replies: Reply) -> Callable[[dict, int], Reply]:
    """The n-th request gets the n-th reply; the last one repeats."""
    return lambda body, n: replies[min(n, len(replies) - 1)]


def request_image(body: dict) -> Image.Image:
    url = body["messages"][0]["content"][0]["image_url"]["url"]
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def request_prompt(body: dict) -> str:
    return body["messages"][0]["content"][-1]["text"]


def model_answer(engine: Any, mode: str, strip_special_tokens: bool = False) -> Callable[[dict, int], Reply]:
    """Answer as vLLM serving the model would: the prompt gets its `<image>` back, n-gram args come from
    `vllm_xargs`, special tokens are kept only when the request says `skip_special_tokens: false`."""
    from dsocr_loaders.ocr.types import OCRRequest

    def answer(body: dict, n: int) -> Reply:
        xargs = body.get("vllm_xargs") or {}
        req = OCRRequest(request_image(body).convert("RGB"), "<image>\n" + request_prompt(body), mode,
                         max_new_tokens=body.get("max_tokens", 8192), ngram_size=xargs.get("ngram_size"),
                         window_size=xargs.get("window_size", 50),
                         whitelist=tuple(xargs.get("whitelist_token_ids", ())))
        out = engine.submit(req).result()
        text = out.text
        if strip_special_tokens or body.get("skip_special_tokens", True):
            text = SPECIAL.sub("", text)
        return ok(text, "stop" if out.finish_reason == "eos" else "length", out.text_tokens)

    return answer


class ChatServer:
    """`with ChatServer(answer) as server:` ... `server.url` is the base_url; `server.requests` what came in."""

    def __init__(self, answer: Callable[[dict, int], Reply]) -> None:
        self.answer = answer
        self.requests: list[tuple[dict, dict]] = []  # (headers, JSON body)
        self.in_flight = self.peak = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                self._send("json", 404, {"error": {"message": "not found"}}, {})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with outer.lock:
                    n = len(outer.requests)
                    outer.requests.append((dict(self.headers), body))
                    outer.in_flight += 1
                    outer.peak = max(outer.peak, outer.in_flight)
                try:
                    reply = outer.answer(body, n) if self.path.endswith("/chat/completions") else error(404, "no route")
                    while reply[0] == "slow":
                        time.sleep(reply[1])
                        reply = reply[2]
                    if reply[0] == "drop":
                        self.close_connection = True  # hang up without a status line
                        return
                    self._send(*reply)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

            def _send(self, kind: str, status: int, payload: Any, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode() if kind == "json" else payload
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out and left: its broken pipe is expected here

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ChatServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def bodies(self) -> list[dict]:
        return [b for _, b in self.requests]

"""`dsocr serve` as a real HTTP server on 127.0.0.1 (uvicorn in a thread) over the real tiny model: our own
OpenAIEngine and the official `openai` client work against it unchanged, streaming included; limits, keys,
429 and metrics."""
from __future__ import annotations

import base64
import io
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from PIL import Image

from conftest import FIXTURES, GOLDEN
from dsocr_loaders import EngineSettings, OCRPipeline, OCRResponse, OCRSettings
from dsocr_loaders.ocr.engines import LocalEngine
from dsocr_model.family.deepseek_ocr import DEEPSEEK_OCR

pytest.importorskip("fastapi")
from dsocr_loaders.apps.server import ServerSettings, create_app  # noqa: E402

PDF = FIXTURES / "pdf" / "multi_page.pdf"


@contextmanager
def running(app):
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def engine():
    with LocalEngine(str(GOLDEN), device="cpu") as e:
        yield e


@pytest.fixture(scope="module")
def url(engine):
    with running(create_app(engine, ServerSettings("deepseek-ai/DeepSeek-OCR"))) as base:
        yield base


def _data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict, dict]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url + "/chat/completions", data, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def _body(image: Image.Image, **extra) -> dict:
    return {"model": "m", "temperature": 0, "max_tokens": 6, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": _data_url(image)}}, {"type": "text", "text": "Free OCR."}]}], **extra}


def test_our_openai_engine_against_dsocr_serve_equals_local(engine, url):
    opts = dict(ocr=OCRSettings(max_new_tokens=6))
    local = list(OCRPipeline(engine, **opts).run(PDF, pages="1-2"))
    remote = OCRPipeline(EngineSettings(base_url=url, engine="openai", options={"retries": 0}), **opts)
    got = list(remote.run(PDF, pages="1-2"))
    assert [r.raw_text for r in got] == [r.raw_text for r in local] and all(r.raw_text for r in got)
    assert [r.text_tokens for r in got] == [r.text_tokens for r in local] == [6, 6]
    assert [r.status for r in got] == ["truncated", "truncated"]


def test_the_official_openai_client_streaming_and_not(engine, url):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    page = next(iter(OCRPipeline(engine).iter_pages(PDF, pages="1"))).image
    content = [{"type": "image_url", "image_url": {"url": _data_url(page)}}, {"type": "text", "text": "Free OCR."}]
    kwargs = dict(model="deepseek-ai/DeepSeek-OCR", messages=[{"role": "user", "content": content}], temperature=0,
                  max_tokens=8, extra_body={"skip_special_tokens": False,
                                            "vllm_xargs": {"ngram_size": 20, "window_size": 50}})
    reply = client.chat.completions.create(**kwargs)
    text = reply.choices[0].message.content
    assert text and reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 8
    local = engine.submit(dataclass_request(page)).result()
    assert text == local.text
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kwargs)]
    assert "".join(pieces) == text and len([p for p in pieces if p]) > 1  # token by token, not one blob
    assert [m.id for m in client.models.list().data] == ["deepseek-ai/DeepSeek-OCR"]


def dataclass_request(page):
    from dsocr_loaders import OCRRequest

    return OCRRequest(page, "<image>\nFree OCR.", max_new_tokens=8, ngram_size=20, window_size=50, whitelist=())


def test_requests_are_validated(url):
    page = Image.new("RGB", (64, 48), "white")
    assert _post(url, _body(page, temperature=0.7))[0] == 400
    remote = _body(page)
    remote["messages"][0]["content"][0]["image_url"]["url"] = "https://example.com/page.png"
    status, body, _ = _post(url, remote)
    assert status == 400 and "not fetched" in body["error"]["message"]
    assert _post(url, _body(page, vllm_xargs={"ngram_size": "20"}))[0] == 400
    broken = _body(page)
    broken["messages"][0]["content"][0]["image_url"]["url"] = "data:image/png;base64,@@@"
    assert _post(url, broken)[0] == 400
    text_only = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    assert _post(url, text_only)[0] == 400


def test_health_and_metrics(url, engine):
    with urllib.request.urlopen(url.removesuffix("/v1") + "/health") as r:  # no limit given: the engine's own
        assert json.loads(r.read()) == {"status": "ok", "max_in_flight": engine.load().max_in_flight}
    with urllib.request.urlopen(url.removesuffix("/v1") + "/metrics") as r:
        text = r.read().decode()
    values = dict(line.split(" ") for line in text.splitlines() if not line.startswith("#"))
    assert float(values["dsocr_pages_total"]) >= 1 and float(values["dsocr_generated_tokens_total"]) >= 6
    assert values["dsocr_queue_depth"] == "0"


class SlowEngine:
    identity, spec = "slow", DEEPSEEK_OCR

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(4)

    def submit(self, request) -> Future:
        return self.pool.submit(lambda: (time.sleep(1.0), OCRResponse("done", "eos", 1))[1])


def test_full_queue_gets_429_with_retry_after_key_and_size_limits():
    settings = ServerSettings("m", api_key="sk-secret", max_in_flight=1, max_request_bytes=200_000,
                              max_image_pixels=1_000_000)
    page = Image.new("RGB", (64, 48), "white")
    auth = {"Authorization": "Bearer sk-secret"}
    with running(create_app(SlowEngine(), settings)) as base:
        assert _post(base, _body(page))[0] == 401
        assert _post(base, _body(page), {"Authorization": "Bearer wrong"})[0] == 401
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(_post, base, _body(page), auth)
            time.sleep(0.3)
            status, body, headers = _post(base, _body(page), auth)
            assert status == 429 and headers["retry-after"] == "2"
            assert first.result()[0] == 200 and first.result()[1]["choices"][0]["message"]["content"] == "done"
        noise = Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3))  # a PNG of ~270 kB
        assert _post(base, _body(noise), auth)[0] == 413  # the body is over the size limit
        assert _post(base, _body(Image.new("RGB", (2000, 1000), "white")), auth)[0] == 413  # too many pixels


def test_dsocr_serve_command_line():
    from dsocr_loaders.apps.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", str(GOLDEN), "--port", "9001", "--max-in-flight", "8"])
    assert (args.command, args.host, args.port, args.max_in_flight, args.allow_remote_images) == \
        ("serve", "127.0.0.1", 9001, 8, False)


def test_fifty_concurrent_clients_with_a_queue_of_eight_get_answers_or_429_never_a_hang_or_500():
    settings = ServerSettings("m", max_in_flight=8)
    page = Image.new("RGB", (64, 48), "white")
    with running(create_app(SlowEngine(), settings)) as base, ThreadPoolExecutor(50) as pool:
        statuses = [f.result(timeout=60)[0] for f in [pool.submit(_post, base, _body(page)) for _ in range(50)]]
        assert set(statuses) <= {200, 429} and statuses.count(200) >= 8 and 429 in statuses
        with urllib.request.urlopen(base.removesuffix("/v1") + "/metrics") as r:
            assert "dsocr_queue_depth 0" in r.read().decode()


def test_malformed_bodies_get_4xx_with_a_message(url):
    req = urllib.request.Request(url + "/chat/completions", b"{not json", {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400 and "not JSON" in json.loads(e.value.read())["error"]["message"]
    for body in ({"messages": "nope"}, {"messages": [{"role": "user", "content": 5}]}, {"model": "m"}):
        status, reply, _ = _post(url, body)
        assert status == 400 and reply["error"]["message"]


def test_a_client_that_disconnects_mid_stream_frees_its_slot():
    settings = ServerSettings("m", max_in_flight=1)
    page = Image.new("RGB", (64, 48), "white")
    with running(create_app(SlowEngine(), settings)) as base:
        host, port = base.removeprefix("http://").removesuffix("/v1").split(":")
        body = json.dumps(_body(page, stream=True)).encode()
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            assert b"200 OK" in conn.recv(4096)  # the stream started (role chunk), then the client goes away
        deadline = time.time() + 10
        while time.time() < deadline:  # the slot comes back once the server notices
            status, _, _ = _post(base, _body(page))
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200

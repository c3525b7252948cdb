"""The OpenAI-compatible remote engine against a real chat-completions server on 127.0.0.1.

The server (tests/chat_server.py) is a real HTTP server; it answers with the real tiny model where the
output matters, and with scripted failures (slow replies, 429, 500, malformed JSON, dropped connections,
strict 400s) where the client's behaviour does.
"""
from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys

import pytest
from PIL import Image

from chat_server import (ChatServer, drop, error, model_answer, ok, raw, request_image, request_prompt, script,
                         slow)
from conftest import FIXTURES, GOLDEN
from dsocr_loaders import EngineUnavailableError, OCRPipeline, OCRRequest, OpenAIEngine, RemoteEngineError, EngineSettings, OCRSettings
from dsocr_loaders.ocr.engines import LocalEngine

PDF = FIXTURES / "pdf"
FAST = {"retries": 2, "backoff": 0.01, "timeout": 5}
TAGGED = "<|ref|>title<|/ref|><|det|>[[100, 50, 900, 120]]<|/det|>\n# Results\n\n" \
         "<|ref|>text<|/ref|><|det|>[[100, 150, 900, 400]]<|/det|>\nAccuracy rose."
STRIPPED = "title[[100, 50, 900, 120]]\n# Results\n\ntext[[100, 150, 900, 400]]\nAccuracy rose."


def remote(url: str, **options) -> OCRPipeline:
    return OCRPipeline(EngineSettings(base_url=url, engine="openai", options={**FAST, **options}), on_error="page")


def page(size=(400, 300)) -> Image.Image:
    return Image.new("RGB", size, "white")


@pytest.fixture(scope="module")
def tiny_engine():
    engine = LocalEngine(str(GOLDEN), device="cpu")
    yield engine


def test_remote_pages_equal_the_same_pages_read_locally(tiny_engine, monkeypatch):
    """The request is the vLLM recipe's, and a server running the model gives what the local engine gives."""
    monkeypatch.setenv("DSOCR_API_KEY", "sk-test")
    opts = dict(ocr=OCRSettings(mode="tiny", max_new_tokens=10))
    local = list(OCRPipeline(tiny_engine, **opts).run(PDF / "multi_page.pdf", pages="1-3"))
    with ChatServer(model_answer(tiny_engine, "tiny")) as server:
        pipe = OCRPipeline(EngineSettings(base_url=server.url, engine="openai"), **opts)
        got = list(pipe.run(PDF / "multi_page.pdf", pages="1-3"))
    assert [r.raw_text for r in got] == [r.raw_text for r in local]
    assert [r.status for r in got] == [r.status for r in local] == ["truncated"] * 3
    assert [r.text_tokens for r in got] == [r.text_tokens for r in local] == [10] * 3
    headers, body = server.requests[0]
    assert headers["Authorization"] == "Bearer sk-test"
    assert body["temperature"] == 0 and body["max_tokens"] == 10 and body["skip_special_tokens"] is False
    assert body["vllm_xargs"] == {"ngram_size": 20, "window_size": 50, "whitelist_token_ids": [128821, 128822]}
    assert body["model"] == "deepseek-ai/DeepSeek-OCR"
    assert request_prompt(body) == "<|grounding|>Convert the document to markdown."
    assert body["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert got[0].settings["model"] == f"openai:{server.url}#deepseek-ai/DeepSeek-OCR"


def test_png_data_url_carries_the_exact_pixels():
    img = Image.effect_noise((64, 48), 60).convert("RGB")
    with ChatServer(script(ok("x"))) as server:
        OpenAIEngine(server.url).submit(OCRRequest(img, "<image>\nFree OCR.")).result()
    assert request_image(server.bodies[0]).tobytes() == img.tobytes()
    assert request_prompt(server.bodies[0]) == "Free OCR." and "vllm_xargs" in server.bodies[0]


@pytest.mark.parametrize("text", [TAGGED, STRIPPED], ids=["tagged", "special-tokens-stripped"])
def test_grounding_survives_servers_that_strip_special_tokens(text):
    with ChatServer(script(ok(text))) as server:
        (r,) = remote(server.url).run_pages([_page_image(page())])
    assert r.status == "ok" and [e.label for e in r.elements] == ["title", "text"]
    assert r.elements[0].bbox == pytest.approx((100 / 999 * 400, 50 / 999 * 300, 900 / 999 * 400, 120 / 999 * 300), abs=0.01)
    assert r.markdown.startswith("# Results") and "Accuracy rose." in r.markdown and "[[" not in r.markdown


@pytest.mark.parametrize("failures", [
    [error(429, "rate limited", {"Retry-After": "0"})],
    [error(500, "boom"), error(503, "busy")],
    [raw(200, b"{not json")],
    [raw(200, b'{"choices": []}')],
    [drop()],
    [slow(1.5, ok("late"))],
], ids=["429-then-ok", "500-503-then-ok", "malformed-json", "no-choices", "dropped-connection", "slow-reply"])
def test_transient_failures_are_retried(failures):
    with ChatServer(script(*failures, ok("Hello."))) as server:
        (r,) = remote(server.url, timeout=0.5).run_pages([_page_image(page())])
    assert r.status == "ok" and r.markdown == "Hello."
    assert r.timings["attempts"] == len(failures) + 1 == len(server.requests)


@pytest.mark.parametrize("reply, words", [
    (error(500, "CUDA out of memory"), ["HTTP 500", "CUDA out of memory", "gave up after 3 attempts"]),
    (raw(200, b"<html>proxy error</html>"), ["malformed response", "gave up after 3 attempts"]),
    (slow(3, ok("too late")), ["timed out", "gave up after 3 attempts"]),
    (drop(), ["RemoteDisconnected", "gave up"]),
])
def test_persistent_failures_become_error_pages(reply, words):
    with ChatServer(script(reply)) as server:
        (r,) = remote(server.url, timeout=0.3).run_pages([_page_image(page())])
    assert r.status == "error" and all(w in r.error for w in words), r.error
    assert len(server.requests) == 3  # 1 + retries=2


def test_client_errors_are_not_retried_and_say_what_to_do():
    with ChatServer(script(error(401, "invalid api key"))) as server:  # every page would fail: an engine error
        with pytest.raises(EngineUnavailableError) as e:
            list(remote(server.url).run_pages([_page_image(page(), i) for i in range(3)]))
    assert "HTTP 401 invalid api key" in str(e.value) and "DSOCR_API_KEY" in str(e.value) and e.value.status == 401
    assert 1 <= len(server.requests) <= 3  # not retried: at most one request per page (retries=2 would allow 9)
    with pytest.raises(RemoteEngineError) as e:
        with ChatServer(script(error(404, "The model `x` does not exist."))) as server:
            OpenAIEngine(server.url, model="x").submit(OCRRequest(page(), "<image>\nFree OCR.")).result()
    assert e.value.status == 404 and "does not exist" in str(e.value)


def test_one_failing_page_does_not_sink_the_others():
    def answer(body, n):  # the 300 px wide page always fails; the others answer with their width
        w = request_image(body).width
        return error(500, "bad page") if w == 300 else ok(f"page of width {w}")

    with ChatServer(answer) as server:
        results = list(remote(server.url).run_pages([_page_image(page((w, 200)), i)
                                                     for i, w in enumerate([200, 300, 400, 500])]))
    assert [r.status for r in results] == ["ok", "error", "ok", "ok"]
    assert [r.markdown for r in results] == ["page of width 200", "", "page of width 400", "page of width 500"]


def test_concurrency_is_bounded_and_used():
    with ChatServer(lambda body, n: slow(0.2, ok(f"reply {n}"))) as server:
        results = list(remote(server.url, concurrency=3).run_pages([_page_image(page(), i) for i in range(12)]))
    assert all(r.status == "ok" for r in results) and [r.page for r in results] == list(range(12))
    assert server.peak == 3


def test_strict_servers_get_plain_requests_after_one_400():
    def strict(body, n):
        if "vllm_xargs" in body or "skip_special_tokens" in body:
            return error(400, "Extra inputs are not permitted: vllm_xargs")
        if body.get("max_tokens", 0) > 4096:
            return error(400, "This model's maximum context length is 8192 tokens. However, you requested 9000")
        return ok(STRIPPED)

    with ChatServer(strict) as server:
        results = list(remote(server.url).run_pages([_page_image(page(), i) for i in range(3)]))
    assert all(r.status == "ok" and len(r.elements) == 2 for r in results)
    plain = server.bodies[-1]
    assert "vllm_xargs" not in plain and "skip_special_tokens" not in plain and "max_tokens" not in plain
    assert len(server.requests) <= 3 + 2 * 3  # at most one refusal of each kind per page in flight


def test_async_submission_and_finish_reasons():
    async def main(engine):
        return await asyncio.gather(*(engine.asubmit(OCRRequest(page(), "<image>\nFree OCR.")) for _ in range(4)))

    with ChatServer(script(ok("a", "stop", 2), ok("b", "length", 9), ok("c", "content_filter"))) as server:
        out = asyncio.run(main(OpenAIEngine(server.url)))
    assert sorted((o.text, o.finish_reason) for o in out) == [("a", "eos"), ("b", "length"), ("c", None), ("c", None)]


def test_engine_settings_are_checked_and_the_key_stays_secret(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    engine = OpenAIEngine("http://localhost:8000")
    assert engine.base_url == "http://localhost:8000/v1" and engine.api_key == "sk-secret"
    assert "sk-secret" not in repr(engine) and "sk-secret" not in engine.identity
    assert pickle.loads(pickle.dumps(engine)).api_key == "sk-secret"
    for bad in ("localhost:8000", "ftp://x"):
        with pytest.raises(ValueError, match="base_url"):
            OpenAIEngine(bad)
    monkeypatch.delenv("DSOCR_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="base_url"):
        OCRPipeline(EngineSettings(engine="openai"))
    with pytest.raises(ValueError, match="unknown engine"):
        OCRPipeline(EngineSettings(engine="vllm"))
    with pytest.raises(TypeError, match="submit"):
        OCRPipeline(object())


def test_loaders_and_cli_select_the_remote_engine_without_loading_torch(tmp_path):
    """LangChain, LlamaIndex and `dsocr convert --engine openai` all reach the server; torch stays unloaded."""
    code = f"""
import asyncio, json, sys
from dsocr_loaders.apps.cli import main
from dsocr_loaders.langchain import DeepSeekOCRLoader
from dsocr_loaders.llama_index import DeepSeekOCRReader
pdf = {str(PDF / "multi_page.pdf")!r}
docs = DeepSeekOCRLoader(pdf, pages="1-2", engine="openai", base_url=sys.argv[1]).load()
assert [d.metadata["ocr_status"] for d in docs] == ["ok", "ok"] and docs[0].page_content.startswith("# Results")
adocs = asyncio.run(DeepSeekOCRLoader(pdf, pages="2", engine="openai", base_url=sys.argv[1]).aload())
assert len(adocs) == 1 and len(json.loads(adocs[0].metadata["ocr_elements"])) == 2
nodes = DeepSeekOCRReader(engine="openai", base_url=sys.argv[1], pages="1").load_data(pdf)
assert len(nodes) == 1 and "Accuracy rose." in nodes[0].text
rc = main(["convert", pdf, "-o", {str(tmp_path / "out")!r}, "--engine", "openai", "--base-url", sys.argv[1],
           "--pages", "3", "--no-cache", "-q"])
assert rc == 0, rc
assert "torch" not in sys.modules, "torch was imported"
"""
    with ChatServer(script(ok(STRIPPED))) as server:
        out = subprocess.run([sys.executable, "-c", code, server.url], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert len(server.requests) == 5 and "1 pages" in out.stdout
    assert (tmp_path / "out" / "multi_page.md").read_text().startswith("# Results")


def _page_image(img, n: int = 0):
    from dsocr_loaders.ocr.sources import PageImage

    return PageImage(image=img, page=n, page_label=str(n + 1), total_pages=n + 1, width=img.width,
                     height=img.height, unit="px", source="mem.png")


def test_an_ollama_or_llama_cpp_style_endpoint():
    """Laptop users serve DeepSeek-OCR with Ollama (`deepseek-ocr:3b`, /v1 on port 11434) or llama.cpp's
    llama-server: image parts as base64 data URLs only, unknown request fields ignored, special tokens
    stripped from the answer, their own response fields. The page still parses into grounded blocks."""
    def ollama(body, n):
        part = body["messages"][0]["content"][0]
        if part["type"] != "image_url" or not part["image_url"]["url"].startswith("data:image/"):
            return error(400, "only base64 image data URLs are supported")
        kind, status, payload, headers = ok(STRIPPED, tokens=42)
        return kind, status, {**payload, "model": body["model"], "system_fingerprint": "fp_ollama"}, headers

    with ChatServer(ollama) as server:
        pipe = OCRPipeline(EngineSettings("deepseek-ocr:3b", engine="openai", base_url=server.url))
        (r,) = pipe.run_pages([_page_image(page())])
    assert server.bodies[0]["model"] == "deepseek-ocr:3b" and "vllm_xargs" in server.bodies[0]  # sent, ignored
    assert r.status == "ok" and [e.label for e in r.elements] == ["title", "text"] and r.text_tokens == 42


def test_unlimited_ocr_served_by_vllm_multi_page_and_its_box_dialect():
    """Served Unlimited-OCR: the family is known by its id (prompt, guard), a multi-page pass is one request
    with one image part per page, and the answer (special tokens kept or not) splits and parses per page."""
    def answer(body, n):
        images = [p for p in body["messages"][0]["content"] if p["type"] == "image_url"]
        pages = "".join(f"<PAGE><|det|>title [100, 50, 900, 120]<|/det|>Page {k + 1}\n" for k in range(len(images)))
        return ok(pages if len(images) > 1 else pages.removeprefix("<PAGE>"))

    with ChatServer(answer) as server:
        settings = EngineSettings(model="baidu/Unlimited-OCR", base_url=server.url, engine="openai", options=FAST)
        pipe = OCRPipeline(settings, ocr=OCRSettings(pages_per_pass=2))
        results = list(pipe.run(PDF / "multi_page.pdf", pages="1-3"))
    assert [r.markdown for r in results] == ["Page 1", "Page 2", "Page 1"]  # two in a pass, the third alone
    assert all(r.elements[0].bbox_norm == (100, 50, 900, 120) and r.unit == "pt" for r in results)
    second, first = sorted(server.bodies, key=lambda b: len(b["messages"][0]["content"]))
    assert [p["type"] for p in first["messages"][0]["content"]] == ["image_url", "image_url", "text"]
    assert request_prompt(first) == "Multi page parsing." and request_prompt(second) == "document parsing."
    assert first["vllm_xargs"] == {"ngram_size": 35, "window_size": 1024, "whitelist_token_ids": []}
    assert second["vllm_xargs"] == {"ngram_size": 35, "window_size": 128, "whitelist_token_ids": []}

"""CUDA checks (skipped without a GPU): golden parity in fp32 and grouped-GEMM MoE in bf16."""
from __future__ import annotations

import pytest
import torch
from conftest import GOLDEN, load_golden_case
from dsocr_loaders import EngineSettings, OCRSettings
from dsocr_model import DeepseekOCR, generate
from dsocr_model.modeling.moe import moe_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def cuda_model():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return DeepseekOCR.from_pretrained(GOLDEN, device="cuda", dtype=torch.float32)


@pytest.mark.parametrize("name", ["tiny_doc300x200", "base_doc300x200", "gundam_a4", "text_only"])
def test_golden_tokens_on_cuda_fp32(cuda_model, golden_cases, golden_pixels, name):
    _, ref, views, prompt = load_golden_case(name, golden_cases, golden_pixels)
    ids = cuda_model.build_input_ids(prompt, views)
    gen = generate(cuda_model, ids, views, 24, keep_logits=True)
    assert gen.token_ids == ref["generated_ids"].tolist()
    assert (torch.stack(gen.step_logits) - ref["step_logits"]).abs().max() < 5e-4


@pytest.mark.parametrize("tokens", [1, 64, 1000])
def test_bf16_grouped_moe_matches_naive_on_cuda(tokens):
    from conftest import tiny_config_dict

    model = DeepseekOCR.from_config(tiny_config_dict(), device="cuda", dtype=torch.bfloat16, seed=0)
    moe = model.model.layers[1].mlp
    x = torch.randn(tokens, 128, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        torch.testing.assert_close(moe(x).float(), moe_reference(moe, x).float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("max_batch", [1, 3, 8])
def test_engine_with_cuda_graphs_equals_eager_engine_bf16(max_batch):
    """Graph replay runs the eager step's kernels on the same shapes: the tokens are identical."""
    from dsocr_model.runtime.engine import Engine
    from test_engine import _requests

    model = DeepseekOCR.from_pretrained(GOLDEN, device="cuda", dtype=torch.bfloat16)
    reqs = _requests(model)
    for r in reqs[:4]:
        r.ngram_size, r.window_size, r.whitelist = 3, 16, {717}
    graphed = Engine(model, max_batch=max_batch, max_seq_len=1024)
    outs = graphed.generate(reqs)
    assert graphed.graphs is not None and graphed.graphs.graphs  # decode steps replayed captured graphs
    eager = Engine(model, max_batch=max_batch, max_seq_len=1024, cuda_graphs=False).generate(reqs)
    assert [o.token_ids for o in outs] == [o.token_ids for o in eager]


@pytest.mark.parametrize("broken", ["warmup", "replay"])
def test_graph_warmup_or_replay_failure_falls_back_to_eager(broken, monkeypatch, caplog):
    """A failure while warming up or replaying a graph (not only while capturing) costs no page."""
    from dsocr_model.runtime import cuda_graphs
    from dsocr_model.runtime.engine import Engine
    from test_engine import _requests

    model = DeepseekOCR.from_pretrained(GOLDEN, device="cuda", dtype=torch.bfloat16)
    reqs = _requests(model)
    eager = Engine(model, max_batch=4, max_seq_len=1024, cuda_graphs=False).generate(reqs)

    def boom(*a, **k):
        raise RuntimeError(f"injected {broken} failure")

    if broken == "warmup":
        monkeypatch.setattr(cuda_graphs.DecodeGraphs, "_forward", boom)
    else:
        monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", boom)
    engine = Engine(model, max_batch=4, max_seq_len=1024)
    outs = engine.generate(reqs)
    assert engine.graphs is None and f"injected {broken} failure" in caplog.text
    assert [o.token_ids for o in outs] == [o.token_ids for o in eager]


def test_engine_on_cuda_fp32_equals_simple_path(cuda_model):
    from dsocr_model.runtime.engine import Engine
    from test_engine import _requests

    reqs = _requests(cuda_model)
    outs = Engine(cuda_model, max_batch=8, max_seq_len=1024).generate(reqs)
    for r, o in zip(reqs, outs):
        assert o.token_ids == generate(cuda_model, r.input_ids, r.images, r.max_new_tokens).token_ids


def test_memory_budget_on_cuda(cuda_model):
    from dsocr_model.runtime.engine import Engine
    from dsocr_model.runtime.memory import MAX_BATCH_CAP

    free, _ = torch.cuda.mem_get_info()
    engine = Engine(cuda_model, max_seq_len=4096, memory_fraction=0.05)
    per_slot = engine.cache.k[:, 0].numel() * 2 * 4
    assert 1 <= engine.max_batch <= MAX_BATCH_CAP and engine.max_batch * per_slot <= free * 0.05


def test_pipeline_on_cuda_end_to_end():
    from conftest import FIXTURES
    from dsocr_loaders import OCRPipeline

    pipe = OCRPipeline(EngineSettings(str(GOLDEN), device="cuda"), ocr=OCRSettings(mode="gundam", max_new_tokens=20))
    results = list(pipe.run(FIXTURES / "pdf" / "multi_page.pdf"))
    assert [r.page for r in results] == [0, 1, 2, 3, 4]
    assert all(r.status in ("ok", "truncated", "empty") and r.vision_tokens == 903 for r in results)


@pytest.mark.parametrize("family", ["deepseek-ocr-2", "unlimited-ocr"])
def test_family_engine_with_cuda_graphs_equals_eager_and_fp32_equals_generate(family, tmp_path):
    """On the GPU: the R-SWA ring (Unlimited-OCR, window 4) and OCR-2's encoder under captured graphs give the
    eager engine's tokens in bf16, and in fp32 the engine gives the one-sequence path's."""
    from dsocr_model.modeling.preprocess import preprocess_image
    from dsocr_model.runtime.batch import PageRequest
    from dsocr_model.runtime.engine import Engine
    from test_family_parity import _document
    from tiny_family import write_checkpoint

    folder = write_checkpoint(family, tmp_path / family)
    for dtype in (torch.bfloat16, torch.float32):
        model = DeepseekOCR.from_pretrained(folder, device="cuda", dtype=dtype)
        reqs, singles = [], []
        for i, (size, mode, n) in enumerate([((900, 700), None, 40), ((500, 400), "base", 25), ((1100, 1500), None, 33)]):
            views = [preprocess_image(_document(*size, seed=i), mode, None, model.spec)]
            ids = model.build_input_ids(model.spec.prompt(), views)
            reqs.append(PageRequest(ids, views, n, 3 if i == 1 else None, 9 if i == 1 else None, eos_token_id=-1))
            singles.append((ids, views, n, 3 if i == 1 else None, 9 if i == 1 else None))
        if dtype == torch.bfloat16:
            graphed = Engine(model, max_batch=2, max_seq_len=4096)
            outs = graphed.generate(reqs)
            assert graphed.graphs is not None and graphed.graphs.graphs
            eager = Engine(model, max_batch=2, max_seq_len=4096, cuda_graphs=False).generate(reqs)
            assert [o.token_ids for o in outs] == [o.token_ids for o in eager]
        else:
            outs = Engine(model, max_batch=2, max_seq_len=4096).generate(reqs)
            for o, (ids, views, n, ng, w) in zip(outs, singles):
                assert o.token_ids == generate(model, ids, views, n, ngram_size=ng, window_size=w, eos_id=-1).token_ids


def _staggered(engine, reqs, gap_s: float = 0.02):
    """Submit one request every `gap_s`, so pages are admitted (on their own stream) while others decode."""
    import time

    futures = []
    for r in reqs:
        futures.append(engine.submit(r))
        time.sleep(gap_s)
    return [f.result() for f in futures]


def test_overlapped_admission_fp32_equals_simple_path(cuda_model):
    """Admission in its own thread and stream, rows refilled while others decode: the simple path's tokens."""
    from dsocr_model.runtime.engine import Engine
    from test_engine import _requests

    reqs = _requests(cuda_model) * 2
    engine = Engine(cuda_model, max_batch=3, max_seq_len=1024, max_prefill_pages=2, overlap_admission=True)
    assert engine.admission.overlap
    outs = _staggered(engine, reqs)
    for r, o in zip(reqs, outs):
        assert o.token_ids == generate(cuda_model, r.input_ids, r.images, r.max_new_tokens).token_ids


def test_graphs_are_captured_while_admission_runs_beside_them():
    """Capturing a decode graph while the admission thread launches work on its stream must not fail (the
    capture is thread-local): the engine keeps its graphs and every page gets its tokens."""
    from dsocr_model.runtime.engine import Engine
    from test_engine import _requests

    model = DeepseekOCR.from_pretrained(GOLDEN, device="cuda", dtype=torch.bfloat16)
    reqs = _requests(model) * 3
    for r in reqs:
        r.eos_token_id = -1  # every page runs to its limit
    engine = Engine(model, max_batch=4, max_seq_len=1024, max_prefill_pages=1, overlap_admission=True)
    outs = _staggered(engine, reqs, gap_s=0.005)
    assert engine.graphs is not None and len(engine.graphs.graphs) >= 2
    assert [len(o.token_ids) for o in outs] == [r.max_new_tokens for r in reqs]


@pytest.mark.parametrize("mode", ["tiny", "gundam"])
def test_uint8_views_upload_pinned_and_encode_like_fp32_views(cuda_model, mode):
    """uint8 views go up pinned and non-blocking and are normalised on the GPU: the same features as fp32 views."""
    from PIL import Image

    from dsocr_model import preprocess_image

    img = Image.open(GOLDEN / "images" / "a4_1190x1684.png").convert("RGB")
    (a,) = cuda_model.encode_images([preprocess_image(img, mode)])
    (b,) = cuda_model.encode_images([preprocess_image(img, mode, normalize=False)])
    # normalised on the GPU rather than on the CPU: the same to fp32 rounding (bitwise on the CPU: test_admission)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_engine_with_ragged_attention_fp32_equals_simple_path(cuda_model):
    from dsocr_model.runtime.engine import Engine
    from test_engine import _requests

    reqs = _requests(cuda_model)
    engine = Engine(cuda_model, max_batch=4, max_seq_len=1024, ragged_attention=True)
    assert engine.cache.ragged
    for r, o in zip(reqs, engine.generate(reqs)):
        assert o.token_ids == generate(cuda_model, r.input_ids, r.images, r.max_new_tokens).token_ids


def test_engine_with_fp8_kv_reads_the_cache_as_its_dequantised_reference_does(cuda_model):
    """The kernel over an fp8 cache equals SDPA over the same cache dequantized (fp32 compute: same tokens).
    How far fp8 KV moves greedy tokens from bf16 KV is the fidelity gate, measured on full-size pages."""
    from dsocr_model.runtime.engine import Engine
    from test_engine import _requests

    reqs = _requests(cuda_model)
    kernel = Engine(cuda_model, max_batch=4, max_seq_len=1024, kv_dtype="fp8")
    dense = Engine(cuda_model, max_batch=4, max_seq_len=1024, kv_dtype="fp8")
    dense.cache.ragged = False  # decode through cache.read(): dequantized K/V, SDPA with a mask
    assert kernel.cache.k.dtype == torch.float8_e4m3fn and kernel.cache.ragged
    assert [o.token_ids for o in kernel.generate(reqs)] == [o.token_ids for o in dense.generate(reqs)]


def test_engine_with_fp8_kv_and_cuda_graphs_in_bf16():
    from dsocr_model.runtime.engine import Engine
    from test_engine import _requests

    model = DeepseekOCR.from_pretrained(GOLDEN, device="cuda", dtype=torch.bfloat16)
    reqs = _requests(model)
    graphed = Engine(model, max_batch=4, max_seq_len=1024, kv_dtype="fp8")
    outs = graphed.generate(reqs)
    assert graphed.graphs is not None and graphed.graphs.graphs
    eager = Engine(model, max_batch=4, max_seq_len=1024, kv_dtype="fp8", cuda_graphs=False).generate(reqs)
    assert [o.token_ids for o in outs] == [o.token_ids for o in eager]

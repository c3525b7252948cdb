"""CUDA checks (skipped without a GPU): golden parity in fp32 and grouped-GEMM MoE in bf16."""
from __future__ import annotations

import pytest
import torch
from conftest import GOLDEN, load_golden_case
from dsocr_model import DeepseekOCR
from dsocr_model.moe import moe_reference

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
    gen = cuda_model.generate_greedy(ids, views, 24, keep_logits=True)
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

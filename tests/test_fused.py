"""The fused decoder kernels (fused.py) against the eager code they replace.

The kernels are Triton: on CUDA they run compiled, in bf16, where their roundings must match eager's
(test_cuda.py); here, where Triton is installed, through its interpreter on the CPU (Triton does not come with
the CPU build of torch, so CI skips these), in fp32: the interpreter truncates fp32 -> bf16 where the GPU rounds
to nearest, so these check the kernels' indexing and arithmetic, not bf16 roundings.
"""
from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from dsocr_model.modeling import fused
from dsocr_model.modeling.config import DecoderConfig
from dsocr_model.modeling.decoder import RMSNorm, rotate_heads, rope_cos_sin
from dsocr_model.modeling.moe import MoE

pytestmark = pytest.mark.skipif(torch.cuda.is_available() or importlib.util.find_spec("triton") is None,
                                reason="needs Triton on a CPU machine (on CUDA: test_cuda.py)")


@pytest.fixture
def kernels(monkeypatch):
    """The kernels through Triton's interpreter, on CPU tensors; `eager()` switches them off again."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # read when the kernel module is first imported
    fused._kernels.cache_clear()
    sys.modules.pop("dsocr_model.modeling.fused_kernels", None)
    monkeypatch.setattr(fused, "enabled", lambda x: True)
    yield lambda: monkeypatch.setattr(fused, "enabled", lambda x: False)
    fused._kernels.cache_clear()
    sys.modules.pop("dsocr_model.modeling.fused_kernels", None)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal but for fp32 sums taken in another order."""
    return torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_add_rms_norm_equals_the_eager_add_then_norm(kernels):
    torch.manual_seed(0)
    norm = RMSNorm(1000, 1e-6).to(torch.float32)  # not a power of two: the kernel's masked tail
    with torch.no_grad():
        norm.weight.normal_()
    x, r = torch.randn(3, 5, 1000, dtype=torch.float32), torch.randn(3, 5, 1000, dtype=torch.float32)
    y_fused, sum_fused = norm.add_forward(x, r)
    plain = norm(x)
    kernels()  # eager from here
    y_eager, sum_eager = norm.add_forward(x, r)
    assert torch.equal(sum_fused, sum_eager)
    assert close(y_fused, y_eager) and close(plain, norm(x))
    assert not close(y_fused, norm(x))  # the residual was added


def test_rope_kernel_equals_apply_rope(kernels):
    torch.manual_seed(1)
    x = torch.randn(2, 7, 3, 64, dtype=torch.float32)
    positions = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [9, 10, 11, 12, 13, 14, 15]])  # rows at other positions
    cos, sin = rope_cos_sin(positions, 64, 1e4, torch.float32)
    fused_out = rotate_heads(x, cos, sin)
    kernels()
    eager = rotate_heads(x, cos, sin)
    assert fused_out.shape == eager.shape == (2, 3, 7, 64)
    assert torch.equal(fused_out, eager)  # the same products and sum, each rounded as eager does


@pytest.mark.parametrize("tokens,shared", [(1, 2), (2, 1), (2, 0)])
@pytest.mark.parametrize("settings", [{}, {"ROUTE": (64, 256, 8), "EXPERT_UP": (8, 256, 4), "EXPERT_DOWN": (64, 64, 2)}])
def test_few_token_moe_equals_the_gathered_eager_path(tokens, shared, settings, kernels, monkeypatch):
    for name, value in settings.items():  # launch settings a sweep may pick: blocks larger than the sizes
        monkeypatch.setattr(fused, name, value)
    torch.manual_seed(2)
    cfg = DecoderConfig(hidden_size=96, moe_intermediate_size=40, n_routed_experts=12, num_experts_per_tok=3,
                        n_shared_experts=shared, routed_scaling_factor=1.5)  # odd sizes: every kernel's masks
    moe = MoE(cfg).to(torch.float32)
    with torch.no_grad():
        moe.gate.weight.normal_()
    x = torch.randn(tokens, 1, 96, dtype=torch.float32)
    weight, idx = fused.route(x.view(tokens, 96), moe.gate.weight, 3, 1.5)
    y_fused = moe(x)
    kernels()
    from dsocr_model.modeling.moe import route

    weight_eager, idx_eager = route(x.view(tokens, 96), moe.gate.weight, 3, 1.5)
    assert torch.equal(idx, idx_eager)
    torch.testing.assert_close(weight, weight_eager, rtol=1e-5, atol=1e-6)
    assert close(y_fused, moe(x))

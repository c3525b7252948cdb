"""The ragged decode-attention kernel (bf16 or fp8 KV) against SDPA over the same slots; fp8 quantisation.

The kernel is Triton: on CUDA it runs compiled (test_cuda.py); here, where Triton is installed, through its
interpreter on the CPU (Triton does not come with the CPU build of torch, so CI skips these).
"""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from dsocr_model.modeling.decode_attention import dequantize, quantize

# the kernel through Triton's interpreter on CPU tensors, where Triton is installed (not with torch's CPU build)
INTERPRETED = not torch.cuda.is_available() and importlib.util.find_spec("triton") is not None
if INTERPRETED:  # before Triton is first imported: it decides at decoration time
    os.environ.setdefault("TRITON_INTERPRET", "1")


def test_fp8_quantisation_keeps_each_vector_within_e4m3_precision():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 50, 64) * torch.logspace(-3, 2, 50)[:, None]  # vectors of very different sizes
    q, scale = quantize(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == x.shape[:-1]
    assert (q.float().abs().amax(-1) == 448).all()  # each vector spans e4m3's whole range
    back = dequantize(q, scale, torch.float32)
    # e4m3 keeps 3 mantissa bits: each entry within 1/16 of its magnitude, or of the vector's smallest normal step
    bound = x.abs() / 16 + x.abs().amax(-1, keepdim=True) * 2.0 ** -9
    assert ((back - x).abs() <= bound).all()
    assert not torch.equal(back, x)


def reference(q, k, v, lengths):
    """SDPA per row over its own slots."""
    out = torch.empty_like(q)
    for b, n in enumerate(lengths.tolist()):
        out[b] = F.scaled_dot_product_attention(q[b:b + 1].float(), k[b:b + 1, :, :n].float(),
                                                v[b:b + 1, :, :n].float())[0].to(q.dtype)
    return out


@pytest.mark.parametrize("rows,lengths", [(3, [5, 130, 77]), (1, [300])])  # batch 1: the keys split in chunks
@pytest.mark.parametrize("fp8", [False, True])
def test_ragged_kernel_equals_sdpa_over_each_rows_own_slots(rows, lengths, fp8, monkeypatch):
    if not INTERPRETED:
        pytest.skip("needs Triton on a CPU machine (on CUDA the compiled kernel is tested: test_cuda.py)")
    from dsocr_model.modeling import decode_attention as da

    da._kernels.cache_clear()
    sys.modules.pop("dsocr_model.modeling.decode_kernels", None)  # decorated under the interpreter
    try:
        torch.manual_seed(1)
        H, S, D = 2, 320, 32
        q = torch.randn(rows, H, 1, D)
        k, v = torch.randn(rows, H, S, D), torch.randn(rows, H, S, D)
        k[:, :, 200:] = 1e4  # garbage past every row's length must not leak in
        lens = torch.tensor(lengths, dtype=torch.int32)
        if fp8:
            (kq, ks), (vq, vs) = quantize(k), quantize(v)
            got = da.decode_attention(q, kq, vq, lens, S, ks, vs, block=16)
            k, v = dequantize(kq, ks, torch.float32), dequantize(vq, vs, torch.float32)
        else:
            got = da.decode_attention(q, k, v, lens, S, block=16)
        torch.testing.assert_close(got, reference(q, k, v, lens), atol=1e-4, rtol=1e-4)
    finally:
        da._kernels.cache_clear()
        sys.modules.pop("dsocr_model.modeling.decode_kernels", None)

"""CUDA checks of our kernels alone (skipped without a GPU): SAM's attention (folded flash and our fused Triton
kernel) against the reference block, the ragged decode kernel against SDPA, fused.py against eager's roundings,
the fused token choice (runtime/choose.py) against the eager one."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("grid", [(14, 14), (40, 40), (64, 64)])  # a window, a 640² tile's and a 1024² view's grid
def test_folded_sam_attention_runs_on_flash_in_bf16_like_the_materialised_bias(grid):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from dsocr_model.modeling.sam import Attention

    torch.manual_seed(0)
    H, W = grid
    attn = Attention(dim=768, heads=12, rel_len=max(H, W)).cuda().to(torch.bfloat16)
    with torch.no_grad():
        attn.rel_pos_h.normal_(std=0.5)
        attn.rel_pos_w.normal_(std=0.5)
    x = torch.randn(2, H, W, 768, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        materialised = attn(x, fold=False).float()
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # the folded form needs no mask: flash runs it
            folded = attn(x, fold=True).float()
        exact = attn.float()(x.float(), fold=False)  # both bf16 forms against fp32
    err_folded, err_materialised = (folded - exact).abs().mean(), (materialised - exact).abs().mean()
    assert err_folded < 1.5 * err_materialised  # as close to fp32 as the reference's way (its bias is rounded too)
    assert (folded - exact).abs().max() < 0.05 * exact.abs().max()


@pytest.mark.parametrize("grid,window", [(64, 14), (40, 14), (64, 0), (40, 0)])  # 1024² and 640² views' grids
def test_rel_pos_kernel_equals_the_reference_block_in_fp32_and_is_flash_close_in_bf16(grid, window):
    """SAM's fused rel-pos attention kernel (sam_attention.py), the default on CUDA: windows cut inside it (both
    grids pad to a multiple of 14) and global attention, in a whole block."""
    from dsocr_model.modeling.config import SamConfig
    from dsocr_model.modeling.sam import Block

    torch.manual_seed(0)
    block = Block(SamConfig(window_size=window), window).cuda()  # global: the 1024² table, resized for 40
    with torch.no_grad():
        for t in (block.attn.rel_pos_h, block.attn.rel_pos_w, block.attn.qkv.bias):
            t.normal_(std=0.5)
    x = torch.randn(2, grid, grid, 768, device="cuda")

    def run(kernel: bool, fold: bool = False) -> torch.Tensor:
        block.attn.kernel, block.attn.fold = kernel, fold
        return block(x if next(block.parameters()).dtype == torch.float32 else x.to(torch.bfloat16)).float()

    with torch.inference_mode():
        exact = run(False)  # fp32, the reference's materialised bias on windows cut by window_partition
        torch.testing.assert_close(run(True), exact, atol=1e-4, rtol=1e-4)
        block.to(torch.bfloat16)
        fused, folded = run(True), run(False, fold=True)
    err_fused, err_folded = (fused - exact).abs().mean(), (folded - exact).abs().mean()
    assert err_fused < 1.5 * err_folded  # as close to fp32 as the folded flash path
    assert (fused - exact).abs().max() < 0.05 * exact.abs().max()


@pytest.mark.parametrize("rows", [1, 64])  # batch 1: the keys split in chunks, combined by a second kernel
@pytest.mark.parametrize("fp8", [False, True])
def test_ragged_decode_kernel_equals_sdpa_over_each_rows_slots_on_cuda(rows, fp8):
    from dsocr_model.modeling.decode_attention import decode_attention, dequantize, quantize

    torch.manual_seed(0)
    H, S, D = 10, 1664, 128  # the decoder's heads and head size
    q = torch.randn(rows, H, 1, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(rows, H, S, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(rows, H, S, D, device="cuda", dtype=torch.bfloat16)
    lengths = torch.randint(1, 1537, (rows,), device="cuda", dtype=torch.int32)
    lengths[0] = 1536
    k[:, :, 1536:] = 1e4  # slots past every row's length must not count
    if fp8:
        (kq, ks), (vq, vs) = quantize(k), quantize(v)
        got = decode_attention(q, kq, vq, lengths, 1536, ks, vs)
        k, v = dequantize(kq, ks, torch.bfloat16), dequantize(vq, vs, torch.bfloat16)
    else:
        got = decode_attention(q, k, v, lengths, 1536)
    slots = torch.arange(S, device="cuda")
    mask = (slots[None, :] < lengths[:, None])[:, None, None]  # (rows, 1, 1, S)
    want = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    assert (got.float() - want).abs().max() < 2e-2


def test_fused_decoder_kernels_keep_eagers_bf16_roundings(monkeypatch):
    """fused.py on the GPU, in bf16: RoPE bit for bit, the residual sum bit for bit, the norm within a bf16 step of
    eager (fp32 sums in another order), the few-token MoE as close to its fp32 result as eager's is."""
    from dsocr_model.modeling import fused
    from dsocr_model.modeling.config import DecoderConfig
    from dsocr_model.modeling.decoder import RMSNorm, rope_cos_sin, rotate_heads
    from dsocr_model.modeling.moe import MoE

    torch.manual_seed(0)
    bf16 = dict(device="cuda", dtype=torch.bfloat16)
    norm = RMSNorm(1280, 1e-6).to(**bf16)
    moe = MoE(DecoderConfig()).to(**bf16)  # the full-size layer: 64 experts, top 6, two shared
    with torch.no_grad():
        norm.weight.normal_()
    x, r = torch.randn(4, 1, 1280, **bf16), torch.randn(4, 1, 1280, **bf16)
    heads = torch.randn(4, 1, 10, 128, **bf16)
    cos, sin = rope_cos_sin(torch.tensor([[5], [900], [1500], [3000]], device="cuda"), 128, 1e4, torch.bfloat16)

    def run():
        return norm.add_forward(x, r), rotate_heads(heads, cos, sin), moe(x[:1]), moe(x[:2])

    with torch.inference_mode():
        (y_f, sum_f), rope_f, moe1_f, moe2_f = run()
        monkeypatch.setattr(fused, "ENABLED", False)
        (y_e, sum_e), rope_e, moe1_e, moe2_e = run()
        exact = moe.float()(x[:2].float())  # fused is off: eager fp32
    assert torch.equal(rope_f, rope_e), (rope_f.float() - rope_e.float()).abs().max()
    assert torch.equal(sum_f, sum_e), (sum_f.float() - sum_e.float()).abs().max()
    step = y_e.float().abs().clamp(min=1e-2) * 2.0 ** -7
    assert ((y_f.float() - y_e.float()).abs() <= 2 * step).all() and (y_f == y_e).float().mean() > 0.9
    for got, want in ((moe1_f, moe1_e), (moe2_f, moe2_e)):
        n = got.shape[0]
        err_fused, err_eager = ((t.float() - exact[:n]).abs().mean() for t in (got, want))
        assert err_fused < 1.5 * err_eager, (err_fused, err_eager)


def test_fused_token_choice_equals_the_eager_choice_on_the_gpu():
    """runtime/choose.py compiled, full vocabulary, 300 rows (every row's guard its own: none, the official PDF
    and image guards, a whitelist, Unlimited-OCR's 35/128), logits favouring a 3-cycle: ids, history and hit
    counts equal the eager choice's, log-probabilities within fp32 rounding."""
    from concurrent.futures import Future

    from dsocr_model.runtime.batch import BatchState, PageRequest, Pending

    guards = [None, (20, 50, ()), (30, 90, (7,)), (3, 30, (7,)), (35, 128, ()), (2, 6, (1, 2))]
    rows, vocab = 300, 129280
    states = []
    for fused in (False, True):
        state = BatchState(rows, vocab, torch.device("cuda"))
        assert state.fused is not None  # CUDA with Triton: the fused choice by default
        if not fused:
            state.fused = None
        for row in range(rows):
            n, w, white = guards[row % len(guards)] or (None, None, ())
            request = PageRequest(torch.zeros(4, dtype=torch.long), (), 10 ** 6, n, w, white, -1)
            state.start(row, Pending(request, Future(), None, 0.0), 4, -1, {})
        states.append(state)
    g = torch.Generator(device="cuda").manual_seed(0)
    for t in range(60):
        logits = torch.randn(rows, vocab, device="cuda", generator=g)
        logits[:, (7, 3, 9)[t % 3]] += 6.0
        logits[:, 1] += 5.0
        for state in states:
            state.logits[:rows] = logits
        want, got = (state.choose(rows) for state in states)
        assert torch.equal(got, want), t
    eager, fused = states
    assert torch.equal(fused.tail, eager.tail) and torch.equal(fused.lengths, eager.lengths)
    assert torch.equal(fused.guard_hits, eager.guard_hits) and eager.guard_hits.sum() > rows
    torch.testing.assert_close(fused.logprob_sum, eager.logprob_sum)
    torch.testing.assert_close(fused.logprob_min, eager.logprob_min)
    assert not fused.fused.bits.any()

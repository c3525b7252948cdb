"""The Triton kernels behind decode_attention.py (imported on first use: Triton is a CUDA-side dependency).

`attend`: one program per (row x head, chunk of keys): online softmax in fp32 over the chunk's slots below the
row's length, fp8 keys/values scaled back per slot. `combine`: the chunks of one row and head merged by their
running maxima (flash-decoding). Shapes and strides are documented in decode_attention.decode_attention.
"""
import triton
import triton.language as tl


@triton.jit
def attend(Q, K, V, KS, VS, Lens, Out, PM, PL, PA, sm_scale, chunk,
           sqb, sqh, skb, skh, sks, ssb, ssh, sob, soh,
           HEADS: tl.constexpr, D: tl.constexpr, BLOCK: tl.constexpr, FP8: tl.constexpr, SPLITS: tl.constexpr):
    bh = tl.program_id(0).to(tl.int64)  # 64-bit: row offsets pass 2**31 elements past ~800 rows
    split = tl.program_id(1)
    b = bh // HEADS
    h = bh % HEADS
    length = tl.load(Lens + b)
    start = split * chunk
    end = tl.minimum(start + chunk, length)
    d = tl.arange(0, D)
    # fp32 throughout: a caller (inductor) may hand sm_scale over as fp64, which would promote the loop's state
    q = (tl.load(Q + b * sqb + h * sqh + d).to(tl.float32) * sm_scale).to(tl.float32)  # (D,)
    m = tl.full([1], float("-inf"), tl.float32)
    s_sum = tl.full([1], 0.0, tl.float32)
    acc = tl.full([D], 0.0, tl.float32)
    k_base = K + b * skb + h * skh
    v_base = V + b * skb + h * skh
    for n0 in range(start, end, BLOCK):
        n = n0 + tl.arange(0, BLOCK)
        ok = n < end
        k = tl.load(k_base + n[:, None] * sks + d[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
        v = tl.load(v_base + n[:, None] * sks + d[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
        if FP8:
            k = k * tl.load(KS + b * ssb + h * ssh + n, mask=ok, other=0.0)[:, None]
            v = v * tl.load(VS + b * ssb + h * ssh + n, mask=ok, other=0.0)[:, None]
        s = tl.sum(k * q[None, :], axis=1)  # (BLOCK,)
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=0))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new)
        s_sum = s_sum * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        m = m_new
    if SPLITS == 1:
        tl.store(Out + b * sob + h * soh + d, (acc / s_sum).to(Out.dtype.element_ty))
    else:
        part = bh * SPLITS + split
        tl.store(PM + part + tl.arange(0, 1), m)
        tl.store(PL + part + tl.arange(0, 1), s_sum)
        tl.store(PA + part * D + d, acc)


@triton.jit
def combine(PM, PL, PA, Out, sob, soh, HEADS: tl.constexpr, D: tl.constexpr, SPLITS: tl.constexpr):
    bh = tl.program_id(0).to(tl.int64)
    b = bh // HEADS
    h = bh % HEADS
    i = tl.arange(0, SPLITS)
    d = tl.arange(0, D)
    m = tl.load(PM + bh * SPLITS + i)
    w = tl.exp(m - tl.max(m, axis=0))  # empty chunks: m = -inf, weight 0
    total = tl.sum(w * tl.load(PL + bh * SPLITS + i), axis=0)
    acc = tl.sum(w[:, None] * tl.load(PA + (bh * SPLITS + i[:, None]) * D + d[None, :]), axis=0)
    tl.store(Out + b * sob + h * soh + d, (acc / total).to(Out.dtype.element_ty))

"""The Triton kernels behind fused.py (imported on first use: Triton is a CUDA-side dependency).

Each kernel does in one launch what the decoder's eager code does in several, with the same roundings: a
value the eager code holds in bf16 is rounded to bf16 here too (`rounded`), so only the order of fp32 sums differs.
Shapes and strides are documented in fused.py.
"""
import triton
import triton.language as tl


@triton.jit
def rounded(x, dt: tl.constexpr):
    """fp32 x as eager holds it in dt (back in fp32). For bf16, to nearest even in integer ops: a cast pair lets the
    compiler narrow the arithmetic around it to bf16 and contract a product and a sum into one FMA that rounds once
    (RoPE was a bf16 step off eager on an H200 that way)."""
    if dt == tl.bfloat16:
        u = x.to(tl.uint32, bitcast=True)
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
        return u.to(tl.float32, bitcast=True)
    else:
        return x.to(dt).to(tl.float32)


@triton.jit
def add_rms_norm(X, R, W, Y, Sum, eps, D: tl.constexpr, BLOCK: tl.constexpr, HAS_RES: tl.constexpr):
    """One row: Sum = X + R (rounded), Y = W * (Sum / rms(Sum)) as RMSNorm rounds it (normalised in fp32, cast,
    then scaled in the input dtype)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    ok = cols < D
    x = tl.load(X + row * D + cols, mask=ok, other=0.0)
    if HAS_RES:  # the sum rounded as eager's bf16 add
        x = (x.to(tl.float32) + tl.load(R + row * D + cols, mask=ok, other=0.0).to(tl.float32)).to(X.dtype.element_ty)
        tl.store(Sum + row * D + cols, x, mask=ok)
    xf = x.to(tl.float32)
    h = rounded(xf * tl.rsqrt(tl.sum(xf * xf, axis=0) / D + eps), X.dtype.element_ty)
    y = h * tl.load(W + cols, mask=ok, other=0.0).to(tl.float32)
    tl.store(Y + row * D + cols, y.to(Y.dtype.element_ty), mask=ok)


@triton.jit
def rope(X, Cos, Sin, Out, T, s_xb, s_xt, s_cb, s_ct, HEADS: tl.constexpr, HALF: tl.constexpr):
    """One (token, head) of q or k [B, T, heads, hd] (any token strides): x * cos + rotate_half(x) * sin, each product
    and the sum rounded as eager bf16 does -> Out [B, T, heads, hd], contiguous."""
    bt = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    b, t = bt // T, bt % T
    i = tl.arange(0, HALF)
    src = X + b * s_xb + t * s_xt + h * 2 * HALF
    dst = Out + (bt * HEADS + h) * 2 * HALF
    cs, sn = Cos + b * s_cb + t * s_ct, Sin + b * s_cb + t * s_ct
    x1, x2 = tl.load(src + i).to(tl.float32), tl.load(src + HALF + i).to(tl.float32)
    dt = Out.dtype.element_ty
    y1 = rounded(x1 * tl.load(cs + i).to(tl.float32), dt) + rounded(-x2 * tl.load(sn + i).to(tl.float32), dt)
    y2 = (rounded(x2 * tl.load(cs + HALF + i).to(tl.float32), dt)
          + rounded(x1 * tl.load(sn + HALF + i).to(tl.float32), dt))
    tl.store(dst + i, y1.to(dt))
    tl.store(dst + HALF + i, y2.to(dt))


@triton.jit
def route(X, G, Weight, Idx, scale, E: tl.constexpr, D: tl.constexpr, TOP_K: tl.constexpr, E_BLOCK: tl.constexpr,
          BLOCK_D: tl.constexpr):
    """One token: fp32 router logits over E experts, softmax, the top k (largest first, lowest id on ties)."""
    t = tl.program_id(0).to(tl.int64)
    e = tl.arange(0, E_BLOCK)
    e_ok = e < E
    acc = tl.zeros([E_BLOCK], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_ok = d < D
        x = tl.load(X + t * D + d, mask=d_ok, other=0.0).to(tl.float32)
        g = tl.load(G + e[:, None] * D + d[None, :], mask=e_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(g * x[None, :], axis=1)
    acc = tl.where(e_ok, acc, float("-inf"))
    p = tl.exp(acc - tl.max(acc, axis=0))
    p = p / tl.sum(p, axis=0)
    for j in tl.static_range(TOP_K):
        best = tl.max(p, axis=0)
        pick = tl.min(tl.where(p == best, e, E_BLOCK), axis=0)
        tl.store(Weight + t * TOP_K + j, best * scale)
        tl.store(Idx + t * TOP_K + j, pick.to(tl.int64))
        p = tl.where(e == pick, -1.0, p)


@triton.jit
def expert_up(X, Idx, W13, Gs, Us, H, n_routed, D: tl.constexpr, I: tl.constexpr, TOP_K: tl.constexpr,
              SHARED: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_D: tl.constexpr):
    """One assignment, BLOCK_I hidden units: silu(x . gate) * (x . up), each rounded as eager. Assignments below
    n_routed are (token, routed expert): W13 [E, 2I, D] holds each expert's gate rows, then its up rows. The next
    T * SHARED are (token, I-wide slice of the shared experts): gate Gs and up Us [SHARED * I, D]."""
    a = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    i_ok = i < I
    if a < n_routed:
        w = W13 + tl.load(Idx + a) * (2 * I * D)
        gate, up = w + i[:, None] * D, w + (I + i[:, None]) * D
        x_row = X + (a // TOP_K) * D
    else:
        s = a - n_routed
        gate, up = Gs + ((s % SHARED) * I + i[:, None]) * D, Us + ((s % SHARED) * I + i[:, None]) * D
        x_row = X + (s // SHARED) * D
    acc_g = tl.zeros([BLOCK_I], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_I], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_ok = d < D
        both = i_ok[:, None] & d_ok[None, :]
        x = tl.load(x_row + d, mask=d_ok, other=0.0).to(tl.float32)[None, :]
        acc_g += tl.sum(tl.load(gate + d[None, :], mask=both, other=0.0).to(tl.float32) * x, axis=1)
        acc_u += tl.sum(tl.load(up + d[None, :], mask=both, other=0.0).to(tl.float32) * x, axis=1)
    dt = H.dtype.element_ty
    g = rounded(acc_g, dt)
    act = rounded(g / (1.0 + tl.exp(-g)), dt)
    tl.store(H + a * I + i, (act * rounded(acc_u, dt)).to(dt), mask=i_ok)


@triton.jit
def expert_down(Hid, Idx, Weight, W2, Ds, Part, n_routed, D: tl.constexpr, I: tl.constexpr, SHARED: tl.constexpr,
                BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr):
    """One assignment (as in expert_up), BLOCK_O output channels of h . down into fp32 Part [assignments, D]. A routed
    expert's output is rounded as eager's is, then weighted (W2 [E, D, I]); a shared slice's stays an fp32 partial
    sum over its I columns of Ds [D, SHARED * I] (eager rounds the whole shared output once: combine_experts does).
    One program per assignment spreads a token's experts over the GPU (a program per token was latency-bound)."""
    a = tl.program_id(0).to(tl.int64)
    o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    o_ok = o < D
    if a < n_routed:
        w = W2 + tl.load(Idx + a) * (D * I) + o[:, None] * I
    else:
        w = Ds + ((a - n_routed) % SHARED) * I + o[:, None] * (SHARED * I)
    acc = tl.zeros([BLOCK_O], dtype=tl.float32)
    for i0 in range(0, I, BLOCK_I):
        i = i0 + tl.arange(0, BLOCK_I)
        i_ok = i < I
        h = tl.load(Hid + a * I + i, mask=i_ok, other=0.0).to(tl.float32)[None, :]
        wt = tl.load(w + i[None, :], mask=o_ok[:, None] & i_ok[None, :], other=0.0)
        acc += tl.sum(wt.to(tl.float32) * h, axis=1)
    if a < n_routed:
        acc = rounded(acc, Hid.dtype.element_ty) * tl.load(Weight + a)
    tl.store(Part + a * D + o, acc, mask=o_ok)


@triton.jit
def combine_experts(Part, Y, n_routed, D: tl.constexpr, TOP_K: tl.constexpr, SHARED: tl.constexpr,
                    BLOCK: tl.constexpr):
    """One token: the sum of its k weighted expert outputs in fp32 and in order, rounded; plus, with shared experts,
    their output (the sum of its slices, rounded), the two added as eager's bf16 add does."""
    t = tl.program_id(0).to(tl.int64)
    o = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    o_ok = o < D
    total = tl.zeros([BLOCK], dtype=tl.float32)
    for j in tl.static_range(TOP_K):
        total += tl.load(Part + (t * TOP_K + j) * D + o, mask=o_ok, other=0.0)
    if SHARED > 0:
        shared = tl.zeros([BLOCK], dtype=tl.float32)
        for s in tl.static_range(SHARED):
            shared += tl.load(Part + (n_routed + t * SHARED + s) * D + o, mask=o_ok, other=0.0)
        dt = Y.dtype.element_ty
        total = rounded(total, dt) + rounded(shared, dt)
    tl.store(Y + t * D + o, total.to(Y.dtype.element_ty), mask=o_ok)

"""The Triton kernel behind sam_attention.py (imported on first use: Triton is a CUDA-side dependency).

`attend`: flash attention (online softmax in fp32) of one block of queries of one (view, head) over all keys of
the view, with SAM's decomposed rel-pos bias added to each score from its two factors: score(q, k) =
scale * q.k + bh[q, row(k)] + bw[q, col(k)]. q, k and v are read where the qkv projection wrote them and the
output is written where the out projection reads it, so nothing is permuted or copied around the kernel.
Shapes and strides are documented in sam_attention.rel_pos_attention.
"""
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # scores are kept in base 2: exp2 is the cheaper instruction


@triton.jit
def attend(QKV, QKV_BIAS, BH, BW, Out, sm_scale, grid_h, grid_w, win_h, win_w, windows_x, query_blocks,
           s_b, s_n, s_which,
           sh_b, sh_r, sh_c, sh_h, sh_k,
           sw_b, sw_r, sw_c, sw_h, sw_k,
           so_b, so_n,
           HEADS: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, PADDED: tl.constexpr,
           IEEE: tl.constexpr):
    """One program: BM query tokens of one window (the whole grid for global attention) of one (view, head).

    Tokens are addressed in the unpartitioned grid; a window cell past the grid's edge is padding, whose key and
    value are the qkv projection's bias (SAM pads the normalised input with zeros), and whose query is not stored.
    Keys go one window row at a time (BN >= win_w, the tail masked): along a row the bh term is one number per query
    and the bw term the same [BM, BN] tile for every row, loaded once — no per-score gathers.
    """
    pid = tl.program_id(0)
    window, block = pid // query_blocks, pid % query_blocks
    y0, x0 = (window // windows_x) * win_h, (window % windows_x) * win_w  # the window's corner in the grid
    bh = tl.program_id(1).to(tl.int64)  # 64-bit: a batch of views passes 2**31 elements
    b = bh // HEADS
    h = bh % HEADS
    t = block * BM + tl.arange(0, BM)  # query cells of the window
    qy, qx = y0 + t // win_w, x0 + t % win_w
    q_ok = (t < win_h * win_w) & (qy < grid_h) & (qx < grid_w)
    d = tl.arange(0, D)
    c = tl.arange(0, BN)  # key columns of a window row
    c_ok = c < win_w
    kx = x0 + c
    base = QKV + b * s_b + h * D
    q = tl.load(base + (qy * grid_w + qx)[:, None] * s_n + d[None, :], mask=q_ok[:, None], other=0.0)
    bias_h = BH + b * sh_b + qy * sh_r + qx * sh_c + h * sh_h  # (BM,) pointers to each query's factors
    bias_w = BW + b * sw_b + qy * sw_r + qx * sw_c + h * sw_h
    # bw[q, key column] is the same for every key row: (BM, BN), in base 2
    col_bias = tl.load(bias_w[:, None] + c[None, :] * sw_k, mask=q_ok[:, None] & c_ok[None, :],
                       other=0.0).to(tl.float32) * LOG2E
    col_bias = tl.where(c_ok[None, :], col_bias, float("-inf"))  # a row's padding columns take no weight
    if PADDED:
        k_pad = tl.load(QKV_BIAS + HEADS * D + h * D + d)  # what a zero input projects to
        v_pad = tl.load(QKV_BIAS + 2 * HEADS * D + h * D + d)
    qk_scale = sm_scale * LOG2E
    m_i = tl.full([BM], float("-inf"), tl.float32)
    l_i = tl.full([BM], 0.0, tl.float32)
    acc = tl.zeros([BM, D], dtype=tl.float32)
    for r in range(0, win_h):
        ky = y0 + r
        k_ok = c_ok & (kx < grid_w) & (ky + 0 * c < grid_h)  # a vector: a scalar condition is no mask
        n = ky * grid_w + kx  # the key tokens of window row r
        k = tl.load(base + s_which + n[:, None] * s_n + d[None, :], mask=k_ok[:, None], other=0.0)
        v = tl.load(base + 2 * s_which + n[:, None] * s_n + d[None, :], mask=k_ok[:, None], other=0.0)
        if PADDED:
            k = tl.where(k_ok[:, None], k, k_pad[None, :])
            v = tl.where(k_ok[:, None], v, v_pad[None, :])
        if IEEE:
            s = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))
        row_bias = tl.load(bias_h + r * sh_k, mask=q_ok, other=0.0).to(tl.float32) * LOG2E  # bh[q, r]: (BM,)
        s = s * qk_scale + row_bias[:, None] + col_bias
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if IEEE:
            pv = tl.dot(p.to(v.dtype), v, input_precision="ieee")
        else:
            pv = tl.dot(p.to(v.dtype), v)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(Out + b * so_b + (qy * grid_w + qx)[:, None] * so_n + h * D + d[None, :], out.to(Out.dtype.element_ty),
             mask=q_ok[:, None])

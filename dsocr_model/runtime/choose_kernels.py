"""The Triton kernels behind choose.py: the engine's token choice (n-gram guard, greedy id, quality signals) in three
launches per step instead of ≈ 35 small eager ones (imported on first use: Triton is a CUDA-side dependency).

Per row, with the history `tail` [B, W] (newest id last), the guard's settings per row and the logits [B, V]:
1. `ban_ngrams`   one program per row: the ids the guard bans, as a list [B, W] (-1 = none) and as bits in a
                  per-row bitmap [B, ceil(V / 32)] (int32) that the next kernel tests in O(1) per logit.
2. `block_maxima` one program per (row, block of V): the block's raw max, its first argmax and its sum of
                  exp(x - max), and the same max/argmax over the logits the guard leaves.
3. `pick`         one program per row: the greedy id (first argmax of the guarded logits, as torch.argmax), its
                  log-probability under the raw logits, whether the guard changed the choice; updates the row's
                  signals, history and length, and clears the bits step 1 set.
"""
import triton
import triton.language as tl


@triton.jit
def ban_ngrams(Tail, Lengths, Ngram, Window, Whitelist, Banned, Bits, W: tl.constexpr, WL: tl.constexpr,
               WORDS: tl.constexpr, J_BLOCK: tl.constexpr, WL_BLOCK: tl.constexpr):
    """The official guard for one row: within the last `window` generated ids, every n-gram whose first n-1 ids
    equal the newest n-1 bans the id that followed them (unless whitelisted). Starts jj index the tail; a start
    is inside the window iff jj >= W - min(window, length) and its n-gram ends before the newest id."""
    r = tl.program_id(0).to(tl.int64)
    n = tl.load(Ngram + r)
    w = tl.load(Window + r)
    seen = tl.minimum(tl.load(Lengths + r), w.to(tl.int64)).to(tl.int32)
    row = Tail + r * W
    white = tl.load(Whitelist + r * WL + tl.arange(0, WL_BLOCK), mask=tl.arange(0, WL_BLOCK) < WL, other=-1)
    # Only the window's starts are visited: list entries outside it keep older bans, which `pick` then clears
    # from the bitmap again (clearing a zero bit is harmless).
    if n > 0:  # ngram 0: the row has no guard
        for j0 in range(W - seen, W - n + 1, J_BLOCK):
            jj = j0 + tl.arange(0, J_BLOCK)
            ok = jj <= W - n
            for m in range(0, n - 1):  # the n-1 ids of each start against the newest n-1
                a = tl.load(row + jj + m, mask=ok, other=-1)
                ok = ok & (a == tl.load(row + W - n + 1 + m))
            banned = tl.load(row + jj + n - 1, mask=ok, other=-1)
            ok = ok & (tl.max((banned[:, None] == white[None, :]).to(tl.int32), axis=1) == 0)
            banned = tl.where(ok, banned, -1)
            tl.store(Banned + r * W + jj, banned, mask=jj < W)
            tl.atomic_or(Bits + r * WORDS + banned // 32, (1 << (banned % 32)).to(tl.int32), mask=ok)


@triton.jit
def block_maxima(Logits, Bits, RawMax, RawArg, RawSum, GuardMax, GuardArg, V: tl.constexpr, WORDS: tl.constexpr,
                 BLOCKS: tl.constexpr, BLOCK_V: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1)
    v = b * BLOCK_V + tl.arange(0, BLOCK_V)
    x = tl.load(Logits + r * V + v, mask=v < V, other=float("-inf"))
    top = tl.max(x, axis=0)
    out = r * BLOCKS + b
    tl.store(RawMax + out, top)
    tl.store(RawArg + out, tl.min(tl.where(x == top, v, V), axis=0))
    tl.store(RawSum + out, tl.sum(tl.exp(x - top), axis=0))
    bit = (tl.load(Bits + r * WORDS + v // 32, mask=v < V, other=0) >> (v % 32)) & 1
    g = tl.where(bit == 1, float("-inf"), x)
    top = tl.max(g, axis=0)
    tl.store(GuardMax + out, top)
    tl.store(GuardArg + out, tl.min(tl.where(g == top, v, V), axis=0))


@triton.jit
def pick(RawMax, RawArg, RawSum, GuardMax, GuardArg, Banned, Bits, Tail, Lengths, Chosen, LogprobSum, LogprobMin,
         GuardHits, V: tl.constexpr, W: tl.constexpr, WORDS: tl.constexpr, BLOCKS: tl.constexpr,
         B_BLOCK: tl.constexpr, W_BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    b = tl.arange(0, B_BLOCK)
    part = r * BLOCKS + b
    live = b < BLOCKS
    raw_max = tl.load(RawMax + part, mask=live, other=float("-inf"))
    top = tl.max(raw_max, axis=0)
    sums = tl.load(RawSum + part, mask=live, other=0.0) * tl.exp(raw_max - top)
    lse = top + tl.log(tl.sum(sums, axis=0))
    raw_arg = tl.min(tl.where(raw_max == top, tl.load(RawArg + part, mask=live, other=V), V), axis=0)
    guard_max = tl.load(GuardMax + part, mask=live, other=float("-inf"))
    best = tl.max(guard_max, axis=0)
    chosen = tl.min(tl.where(guard_max == best, tl.load(GuardArg + part, mask=live, other=V), V), axis=0)
    tl.store(Chosen + r, chosen.to(tl.int64))
    # signals: the chosen id is never banned, so its guarded logit is its raw one
    logprob = best - lse
    tl.store(LogprobSum + r, tl.load(LogprobSum + r) + logprob)
    tl.store(LogprobMin + r, tl.minimum(tl.load(LogprobMin + r), logprob))
    hit = (tl.load(Bits + r * WORDS + raw_arg // 32) >> (raw_arg % 32)) & 1  # greedy's own choice was banned
    tl.store(GuardHits + r, tl.load(GuardHits + r) + hit.to(tl.float32))
    # history: shift left by one, the chosen id newest (every load of the row happens before its stores)
    j = tl.arange(0, W_BLOCK)
    row = Tail + r * W
    shifted = tl.load(row + j + 1, mask=j + 1 < W, other=0)
    shifted = tl.where(j == W - 1, chosen.to(tl.int64), shifted)
    banned = tl.load(Banned + r * W + j, mask=j < W, other=-1)
    tl.debug_barrier()  # each thread stores ids other threads load: all loads first
    tl.store(row + j, shifted, mask=j < W)
    tl.store(Lengths + r, tl.load(Lengths + r) + 1)
    tl.store(Bits + r * WORDS + banned // 32, tl.zeros([W_BLOCK], dtype=tl.int32), mask=banned >= 0)

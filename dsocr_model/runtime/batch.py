"""The engine's batch state: which page holds which KV-cache row, and the per-row guard history.

`BatchState` is what one decode step reads and writes: the slots (a page per cache row, or None), the
last generated ids per row right-aligned in `tail` (for the n-gram guard), the generated counts, and the
logits the next token is chosen from. Rows in use are packed low (admission fills the lowest free row)
and a step decodes rows 0..n with n a power of two, so there are few distinct shapes.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from ..family.spec import DEFAULT_MAX_NEW_TOKENS, MAX_GUARD_WINDOW
from ..modeling.decoder import ring_slot
from ..modeling.preprocess import ImageViews
from . import choose
from .ngram import ngram_penalty

logger = logging.getLogger(__name__)

MAX_WINDOW = MAX_GUARD_WINDOW  # the guard's history per row


@dataclass
class PageRequest:
    input_ids: torch.Tensor  # LongTensor[T] from build_input_ids
    images: Sequence[ImageViews] = ()
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    ngram_size: int | None = None  # official: 30 (image) / 20 (PDF)
    window_size: int | None = None  # official: 90 / 50
    whitelist: Iterable[int] = ()
    eos_token_id: int | None = None  # None: the model's; -1 never stops early (benchmarks)


@dataclass
class PageOutput:
    token_ids: list[int]
    finish_reason: str  # "eos" | "length"
    timings: dict[str, float] = field(default_factory=dict)  # queue_s, prefill_s, ttft_s, total_s
    signals: dict[str, float] = field(default_factory=dict)  # mean_logprob, min_logprob, guard_hits


@dataclass
class Pending:
    req: PageRequest
    future: Future
    on_token: Callable[[int], None] | None
    t_submit: float


@dataclass
class Slot:
    """A page in its KV-cache row. It keeps only what decoding needs, not the request: the page's image
    views (~42 MB in float32 for a Gundam page) are freed once its prefill is done."""

    future: Future
    on_token: Callable[[int], None] | None
    t_submit: float
    max_new_tokens: int
    guard: tuple[int, int, tuple[int, ...]] | None  # (ngram_size, window_size, whitelist) or None
    pos: int  # position of the next token to feed
    prefill_len: int  # prompt length: where an R-SWA ring starts
    eos: int
    timings: dict[str, float]
    out: list[int] = field(default_factory=list)


@dataclass
class StepInputs:
    """One decode step: rows 0..n, ids and positions [n, 1], the cache slots they write and the last slot
    each sees [n, 1] (equal to the positions without R-SWA), and the attention length."""

    n: int
    tokens: torch.Tensor
    positions: torch.Tensor
    slots: torch.Tensor
    visible: torch.Tensor
    kv_len: int


def to_device(values: list, device: torch.device, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """A small host list on the device without blocking the host: on CUDA through pinned memory, non-blocking (a
    copy from pageable memory would first wait for every kernel queued before it, i.e. the step in flight)."""
    t = torch.tensor(values, dtype=dtype)
    return t.pin_memory().to(device, non_blocking=True) if torch.device(device).type == "cuda" else t.to(device)


def decode_rows(live_rows: int, max_batch: int) -> int:
    """Decode rows 0..n with n the next power of two: few distinct shapes (graphs), little waste."""
    return min(1 << (live_rows - 1).bit_length(), max_batch)


def fail(future: Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class BatchState:
    def __init__(self, max_batch: int, vocab_size: int, device: torch.device, window: int | None = None,
                 signals: bool = True, spare_slot: int = 0) -> None:
        self.max_batch = max_batch
        self.window = window  # R-SWA window of the model's decoder (None: full attention)
        self.spare_slot = spare_slot  # where a step writes the K/V of rows it carries but does not use
        self.slots: list[Slot | None] = [None] * max_batch
        self.reserved: set[int] = set()  # rows handed to admission, not yet started
        self.tail = torch.full((max_batch, MAX_WINDOW), -1, dtype=torch.long, device=device)  # newest ids, right-aligned
        self.lengths = torch.zeros(max_batch, dtype=torch.long, device=device)
        self.logits = torch.zeros(max_batch, vocab_size, device=device)
        self.signals = signals
        # Per-row running quality signals, kept on the device and read once when the page finishes: the sum and
        # minimum of the chosen tokens' log-probabilities (under the raw logits) and the steps where the guard
        # changed the greedy choice.
        self.logprob_sum = torch.zeros(max_batch, device=device)
        self.logprob_min = torch.zeros(max_batch, device=device)
        self.guard_hits = torch.zeros(max_batch, device=device)
        self.fused = choose.FusedChoice(max_batch, vocab_size, MAX_WINDOW, device) if choose.available(device) else None
        cuda = torch.device(device).type == "cuda"
        self.host_ids = torch.zeros(max_batch, dtype=torch.long, pin_memory=True) if cuda else None
        self.copied = torch.cuda.Event() if cuda else None

    def free_rows(self) -> Iterable[int]:
        """Lowest rows first, so live rows stay packed."""
        return (s for s in range(self.max_batch) if self.slots[s] is None and s not in self.reserved)

    def live(self) -> list[int]:
        return [s for s, st in enumerate(self.slots) if st is not None]

    def start(self, row: int, job: Pending, prompt_len: int, eos: int, timings: dict[str, float]) -> None:
        r = job.req
        guard = (r.ngram_size, r.window_size, tuple(sorted(set(r.whitelist)))) if r.ngram_size else None
        self.reserved.discard(row)
        self.slots[row] = Slot(job.future, job.on_token, job.t_submit, r.max_new_tokens, guard, prompt_len, prompt_len,
                               eos, timings)
        self.tail[row] = -1
        self.lengths[row] = 0
        if self.fused is not None:
            n, w, white = guard or (0, 0, ())
            self.fused.set_guard(row, n, w, to_device(list(white), self.tail.device))
        self.logprob_sum[row], self.logprob_min[row], self.guard_hits[row] = 0.0, float("inf"), 0.0

    def drop(self, row: int, error: BaseException) -> None:
        st, self.slots[row] = self.slots[row], None
        if st is not None:
            fail(st.future, error)

    def choose(self, n: int) -> torch.Tensor:
        """Greedy ids [n] for rows 0..n after each request's n-gram guard, left on the device (the next step reads
        them there); records them in the guard history. `read_back` brings them to the host."""
        if self.fused is not None:
            try:
                return self.fused(n, self.logits, self.tail, self.lengths, self.logprob_sum, self.logprob_min,
                                  self.guard_hits)
            except Exception as e:  # e.g. Triton cannot build the kernels for this GPU: keep serving, eagerly
                # (the history and lengths are only written by the last kernel, so a failed launch left them as
                # they were)
                logger.warning("the fused token choice failed (%s: %s); choosing eagerly from now on",
                               type(e).__name__, e)
                self.fused = None
        logits, tail, lengths = self.logits[:n], self.tail[:n], self.lengths[:n]
        normaliser = torch.logsumexp(logits, dim=-1) if self.signals else None  # (n,), under the raw logits
        groups: dict[tuple[int, int, tuple[int, ...]], list[int]] = {}
        for s, st in enumerate(self.slots[:n]):
            if st is not None and st.guard is not None:
                groups.setdefault(st.guard, []).append(s)
        for (size, window, wl), rows in groups.items():
            idx = to_device(rows, logits.device)
            pen = ngram_penalty(tail[idx, tail.shape[1] - window:], lengths[idx], size,
                                to_device(list(wl), logits.device), logits.shape[1])
            if self.signals:  # the guard "hit" when it banned what greedy decoding would have chosen
                unguarded = logits[idx].argmax(dim=-1, keepdim=True)
                self.guard_hits[idx] += pen.gather(1, unguarded)[:, 0].isinf().float()
            logits[idx] += pen
        chosen = logits.argmax(dim=-1)
        if self.signals:  # a chosen id is never banned, so its guarded logit is its raw one
            logprob = logits.gather(1, chosen[:, None])[:, 0] - normaliser
            self.logprob_sum[:n] += logprob
            torch.minimum(self.logprob_min[:n], logprob, out=self.logprob_min[:n])
        tail.copy_(torch.cat([tail[:, 1:], chosen[:, None]], dim=1))
        lengths[to_device(self.live(), lengths.device)] += 1
        return chosen

    def read_back(self, chosen: torch.Tensor) -> Callable[[], list[int]]:
        """Start copying the chosen ids to the host; the returned call waits for them. The engine launches the next
        step in between, so the host hands tokens out while the GPU decodes (its one sync per step waits for
        the copy, not for the step after it)."""
        n = chosen.shape[0]
        if self.host_ids is None:
            return chosen.tolist
        self.host_ids[:n].copy_(chosen, non_blocking=True)
        self.copied.record()

        def wait() -> list[int]:
            self.copied.synchronize()
            return self.host_ids[:n].tolist()
        return wait

    def emit(self, row: int, tok: int) -> None:
        """Hand a chosen id to its request; finish the request on EOS or its token limit."""
        st = self.slots[row]
        st.out.append(tok)
        now = time.perf_counter()
        if len(st.out) == 1:
            st.timings["ttft_s"] = now - st.t_submit
        try:
            if st.on_token is not None:
                st.on_token(tok)
        except Exception as e:  # a broken consumer ends its own request only
            self.drop(row, e)
            return
        done = "eos" if tok == st.eos else "length" if len(st.out) >= st.max_new_tokens else None
        if done:
            st.timings["total_s"] = now - st.t_submit
            self.slots[row] = None
            if not st.future.done():  # a cancelled request's row is simply freed
                st.future.set_result(PageOutput(st.out, done, st.timings, self.page_signals(row, len(st.out))))

    def page_signals(self, row: int, tokens: int) -> dict[str, float]:
        """The finished page's quality signals (one small read from the device)."""
        if not self.signals:
            return {}
        total, low, hits = torch.stack([self.logprob_sum[row], self.logprob_min[row], self.guard_hits[row]]).tolist()
        return {"mean_logprob": total / tokens, "min_logprob": low, "guard_hits": int(hits)}

    def next_inputs(self, chosen: torch.Tensor) -> StepInputs | None:
        """The next decode step's inputs for rows 0..n, fed the ids just chosen (on the device); None when idle.
        Called before the chosen ids reach the host: a row that has just finished is decoded once more, into its
        own row (harmless: it is freed afterwards, and whatever fills it next overwrites or never reads that slot)."""
        live = self.live()
        if not live:
            return None
        n = decode_rows(max(live) + 1, self.max_batch)
        # Rows 0..n that hold no live page (free, or being filled by admission) write to the spare slot.
        columns = [[0] * n, [self.spare_slot] * n, [0] * n]  # built on the host, sent in one copy
        for s in live:
            st = self.slots[s]
            columns[0][s] = st.pos
            columns[1][s], columns[2][s] = ring_slot(st.pos, st.prefill_len, self.window)  # (pos, pos) without R-SWA
            st.pos += 1
        positions, slots, visible = to_device(columns, chosen.device)[:, :, None]  # 3 x (n, 1)
        return StepInputs(n, chosen[:n, None], positions, slots, visible, max(columns[2]) + 1)

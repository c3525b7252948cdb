"""Batched greedy generation with continuous batching over one preallocated KV cache.

Requests (image views + prompt ids + limits) wait in a queue; up to `max_batch` are in flight, each in
one row ("slot") of a static cache [layers, max_batch, H, max_seq_len, hd]. Newly admitted pages have
their views encoded together (vision batched across pages), then each prompt is prefilled into its slot.
Every step decodes all slots at once (one token each, per-row positions and masks); the n-gram guard runs
on the GPU as tensor ops; a finished slot is refilled from the queue at the next step.

Host work per step: one read of the chosen ids (B ints) to detect EOS/limits and to refill slots.
Results are returned in request order. The one-sequence path in generate.py is the yardstick.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from .decoder import KVCache
from .ngram import ngram_penalty
from .preprocess import ImageViews


@dataclass
class PageRequest:
    input_ids: torch.Tensor  # LongTensor[T] from build_input_ids
    images: Sequence[ImageViews] = ()
    max_new_tokens: int = 8192
    ngram_size: int | None = None  # official: 30 (image) / 20 (PDF)
    window_size: int | None = None  # official: 90 / 50
    whitelist: Iterable[int] = ()
    eos_token_id: int | None = None  # None: the model's; -1 never stops early (benchmarks)


@dataclass
class PageOutput:
    token_ids: list[int]
    finish_reason: str  # "eos" | "length"
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Slot:
    index: int  # request index
    req: PageRequest
    pos: int  # position of the next token to feed
    out: list[int]
    eos: int
    t_start: float
    t_first: float = 0.0


class Engine:
    def __init__(self, model, max_batch: int = 8, max_seq_len: int | None = None) -> None:
        self.model = model
        self.max_batch = max_batch
        self.max_seq_len = max_seq_len or model.config.decoder.max_position_embeddings
        self.cache = KVCache(model.config.decoder, max_batch, self.max_seq_len, model.device, model.dtype)

    @torch.inference_mode()
    def generate(self, requests: Sequence[PageRequest]) -> list[PageOutput]:
        for r in requests:
            if r.ngram_size and not r.window_size:
                raise ValueError("the engine's n-gram guard needs a window_size (official: 90 or 50)")
            need = len(r.input_ids) + r.max_new_tokens
            if need > self.max_seq_len:
                raise ValueError(f"prompt + max_new_tokens = {need} exceeds max_seq_len {self.max_seq_len}")
        device, B = self.model.device, self.max_batch
        waiting = deque(range(len(requests)))
        slots: list[_Slot | None] = [None] * B
        results: list[PageOutput | None] = [None] * len(requests)
        windows = {r.window_size for r in requests if r.ngram_size}
        tail_len = max(windows | {1})
        tail = torch.full((B, tail_len), -1, dtype=torch.long, device=device)  # newest generated ids, right-aligned
        lengths = torch.zeros(B, dtype=torch.long, device=device)
        logits = torch.zeros(B, self.model.config.decoder.vocab_size, device=device)

        while waiting or any(slots):
            free = [s for s in range(B) if slots[s] is None]
            admitted = [(s, waiting.popleft()) for s in free[: len(waiting)]]
            if admitted:
                self._prefill(requests, admitted, slots, logits, tail, lengths)
            active = [s for s in range(B) if slots[s] is not None]
            chosen = self._choose(logits, tail, lengths, slots).tolist()
            for s in active:
                st = slots[s]
                tok = chosen[s]
                st.out.append(tok)
                if len(st.out) == 1:
                    st.t_first = time.perf_counter()
                done = "eos" if tok == st.eos else "length" if len(st.out) >= st.req.max_new_tokens else None
                if done:
                    now = time.perf_counter()
                    results[st.index] = PageOutput(st.out, done, {"ttft_s": st.t_first - st.t_start,
                                                                  "total_s": now - st.t_start})
                    slots[s] = None
            self._record(chosen, active, tail, lengths)
            live = [s for s in range(B) if slots[s] is not None]
            if not live:
                continue
            pos_list, tok_list = [0] * B, [0] * B  # built on the host, sent in one copy each
            for s in live:
                pos_list[s], tok_list[s] = slots[s].pos, slots[s].out[-1]
                slots[s].pos += 1
            positions = torch.tensor(pos_list, device=device)[:, None]
            tokens = torch.tensor(tok_list, device=device)[:, None]
            x = self.model.model.embed_tokens(tokens)
            logits = self.model.step(x, positions, self.cache, max(pos_list) + 1)
        return results  # type: ignore[return-value]

    def _prefill(self, requests, admitted, slots, logits, tail, lengths) -> None:
        """Encode the admitted pages' views together, then prefill each prompt into its slot."""
        t0 = time.perf_counter()
        images = [v for _, i in admitted for v in requests[i].images]
        blocks = iter(self.model.encode_images(images))
        for s, i in admitted:
            r = requests[i]
            ids = torch.as_tensor(r.input_ids, dtype=torch.long, device=self.model.device)[None]
            x = self.model.model.embed_tokens(ids)
            feats = [next(blocks) for _ in r.images]
            x = self.model.scatter_image_features(ids, x, torch.cat(feats) if feats else x.new_zeros((0, x.shape[-1])))
            T = ids.shape[1]
            logits[s] = self.model.step(x, torch.arange(T, device=ids.device)[None], self.cache.slot(s), T)[0]
            eos = self.model.eos_token_id if r.eos_token_id is None else r.eos_token_id
            slots[s] = _Slot(i, r, T, [], eos, t0)
            tail[s] = -1
            lengths[s] = 0

    def _choose(self, logits, tail, lengths, slots) -> torch.Tensor:
        """Greedy ids [B] after the per-request n-gram guard (grouped by guard settings)."""
        groups: dict[tuple[int, int, tuple[int, ...]], list[int]] = {}
        for s, st in enumerate(slots):
            if st is not None and st.req.ngram_size:
                r = st.req
                groups.setdefault((r.ngram_size, r.window_size or tail.shape[1], tuple(sorted(r.whitelist))), []).append(s)
        for (n, w, wl), rows in groups.items():
            idx = torch.tensor(rows, device=logits.device)
            pen = ngram_penalty(tail[idx, tail.shape[1] - w:], lengths[idx], n,
                                torch.tensor(wl, dtype=torch.long, device=logits.device), logits.shape[1])
            logits[idx] += pen
        return logits.argmax(dim=-1)

    @staticmethod
    def _record(chosen, active, tail, lengths) -> None:
        new = torch.tensor(chosen, device=tail.device)
        tail.copy_(torch.cat([tail[:, 1:], new[:, None]], dim=1))
        if active:
            lengths[torch.tensor(active, device=tail.device)] += 1

"""Admission: waiting pages into free KV-cache rows, batched, and on CUDA beside decoding.

A group of admitted pages is encoded together (vision batched across the pages by view size), then their
prompts are prefilled in one forward: right-padded to the longest, causal over their own tokens, K/V written
straight into each page's cache row (`KVCache.at_rows`), the logits of each prompt's last token kept. Prompts
are sorted by length and cut into chunks of at most `max_tokens` padded tokens, so a long prompt does not pad
many short ones and activations stay bounded (`max_tokens=0`: one prompt per forward, the old way).

By default the engine admits between decode steps. With `overlap_admission` it runs `admit_group` in a
thread of its own on a CUDA stream of its own (`Admission`), so decoding the live rows need not wait while new
pages are encoded: the decode thread reserves the rows, hands the group over, and starts the rows once the
group is done; meanwhile its steps send idle rows' K/V to a spare slot, never into a row being filled
(BatchState.next_inputs). On an H200 this measured slower than admitting between steps, hence off by default:
with a batch queued at once the run ends at (time to admit every page) + its decode steps, and sharing the GPU
with decoding makes admission slower; the interpreter lock was ruled out (benchmarks/RESULTS.md).
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from torch.nn.utils.rnn import pad_sequence

from ..modeling.decoder import KVCache
from .batch import Pending, fail
from .generate import prefill

logger = logging.getLogger(__name__)
MAX_PREFILL_TOKENS = 16384  # padded prompt tokens per prefill forward (16 Gundam pages of 915 ids)


@dataclass
class AdmittedGroup:
    """What one admission produced: rows now holding a prompt (with their jobs, prompt lengths, first logits
    [k, V] and timings), and rows given back because their page failed."""

    rows: list[int] = field(default_factory=list)
    jobs: list[Pending] = field(default_factory=list)
    prompt_lens: list[int] = field(default_factory=list)
    logits: list[torch.Tensor] = field(default_factory=list)  # one [k_chunk, V] per prefill forward, in row order
    timings: list[dict[str, float]] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    ready: torch.cuda.Event | None = None  # recorded on the admission stream after the group's last kernel


def prefill_chunks(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped for prefill: longest first, each chunk's padded size (count x longest) <= max_tokens
    (a chunk always takes at least one prompt)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    chunks: list[list[int]] = []
    for i in order:
        if chunks and (len(chunks[-1]) + 1) * lengths[chunks[-1][0]] <= max_tokens:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    return chunks


def prefill_pages(model, cache: KVCache, rows: list[int], jobs: list[Pending], max_tokens: int,
                  group: AdmittedGroup) -> None:
    """Encode the pages' views together, prefill their prompts into `rows`; add them to `group` (raises on failure)."""
    device = model.device
    blocks = iter(model.encode_images([v for job in jobs for v in job.req.images]))
    embeds = []
    for job in jobs:
        ids = torch.as_tensor(job.req.input_ids, dtype=torch.long).to(device)[None]
        embeds.append(model.embed(ids, features=[next(blocks) for _ in job.req.images])[0])  # (T_i, D)
    lengths = [e.shape[0] for e in embeds]
    for chunk in prefill_chunks(lengths, max_tokens):
        x = pad_sequence([embeds[i] for i in chunk], batch_first=True)  # (k, T_max, D), right-padded
        row_index = torch.tensor([rows[i] for i in chunk], device=device)
        last = torch.tensor([lengths[i] for i in chunk], device=device)
        group.logits.append(prefill(model, x, cache.at_rows(row_index), last))
        group.rows += [rows[i] for i in chunk]
        group.jobs += [jobs[i] for i in chunk]
        group.prompt_lens += [lengths[i] for i in chunk]


def admit_group(model, cache: KVCache, rows: list[int], jobs: list[Pending], max_tokens: int) -> AdmittedGroup:
    """Admit the pages together; if that fails, page by page, so only a broken page fails. Never raises."""
    t0 = time.perf_counter()
    group = AdmittedGroup()
    try:
        prefill_pages(model, cache, rows, jobs, max_tokens, group)
    except Exception as e:
        group = AdmittedGroup()
        if len(jobs) == 1:
            logger.warning("engine: prefill failed: %s", e)
            fail(jobs[0].future, e)
            group.released.append(rows[0])
            return group
        for row, job in zip(rows, jobs):
            one = admit_group(model, cache, [row], [job], max_tokens)
            for name in ("rows", "jobs", "prompt_lens", "logits", "released"):
                getattr(group, name).extend(getattr(one, name))
    if model.device.type == "cuda":
        group.ready = torch.cuda.Event()
        group.ready.record()
        group.ready.synchronize()  # this thread waits (not the decode thread): the timings below are the GPU's
    per_page = (time.perf_counter() - t0) / max(1, len(jobs))
    group.timings = [{"queue_s": t0 - job.t_submit, "prefill_s": per_page} for job in group.jobs]
    return group


class Admission:
    """Runs `admit_group` inline (CPU, or overlap off) or in one background thread on its own CUDA stream."""

    def __init__(self, model, cache: KVCache, max_tokens: int, overlap: bool) -> None:
        self.model, self.cache, self.max_tokens = model, cache, max_tokens
        self.overlap = overlap
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dsocr-admit") if overlap else None
        self._stream = torch.cuda.Stream(model.device) if overlap else None

    @property
    def depth(self) -> int:
        """Groups in flight: two when overlapped (one encoding, the next ready to go), else one."""
        return 2 if self.overlap else 1

    def submit(self, rows: list[int], jobs: list[Pending]) -> Future:
        """The group's future (AdmittedGroup); it carries `rows` and `jobs`, to fail them if admission breaks."""
        if self._pool is None:
            future: Future = Future()
            try:
                future.set_result(admit_group(self.model, self.cache, rows, jobs, self.max_tokens))
            except Exception as e:  # admit_group handles page errors; this is the machinery itself failing
                future.set_exception(e)
        else:
            # The rows may have been freed while a decode step that still writes them was in flight (the engine
            # hands tokens out after launching the step): the admission stream starts after that step.
            freed = torch.cuda.Event()
            freed.record()
            future = self._pool.submit(self._run, rows, jobs, freed)
        future.rows, future.jobs = rows, jobs
        return future

    def _run(self, rows: list[int], jobs: list[Pending], freed: torch.cuda.Event) -> AdmittedGroup:
        with torch.inference_mode(), torch.cuda.stream(self._stream):
            self._stream.wait_event(freed)
            return admit_group(self.model, self.cache, rows, jobs, self.max_tokens)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)

"""Batched greedy generation: continuous batching over one preallocated KV cache, fed from any thread.

Callers `submit()` page requests (image views + prompt ids + limits) from any thread and get a
`concurrent.futures.Future` back (`asubmit`/`astream` for asyncio, `stream` for a token iterator).
A worker thread (it exits after IDLE_EXIT_S without work) keeps up to `max_batch` pages in flight, each in one
row ("slot") of a static cache [layers, max_batch, H, row_len, hd] (row_len = max_seq_len, or prompt + window
under R-SWA):

- admission takes up to `max_prefill_pages` waiting pages into free rows: their views are encoded together
  (vision batched across pages), then their prompts are prefilled in one padded forward straight into their
  rows (admission.py), between decode steps (or, with `overlap_admission`, in a thread and CUDA stream of its
  own beside decoding, the rows starting once their group is done);
- then every live slot decodes one token (rows 0..n, n a power of two, so small jobs stay cheap), with
  the n-gram guard as tensor ops on the device; on CUDA the step replays a captured graph;
- a finished slot is freed and refilled by a later admission.

Host work per step: one read of the chosen ids (n ints) to detect EOS/limits and to refill slots, done while the
GPU runs the next step (the step is fed the ids on the device, so it need not wait for the host).
The one-sequence path in generate.py is the yardstick the tests compare against; both run the same
`prefill` and `decode_step`. The batch bookkeeping lives in batch.py, the memory plan in memory.py.
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import os
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future

import torch

from ..modeling.decode_attention import FP8
from ..modeling.decoder import KVCache
from .admission import MAX_PREFILL_TOKENS, Admission, AdmittedGroup
from .batch import (MAX_WINDOW, BatchState, PageOutput, PageRequest, Pending, StepInputs, decode_rows, fail,
                    to_device)
from .choose import MAX_WHITELIST
from .cuda_graphs import DecodeGraphs, GraphCaptureError
from .generate import decode_step
from .memory import DEFAULT_MEMORY_FRACTION, plan_max_batch

logger = logging.getLogger(__name__)
_DONE = object()
DEFAULT_ROW_LEN = 8192  # R-SWA models: KV slots per page by default (prompt + window), as long as v1's rows
IDLE_EXIT_S = 30.0  # an idle worker thread exits after this long
_LIVE_ENGINES: "weakref.WeakSet[Engine]" = weakref.WeakSet()
__all__ = ["Engine", "PageRequest", "PageOutput"]


class Engine:
    """Thread-safe batched generator over one model.

    Args:
        max_batch: pages in flight (KV cache rows). None: from the memory budget below.
        max_seq_len: prompt + new tokens per page (positions). None: the model's context (v1 8192,
            Unlimited-OCR 32768). It is also each page's KV cache length, except under R-SWA.
        max_prompt_len: R-SWA models only (Unlimited-OCR): the longest prompt a page may have; its KV cache
            row holds that plus the window, however long the answer (None: 8192 - window, rows as long as
            v1's; any single Gundam page, up to 32 tiles, or up to 29 pages in one pass).
        memory_fraction: share of free GPU memory the KV cache may take when max_batch is None (default 0.5:
            room is left for another model, e.g. a RAG app's embedder; benchmarks set max_batch).
        max_batch_tokens: alternatively, total KV tokens (max_batch = max_batch_tokens // max_seq_len).
        max_prefill_pages: pages admitted together (vision and prompt prefill batched across them).
        max_prefill_tokens: padded prompt tokens per prefill forward (0: one prompt per forward).
        overlap_admission: admit pages in a thread and CUDA stream of their own, beside decoding (CUDA only;
            off by default: on an H200 it measured slower than admitting between steps, see benchmarks/RESULTS.md).
        cuda_graphs: replay the decode step as CUDA graphs (default: on for CUDA in bf16/fp16).
        kv_dtype: None (the model's dtype) or "fp8": K/V as e4m3 with a scale per token and head, half the bytes
            a step reads (CUDA; off by default: see its fidelity in benchmarks/RESULTS.md).
        ragged_attention: decode steps attend over each row's own length with a Triton kernel instead of SDPA
            over the longest row's (implied by fp8; CUDA). Its CUDA graphs serve every length: one per row count.
        signals: keep each page's quality signals (mean and minimum log-probability of the chosen tokens, guard
            hits) on the device as it decodes; `PageOutput.signals` holds them (off: an empty dict).
    """

    def __init__(self, model, max_batch: int | None = None, max_seq_len: int | None = None, *,
                 memory_fraction: float = DEFAULT_MEMORY_FRACTION, max_batch_tokens: int | None = None,
                 max_prefill_pages: int = 16, max_prefill_tokens: int = MAX_PREFILL_TOKENS,
                 overlap_admission: bool = False, cuda_graphs: bool | None = None,
                 max_prompt_len: int | None = None, signals: bool = True, kv_dtype: str | None = None,
                 ragged_attention: bool = False) -> None:
        self.model, self.signals = model, signals
        d = model.config.decoder
        self.max_seq_len = max_seq_len or d.max_position_embeddings
        self.window = d.sliding_window
        if self.window is None:
            self.row_len = self.max_seq_len
        else:  # R-SWA: a row holds the prompt and a ring of `window` generated tokens
            self.row_len = min(self.max_seq_len, (max_prompt_len or DEFAULT_ROW_LEN - self.window) + self.window)
        runs_triton = model.device.type == "cuda" or os.environ.get("TRITON_INTERPRET")  # KVCache checks kv_dtype
        if (kv_dtype == FP8 or ragged_attention) and not runs_triton:
            raise ValueError("kv_dtype='fp8' and ragged_attention run a Triton kernel: they need CUDA")
        self.max_batch = max_batch or plan_max_batch(model, self.row_len, memory_fraction, max_batch_tokens,
                                                     kv_dtype=kv_dtype)
        self.max_prefill_pages = max(1, max_prefill_pages)
        self.cache = KVCache(d, self.max_batch, self.row_len, model.device, model.dtype, spare_slot=True,
                             kv_dtype=kv_dtype, ragged=ragged_attention)
        overlap = bool(overlap_admission) and model.device.type == "cuda"
        self.admission = Admission(model, self.cache, max_prefill_tokens, overlap)
        # fp32 grouped GEMMs fall back to a per-group loop on the host in torch, which cannot be captured
        use_graphs = model.device.type == "cuda" and model.dtype != torch.float32 if cuda_graphs is None else cuda_graphs
        self.graphs = DecodeGraphs(model, self.cache) if use_graphs else None
        self._cond = threading.Condition()
        self._waiting: deque[Pending] = deque()
        self._worker: threading.Thread | None = None
        self._closed = False
        _LIVE_ENGINES.add(self)
        logger.info("engine: max_batch %d, max_seq_len %d, KV row %d%s, cuda graphs %s, admission %s", self.max_batch,
                    self.max_seq_len, self.row_len, f" (R-SWA window {self.window})" if self.window else "",
                    bool(self.graphs), "overlapped" if overlap else "inline")

    # ---- submission API (any thread) ----------------------------------------------------------
    def submit(self, request: PageRequest, on_token: Callable[[int], None] | None = None) -> Future:
        """Queue one page; the Future resolves to its PageOutput. `on_token` runs in the worker thread."""
        self._validate(request)
        job = Pending(request, Future(), on_token, time.perf_counter())
        with self._cond:
            if self._closed:
                raise RuntimeError("engine is closed")
            self._waiting.append(job)
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="dsocr-engine", daemon=True)
                self._worker.start()
            self._cond.notify()
        return job.future

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking requests, let the worker finish what it holds, and wait for it."""
        with self._cond:
            self._closed = True
            worker = self._worker
            self._cond.notify_all()
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)
        self.admission.close()

    def generate(self, requests: Sequence[PageRequest]) -> list[PageOutput]:
        """All requests at once; outputs in request order."""
        futures = [self.submit(r) for r in requests]
        return [f.result() for f in futures]

    async def asubmit(self, request: PageRequest) -> PageOutput:
        return await asyncio.wrap_future(self.submit(request))

    def stream(self, request: PageRequest) -> Iterator[int]:
        """New token ids as they are decoded (EOS included when hit)."""
        q: queue.SimpleQueue = queue.SimpleQueue()
        future = self.submit(request, on_token=q.put)
        future.add_done_callback(lambda _: q.put(_DONE))
        while (tok := q.get()) is not _DONE:
            yield tok
        future.result()  # re-raise a failure

    async def astream(self, request: PageRequest) -> AsyncIterator[int]:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        future = self.submit(request, on_token=lambda t: loop.call_soon_threadsafe(q.put_nowait, t))
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(q.put_nowait, _DONE))
        while (tok := await q.get()) is not _DONE:
            yield tok
        future.result()

    def _validate(self, r: PageRequest) -> None:
        if len(r.input_ids) == 0:  # a padded batch would read a neighbour's padding as its last token
            raise ValueError("empty input_ids: a prompt holds at least BOS (build ids with build_input_ids())")
        if r.ngram_size and not r.window_size:
            raise ValueError("the engine's n-gram guard needs a window_size (official: 90 or 50)")
        if r.ngram_size and not 2 <= r.ngram_size <= r.window_size <= MAX_WINDOW:  # what the batched guard can do
            raise ValueError(f"the batched n-gram guard needs 2 <= ngram_size <= window_size <= {MAX_WINDOW}; got "
                             f"ngram_size {r.ngram_size}, window_size {r.window_size} (only this request fails)")
        if r.ngram_size and len(set(r.whitelist)) > MAX_WHITELIST:
            raise ValueError(f"the n-gram guard's whitelist holds {len(set(r.whitelist))} ids; the engine keeps at "
                             f"most {MAX_WHITELIST} per request (only this request fails)")
        need = len(r.input_ids) + r.max_new_tokens
        if need > self.max_seq_len:
            raise ValueError(f"prompt + max_new_tokens = {need} exceeds max_seq_len {self.max_seq_len}")
        if self.window is not None and len(r.input_ids) + min(r.max_new_tokens, self.window) > self.row_len:
            raise ValueError(f"a prompt of {len(r.input_ids)} tokens and the R-SWA window {self.window} exceed the "
                             f"KV row of {self.row_len}: build the engine with a larger max_prompt_len")
        placeholders = int((torch.as_tensor(r.input_ids) == self.model.image_token_id).sum())
        image_tokens = sum(v.num_image_tokens for v in r.images)
        if placeholders != image_tokens:
            raise ValueError(f"images give {image_tokens} image tokens but input_ids hold {placeholders} "
                             f"placeholders (id {self.model.image_token_id}); build ids with build_input_ids()")

    # ---- worker thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        state = BatchState(self.max_batch, self.model.config.decoder.vocab_size, self.model.device, self.window,
                           self.signals, self.cache.spare)
        inflight: deque[Future] = deque()  # admission groups, oldest first
        with torch.inference_mode():
            while True:
                with self._cond:
                    if not self._waiting and not state.live() and not inflight:
                        # Linger before exiting: a new thread re-creates its cuBLAS/cuDNN handles and
                        # attention plans (thread-local), ~0.3 s on the first page of every burst.
                        if not self._closed:
                            self._cond.wait(timeout=IDLE_EXIT_S)
                        if not self._waiting:
                            self._worker = None  # the next submit starts a new worker
                            return
                    groups = [self._reserve(state) for _ in range(self.admission.depth - len(inflight))]
                    groups = [g for g in groups if g is not None]
                while groups:  # outside the lock: inline admission runs the prefill here
                    inflight.append(self.admission.submit(*groups.pop(0)))
                # (no reference to a request is kept here: a page's views are freed once its prefill is done)
                # Start finished groups; wait for the oldest only when there is nothing to decode meanwhile.
                while inflight and (inflight[0].done() or not state.live()):
                    self._start_or_fail(inflight.popleft(), state)
                try:
                    self._decode(state)
                except Exception as e:
                    logger.exception("engine: decode step failed")
                    for s in state.live():
                        state.drop(s, e)

    def _reserve(self, state: BatchState) -> tuple[list[int], list[Pending]] | None:
        """Up to max_prefill_pages waiting pages and free rows for them, taken off the queue (lock held)."""
        rows, jobs = [], []
        free = iter(state.free_rows())
        while self._waiting and len(jobs) < self.max_prefill_pages:
            s = next(free, None)
            if s is None:
                break
            job = self._waiting.popleft()
            if job.future.set_running_or_notify_cancel():  # False: cancelled while waiting
                rows.append(s)
                jobs.append(job)
                state.reserved.add(s)
        return (rows, jobs) if jobs else None

    def _start_or_fail(self, admission: Future, state: BatchState) -> None:
        """Start an admission's rows; if the admission itself broke, its pages fail and its rows are freed (the
        engine goes on serving)."""
        try:
            self._start(admission.result(), state)
        except Exception as e:
            logger.exception("engine: admitting %d page(s) failed", len(admission.jobs))
            for job in admission.jobs:
                fail(job.future, e)
            state.reserved.difference_update(admission.rows)

    def _start(self, group: AdmittedGroup, state: BatchState) -> None:
        """Rows of a finished admission start decoding (their first token is chosen at the next step)."""
        state.reserved.difference_update(group.released)
        if not group.rows:
            return
        if group.ready is not None:  # the admission stream's writes come before this stream reads them
            torch.cuda.current_stream().wait_event(group.ready)
        logits = torch.cat(group.logits) if len(group.logits) > 1 else group.logits[0]
        state.logits[to_device(group.rows, logits.device)] = logits
        if group.ready is not None:
            for part in group.logits:  # allocated on the admission stream, read on this one
                part.record_stream(torch.cuda.current_stream())
        for s, job, T, timings in zip(group.rows, group.jobs, group.prompt_lens, group.timings):
            eos = self.model.eos_token_id if job.req.eos_token_id is None else job.req.eos_token_id
            state.start(s, job, T, eos, timings)

    def _decode(self, state: BatchState) -> None:
        """Choose a token for every live row, launch the decode step that feeds them (rows 0..n), then hand them
        out while the GPU runs it: the host's per-row work overlaps the step instead of preceding it."""
        live = state.live()
        if not live:
            return
        chosen = state.choose(decode_rows(max(live) + 1, self.max_batch))
        ids = state.read_back(chosen)
        step = state.next_inputs(chosen)
        try:
            self._step(state, step)
        finally:  # a failed step still hands out what was chosen before it
            tokens = ids()
            for s in live:
                state.emit(s, tokens[s])

    def _step(self, state: BatchState, step: StepInputs) -> None:
        n = step.n
        if self.graphs is not None:
            try:
                state.logits[:n] = self.graphs.step(step)
                return
            except GraphCaptureError as e:  # keep serving, eagerly, rather than fail every page
                logger.warning("%s; decoding eagerly from now on", e)
                self.graphs = None
        state.logits[:n] = decode_step(self.model, step.tokens, step.positions, self.cache.prefix(n), step.kv_len,
                                       step.slots, step.visible)


@atexit.register
def _close_all() -> None:
    """Stop idle workers before the interpreter tears down (a thread parked in torch state at exit can abort)."""
    for engine in list(_LIVE_ENGINES):
        engine.close(timeout=2.0)

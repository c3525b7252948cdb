"""Batched greedy generation: continuous batching over one preallocated KV cache, fed from any thread.

Callers `submit()` page requests (image views + prompt ids + limits) from any thread and get a
`concurrent.futures.Future` back (`asubmit`/`astream` for asyncio, `stream` for a token iterator).
A worker thread (it exits after IDLE_EXIT_S without work) keeps up to `max_batch` pages in flight, each in one
row ("slot") of a static cache [layers, max_batch, H, row_len, hd] (row_len = max_seq_len, or prompt + window
under R-SWA):

- each step admits up to `max_prefill_pages` waiting pages into free slots: their views are encoded
  together (vision batched across pages), then each prompt is prefilled into its slot; admitting a few
  per step lets decoding of the others go on (time to first token stays low under a long queue);
- then every live slot decodes one token (rows 0..n, n a power of two, so small jobs stay cheap), with
  the n-gram guard as tensor ops on the device; on CUDA the step replays a captured graph;
- a finished slot is freed and refilled at the next step.

Host work per step: one read of the chosen ids (n ints) to detect EOS/limits and to refill slots.
The one-sequence path in generate.py is the yardstick the tests compare against; both run the same
`prefill` and `decode_step`. The batch bookkeeping lives in batch.py, the memory plan in memory.py.
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future

import torch

from ..modeling.decoder import KVCache
from .batch import MAX_WINDOW, BatchState, PageOutput, PageRequest, Pending, decode_rows, fail
from .cuda_graphs import DecodeGraphs, GraphCaptureError
from .generate import decode_step, prefill
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
        max_prefill_pages: pages admitted per step (their prefill interleaves with decoding).
        cuda_graphs: replay the decode step as CUDA graphs (default: on for CUDA in bf16/fp16).
        signals: keep each page's quality signals (mean and minimum log-probability of the chosen tokens, guard
            hits) on the device as it decodes; `PageOutput.signals` holds them (off: an empty dict).
    """

    def __init__(self, model, max_batch: int | None = None, max_seq_len: int | None = None, *,
                 memory_fraction: float = DEFAULT_MEMORY_FRACTION, max_batch_tokens: int | None = None,
                 max_prefill_pages: int = 16, cuda_graphs: bool | None = None, max_prompt_len: int | None = None,
                 signals: bool = True) -> None:
        self.model = model
        self.signals = signals
        d = model.config.decoder
        self.max_seq_len = max_seq_len or d.max_position_embeddings
        self.window = d.sliding_window
        if self.window is None:
            self.row_len = self.max_seq_len
        else:  # R-SWA: a row holds the prompt and a ring of `window` generated tokens
            self.row_len = min(self.max_seq_len, (max_prompt_len or DEFAULT_ROW_LEN - self.window) + self.window)
        self.max_batch = max_batch or plan_max_batch(model, self.row_len, memory_fraction, max_batch_tokens)
        self.max_prefill_pages = max(1, max_prefill_pages)
        self.cache = KVCache(d, self.max_batch, self.row_len, model.device, model.dtype)
        # fp32 grouped GEMMs fall back to a per-group loop on the host in torch, which cannot be captured
        use_graphs = model.device.type == "cuda" and model.dtype != torch.float32 if cuda_graphs is None else cuda_graphs
        self.graphs = DecodeGraphs(model, self.cache) if use_graphs else None
        self._cond = threading.Condition()
        self._waiting: deque[Pending] = deque()
        self._worker: threading.Thread | None = None
        self._closed = False
        _LIVE_ENGINES.add(self)
        logger.info("engine: max_batch %d, max_seq_len %d, KV row %d%s, cuda graphs %s", self.max_batch,
                    self.max_seq_len, self.row_len, f" (R-SWA window {self.window})" if self.window else "",
                    bool(self.graphs))

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
        if r.ngram_size and not r.window_size:
            raise ValueError("the engine's n-gram guard needs a window_size (official: 90 or 50)")
        if r.ngram_size and not 2 <= r.ngram_size <= r.window_size <= MAX_WINDOW:  # what the batched guard can do
            raise ValueError(f"the batched n-gram guard needs 2 <= ngram_size <= window_size <= {MAX_WINDOW}; got "
                             f"ngram_size {r.ngram_size}, window_size {r.window_size} (only this request fails)")
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
                           self.signals)
        with torch.inference_mode():
            while True:
                with self._cond:
                    if not self._waiting and not state.live():
                        # Linger before exiting: a new thread re-creates its cuBLAS/cuDNN handles and
                        # attention plans (thread-local), ~0.3 s on the first page of every burst.
                        if not self._closed:
                            self._cond.wait(timeout=IDLE_EXIT_S)
                        if not self._waiting:
                            self._worker = None  # the next submit starts a new worker
                            return
                    admitted = self._admit(state)
                if admitted:
                    self._prefill_isolated(admitted, state)
                    admitted = None  # rows keep what decoding needs: the requests (and their views) can go
                try:
                    self._decode(state)
                except Exception as e:
                    logger.exception("engine: decode step failed")
                    for s in state.live():
                        state.drop(s, e)

    def _admit(self, state: BatchState) -> list[tuple[int, Pending]]:
        admitted = []
        free = iter(state.free_rows())
        while self._waiting and len(admitted) < self.max_prefill_pages:
            s = next(free, None)
            if s is None:
                break
            job = self._waiting.popleft()
            if job.future.set_running_or_notify_cancel():  # False: cancelled while waiting
                admitted.append((s, job))
        return admitted

    def _prefill_isolated(self, admitted: list[tuple[int, Pending]], state: BatchState) -> None:
        """Prefill together; if that fails, page by page, so only a broken page fails."""
        try:
            self._prefill(admitted, state)
            return
        except Exception as e:
            if len(admitted) == 1:
                logger.warning("engine: prefill failed: %s", e)
                state.slots[admitted[0][0]] = None
                fail(admitted[0][1].future, e)
                return
        for one in admitted:
            self._prefill_isolated([one], state)

    def _prefill(self, admitted: list[tuple[int, Pending]], state: BatchState) -> None:
        """Encode the admitted pages' views together, then prefill each prompt into its row."""
        t0 = time.perf_counter()
        blocks = iter(self.model.encode_images([v for _, job in admitted for v in job.req.images]))
        t_vision = (time.perf_counter() - t0) / len(admitted)
        for s, job in admitted:
            t1 = time.perf_counter()
            r = job.req
            ids = torch.as_tensor(r.input_ids, dtype=torch.long, device=self.model.device)[None]
            x = self.model.embed(ids, features=[next(blocks) for _ in r.images])
            T = ids.shape[1]
            state.logits[s] = prefill(self.model, x, torch.arange(T, device=ids.device)[None], self.cache.slot(s), T)[0]
            eos = self.model.eos_token_id if r.eos_token_id is None else r.eos_token_id
            state.start(s, job, T, eos, {"queue_s": t0 - job.t_submit, "prefill_s": t_vision + time.perf_counter() - t1})

    def _decode(self, state: BatchState) -> None:
        """Choose a token for every live row, hand it out, then run one decode step over rows 0..n."""
        live = state.live()
        if not live:
            return
        chosen = state.choose(decode_rows(max(live) + 1, self.max_batch))
        for s in live:
            state.emit(s, chosen[s])
        step = state.next_inputs(self.model.device)
        if step is None:
            return
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

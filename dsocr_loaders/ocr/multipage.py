"""Several pages in one pass (Unlimited-OCR): one request for up to N pages, the answer split back per page.

The model reads the pages in its multi-page mode (every page in the 1024 "base" view, 273 tokens each) with
one `<image>` per page and its multi-page instruction, and starts every page's answer with a literal
`<PAGE>` (FAMILY.md §3.3, §3.6). The answer is split on that marker and matched to the pages by order, as
the reference does. A page whose part cannot be trusted is read again on its own (one page per pass, the
usual single-page settings): every page when the number of parts is not the number of pages, and the last,
cut-off part (and any page after it) when the pass hit its token limit.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from concurrent.futures import Future

from .types import OCREngine, OCRRequest, OCRResponse

logger = logging.getLogger(__name__)


def split_pages(text: str, pages: int, finish_reason: str | None, marker: str = "<PAGE>") -> list[str | None]:
    """The answer's part for each of `pages` pages, None for a page to read again alone."""
    parts = text.split(marker)[1:]  # text before the first marker is not a page (the reference drops it too)
    if finish_reason == "length":  # the last part is cut off: keep only the parts before it
        complete = parts[:-1]
        if len(complete) > pages:
            return [None] * pages
        return complete + [None] * (pages - len(complete))
    if len(parts) != pages:
        return [None] * pages
    return parts


def submit_pass(engine: OCREngine, images: Sequence, pass_request: OCRRequest, single_request: OCRRequest,
                marker: str = "<PAGE>") -> list[Future]:
    """Submit one multi-page pass over `images`; one Future per page resolving to that page's OCRResponse
    (its part of the answer, or the answer of its own single-page request when the part cannot be used)."""
    futures: list[Future] = [Future() for _ in images]
    whole = engine.submit(dataclasses.replace(pass_request, image=tuple(images)))

    def read_alone(i: int) -> None:
        try:
            inner = engine.submit(dataclasses.replace(single_request, image=images[i]))
        except Exception as e:  # a refusal up front fails this page only
            _settle(futures[i], exception=e)
            return
        inner.add_done_callback(lambda f: _copy(f, futures[i]))

    def split(done: Future) -> None:
        if done.cancelled():
            for f in futures:
                f.cancel()
            return
        error = done.exception()
        if error is not None:
            for f in futures:
                _settle(f, exception=error)
            return
        response: OCRResponse = done.result()
        parts = split_pages(response.text, len(images), response.finish_reason, marker)
        alone = [i for i, p in enumerate(parts) if p is None]
        if alone:
            logger.info("multi-page pass of %d pages: %d part(s) for %d page(s), finish %s; reading page(s) %s alone",
                        len(images), response.text.count(marker), len(images), response.finish_reason,
                        [i + 1 for i in alone])
        timings = {**response.timings, "pass_pages": float(len(images)),
                   "pass_text_tokens": float(response.text_tokens or 0)}
        for i, part in enumerate(parts):
            if part is None:
                read_alone(i)
            else:  # the pass's token count is not split per page: it stays in the timings
                _settle(futures[i], result=OCRResponse(part, "eos", None, dict(timings)))

    whole.add_done_callback(split)
    for f in futures:  # a caller that gives up on every page cancels the pass
        f.add_done_callback(lambda _: all(g.cancelled() for g in futures) and whole.cancel())
    return futures


def _copy(source: Future, target: Future) -> None:
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        _settle(target, exception=source.exception())
    else:
        _settle(target, result=source.result())


def _settle(future: Future, *, result=None, exception: BaseException | None = None) -> None:
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)


"""Streaming many inputs through a model: each input decoded and prepared in worker threads (in
order, a bounded number in flight), the prepared ones run in batches, and one outcome per input
yielded as soon as its batch is done — the result, or the exception that input raised.

This is what the models' ``*_stream`` methods (``predict_stream``, ``translate_stream``,
``caption_stream``) are made of: however many inputs, memory holds about one batch, and a
damaged or missing input costs only its own answer. Batches are formed from the inputs that were
prepared successfully, so the inputs that succeed are batched exactly as the one-call methods
(``predict`` …) batch the same list without the failures.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from ..errors import DlwpError, ImageInputError
from .images import ImageItem, image_sources
from .pipeline import default_workers, ordered_map

__all__ = ["INPUT_ERRORS", "stream_batches"]

log = logging.getLogger(__name__)

P = TypeVar("P")
R = TypeVar("R")
#: what one input may raise without stopping the others (the CLI's per-input error records)
INPUT_ERRORS = (DlwpError, OSError, ValueError, TypeError, MemoryError)


def _one_item(item: Any) -> ImageItem:
    sources, _ = image_sources(item)
    images = [image for source in sources for image in source()]
    if len(images) != 1:
        raise ImageInputError(
            f"this input holds {len(images)} images; a stream takes one image per input. Pass the images one by one."
        )
    return images[0]


def stream_batches(
    inputs: Iterable[Any],
    prepare: Callable[[ImageItem], P],
    run: Callable[[list[P]], list[R]],
    *,
    batch_size: int,
    on_cpu: bool,
    workers: int | None = None,
) -> Iterator[tuple[Any, R | BaseException]]:
    """``(input, outcome)`` for each of ``inputs``, in order: ``outcome`` is ``run``'s result for that
    input, or the exception (one of :data:`INPUT_ERRORS`) that decoding, ``prepare`` or the input's
    batch raised.

    ``prepare(image)`` runs in worker threads (``workers``, default one per core up to 4); ``run``
    gets lists of at most ``batch_size`` prepared inputs and returns one result for each. On a CPU
    (``on_cpu``) the workers prepare a batch and then wait while ``run`` works on it (sharing the
    cores makes both slower); otherwise they prepare the next batch meanwhile. ``inputs`` is read
    lazily, a bounded number ahead.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")

    def prepare_one(item: Any) -> tuple[Any, Any, bool]:
        try:
            return item, prepare(_one_item(item)), True
        except INPUT_ERRORS as exc:
            log.debug("input %r failed: %s", item, exc)
            return item, exc, False

    workers = default_workers() if workers is None else workers
    prepared = ordered_map(
        prepare_one, inputs, workers=workers, ahead=batch_size if on_cpu else 2 * batch_size, overlap=not on_cpu
    )
    pending: deque[tuple[Any, Any, bool]] = deque()  # prepared, not yet answered, in input order
    ready = 0  # how many of them were prepared successfully
    try:
        for entry in prepared:
            pending.append(entry)
            ready += entry[2]
            if ready == batch_size:
                yield from _answer(pending, run)
                ready = 0
        yield from _answer(pending, run)
    finally:
        prepared.close()


def _answer(pending: deque, run: Callable[[list[Any]], list[Any]]) -> Iterator[tuple[Any, Any]]:
    """Run the successfully prepared entries of ``pending`` as one batch; yield every entry's outcome
    in order and empty ``pending``."""
    batch = [value for _, value, ok in pending if ok]
    results: Iterator[Any] = iter(())
    failure: BaseException | None = None
    if batch:
        try:
            answers = run(batch)
            if len(answers) != len(batch):
                raise AssertionError(f"a batch of {len(batch)} gave {len(answers)} results")
            results = iter(answers)
        except INPUT_ERRORS as exc:  # the whole batch failed: each of its inputs says why
            failure = exc
    while pending:
        item, value, ok = pending.popleft()
        yield item, (failure if failure is not None else next(results)) if ok else value

"""Running per-image preparation (decode, resize, crop) in worker threads, in the order of the
inputs and with a bounded number of images in flight.

PIL releases the GIL while it decodes and resamples, so the workers use every core. Whether they
also run while the caller runs the model (a GPU's forward pass) or wait for it (a CPU's, which
needs the same cores) is the caller's choice: ``ordered_map(..., overlap=...)``.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

__all__ = ["default_workers", "ordered_map"]

S = TypeVar("S")
T = TypeVar("T")


def default_workers() -> int:
    """Worker threads for image preparation: the number of usable cores, between 1 and 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def ordered_map(fn: Callable[[S], T], items: Iterable[S], *, workers: int, ahead: int,
                overlap: bool = True) -> Iterator[T]:
    """``map(fn, items)`` computed by ``workers`` threads, at most ``ahead`` results ahead of the
    consumer. With ``overlap`` the workers start the next item as soon as one is taken; without
    it they start the next ``ahead`` items only once the consumer has taken all of the previous
    ones, so they sit idle while the consumer works on what it took (on a CPU the model's own
    threads then have the cores to themselves: parallel operations whose threads are preempted
    wait for each other). An exception from ``fn`` is raised where its result would have been
    yielded; leaving the iterator early (or an exception) cancels what has not started and waits
    for what has, so no thread outlives the call (except after Ctrl-C, which does not wait)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    ahead = max(1, ahead)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dlwp-prepare")
    pending: deque[Future[T]] = deque()
    source = iter(items)
    interrupted = False
    try:
        while True:
            if overlap or not pending:
                for item in source:
                    pending.append(pool.submit(fn, item))
                    if len(pending) >= ahead:
                        break
            if not pending:
                return
            yield pending.popleft().result()
    except KeyboardInterrupt:   # don't make Ctrl-C wait for a download already running
        interrupted = True
        raise
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)

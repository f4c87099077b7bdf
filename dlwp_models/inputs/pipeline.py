"""Running per-image preparation (decode, resize, crop) in worker threads, in the order of the
inputs and with a bounded number of images in flight.

PIL releases the GIL while it decodes and resamples, so the workers use every core. Whether they
also run while the caller runs the model (a GPU's forward pass) or wait for it (a CPU's, which
needs the same cores) is the caller's choice: ``ordered_map(..., overlap=...)``.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["usable_cores", "default_workers", "ordered_map"]

S = TypeVar("S")
T = TypeVar("T")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it, else all)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers() -> int:
    """Worker threads for image preparation: the number of usable cores, between 1 and 4."""
    return max(1, min(4, usable_cores()))


class _DaemonPool:
    """The few threads :func:`ordered_map` needs, as daemon threads.

    ``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter exits, so a
    Ctrl-C during a slow image download would still wait for that download (up to its deadline)
    before the process could end. A worker here that is still busy when the caller gives up is
    simply abandoned: nothing it does writes anywhere, and the process exits at once."""

    def __init__(self, workers: int) -> None:
        self._tasks: queue.SimpleQueue[tuple[Future, Callable[[Any], Any], Any] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"dlwp-prepare-{i}", daemon=True) for i in range(workers)
        ]
        self._pending: list[Future] = []
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            future, fn, item = task
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(item))
                except BaseException as exc:
                    future.set_exception(exc)

    def submit(self, fn: Callable[[S], T], item: S) -> Future[T]:
        future: Future[T] = Future()
        self._pending = [f for f in self._pending if not f.done()] + [future]
        self._tasks.put((future, fn, item))
        return future

    def shutdown(self, *, wait: bool) -> None:
        """Cancel what has not started; stop the threads (waiting for running tasks when ``wait``)."""
        for future in self._pending:
            future.cancel()
        for _ in self._threads:
            self._tasks.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


def ordered_map(
    fn: Callable[[S], T], items: Iterable[S], *, workers: int, ahead: int, overlap: bool = True
) -> Iterator[T]:
    """``map(fn, items)`` computed by ``workers`` threads, at most ``ahead`` results ahead of the
    consumer. With ``overlap`` the workers start the next item as soon as one is taken; without
    it they start the next ``ahead`` items only once the consumer has taken all of the previous
    ones, so they sit idle while the consumer works on what it took (on a CPU the model's own
    threads then have the cores to themselves: parallel operations whose threads are preempted
    wait for each other). An exception from ``fn`` is raised where its result would have been
    yielded; leaving the iterator early (or an exception) cancels what has not started and waits
    for what has, so no thread outlives the call (except after Ctrl-C, which does not wait: the
    threads are daemons, so the process can end at once)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    ahead = max(1, ahead)
    pool = _DaemonPool(workers)
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
    except KeyboardInterrupt:  # don't make Ctrl-C wait for a download already running
        interrupted = True
        raise
    finally:
        pool.shutdown(wait=not interrupted)

"""Request batching: per model, a bounded queue and one inference worker thread.

The worker takes the oldest waiting job, then waits at most ``max_wait`` seconds (counted from
when that job arrived) for up to ``max_batch - 1`` more jobs with the same key (the key says which
inputs can be stacked: same preprocessed shape, same decoding settings), and runs them as one
batch. Jobs with other keys keep their place in the queue. The event loop only enqueues and
awaits; the forward pass runs on the worker thread.

A request takes its place in the queue (:meth:`Batcher.admit`) before its upload is decoded: the
bound ``max_queue`` counts the requests still being decoded and preprocessed, so under overload
the surplus is refused at once, costing neither a decode nor the memory of a decoded photo.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..errors import BatcherClosed, QueueFull

__all__ = ["Batcher", "Job", "Admission"]

log = logging.getLogger(__name__)

#: runs one batch: (key, items) -> one result per item, in order
RunBatch = Callable[[Hashable, Sequence[Any]], Sequence[Any]]


@dataclass(eq=False)
class Job:
    """One request's preprocessed input, waiting for its batch; ``future`` gets its result."""

    key: Hashable
    item: Any
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.monotonic)
    cancelled: bool = False


class Admission:
    """A place in a model's queue, held from a request's arrival until :meth:`submit` (or until
    the request fails before that, when the place is given back)."""

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher
        self.submitted = False

    def submit(self, key: Hashable, item: Any) -> Job:
        """Queue ``item`` in the place held; await ``job.future`` for its result."""
        self.submitted = True  # the place is used up, whether the job is queued or refused
        return self._batcher._enqueue(key, item)


class Batcher:
    """A bounded queue and one worker thread for one model (see the module docstring).

    ``on_batch(size, seconds)`` is called after every batch (for metrics)."""

    def __init__(
        self,
        name: str,
        run_batch: RunBatch,
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError(
                f"max_batch and max_queue must be at least 1 and max_wait_s at least 0, got "
                f"{max_batch}, {max_queue}, {max_wait_s}."
            )
        self.name = name
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self._run_batch = run_batch
        self._on_batch = on_batch
        self._cond = threading.Condition()
        self._queue: deque[Job] = deque()
        self._incoming = 0  # admitted requests not queued yet (reading, decoding)
        self._closing = False
        self._stopping = False  # no new request; those already under way still go on
        self._thread = threading.Thread(target=self._work, name=f"dlwp-serve-{name}", daemon=True)
        self._thread.start()

    def depth(self) -> int:
        """Jobs waiting for a batch (not counting the batch running now)."""
        with self._cond:
            return len(self._queue)

    def pending(self) -> int:
        """Places taken in the queue: the jobs waiting and the admitted requests being prepared."""
        with self._cond:
            return self._taken()

    def _taken(self) -> int:
        """Places taken (call holding the condition's lock)."""
        return len(self._queue) + self._incoming

    def check_room(self) -> None:
        """Raise :class:`QueueFull` or :class:`BatcherClosed` as :meth:`admit` would now, without
        taking a place: for refusing a request before its upload is read (and every new request
        once the server stops: :meth:`stop_admitting`)."""
        with self._cond:
            if self._stopping:
                raise BatcherClosed(f"the server is shutting down; {self.name} takes no new requests.")
            self._check_room()

    @contextmanager
    def admit(self) -> Iterator[Admission]:
        """Take a place in the queue for a request whose input is still to be prepared;
        :meth:`Admission.submit` queues it there. Raises :class:`QueueFull` or
        :class:`BatcherClosed` at once when there is no place; the place is given back if the
        block ends without submitting. Call from the event loop."""
        with self._cond:
            self._check_room()
            self._incoming += 1
        admission = Admission(self)
        try:
            yield admission
        finally:
            if not admission.submitted:
                with self._cond:
                    self._incoming -= 1

    def _check_room(self) -> None:
        """Raise unless a new request may take a place (call holding the condition's lock)."""
        if self._closing:
            raise BatcherClosed(f"the server is shutting down; {self.name} takes no new requests.")
        if (taken := self._taken()) >= self.max_queue:
            raise QueueFull(f"{self.name} has {taken} requests queued already.")

    def _enqueue(self, key: Hashable, item: Any) -> Job:
        """Queue an admitted request's ``item`` in the place it holds."""
        loop = asyncio.get_running_loop()
        job = Job(key, item, loop.create_future(), loop)
        with self._cond:
            self._incoming -= 1
            if self._closing:
                raise BatcherClosed(f"the server is shutting down; {self.name} takes no new requests.")
            self._queue.append(job)
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Forget ``job`` (its client went away): dropped if still queued, its result discarded if
        its batch is running."""
        with self._cond:
            job.cancelled = True
            try:
                self._queue.remove(job)
            except ValueError:
                pass
        job.future.cancel()

    def close(self, timeout: float | None = None) -> None:
        """Take no new jobs, finish the queued ones, and stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def stop_admitting(self) -> None:
        """Refuse new requests (:meth:`check_room`); those already under way (their upload being
        read or decoded) are still queued, and the queue still runs, until :meth:`drain`."""
        with self._cond:
            self._stopping = True

    def drain(self) -> None:
        """Take no new jobs and answer the queued ones :class:`BatcherClosed` at once (their
        clients get a 503); the batch running now finishes, then the worker stops."""
        with self._cond:
            self._closing = True
            queued = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in queued:
            _resolve(job, error=BatcherClosed(f"the server is shutting down; {self.name} takes no new requests."))

    def running(self) -> bool:
        """Whether the worker thread is still alive (a batch running)."""
        return self._thread.is_alive()

    def idle(self) -> bool:
        """Whether nothing is queued and no admitted request is still being prepared."""
        with self._cond:
            return self._taken() == 0

    # ----------------------------------------------------------------------- worker thread

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(batch)

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while True:
                if not self._queue:
                    if self._closing:
                        return None
                    self._cond.wait()
                    continue
                first = self._queue[0]
                same = [job for job in self._queue if job.key == first.key][: self.max_batch]
                remaining = first.enqueued + self.max_wait_s - time.monotonic()
                if len(same) >= self.max_batch or remaining <= 0 or self._closing:
                    for job in same:
                        self._queue.remove(job)
                    return same
                self._cond.wait(remaining)

    def _run(self, batch: list[Job]) -> None:
        started = time.perf_counter()
        try:
            results = self._run_batch(batch[0].key, [job.item for job in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: a batch of {len(batch)} gave {len(results)} results")
        except Exception as exc:  # every job of the batch gets the error; the worker lives on
            log.exception("%s: a batch of %d failed", self.name, len(batch))
            for job in batch:
                _resolve(job, error=exc)
        else:
            for job, result in zip(batch, results):
                _resolve(job, result=result)
        if self._on_batch is not None:
            self._on_batch(len(batch), time.perf_counter() - started)


def _resolve(job: Job, *, result: Any = None, error: BaseException | None = None) -> None:
    if job.cancelled:
        return

    def settle() -> None:
        if job.future.done():  # cancelled meanwhile: the client has gone
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the event loop has closed: nobody is waiting
        pass

"""The batch-job loop shared by both engines: expand the inputs lazily, skip those a resumed
output already answers, hand the rest to an engine, write each record as it comes, show progress,
and end with the job's :class:`Outcome` (how many inputs failed)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from ..tasks import ModelSpec, Task, error_record
from . import inputs as batch_inputs
from .records import open_writer, records_lock, resume

__all__ = ["Job", "Outcome", "Settings", "run_job", "local_engine"]


@dataclass(frozen=True)
class Job:
    """Everything needed to answer inputs of one task, on any machine (picklable)."""

    task: Task  # the task, with the options that change its answers
    model: ModelSpec  # which network, weights, device and backend
    batch_size: int | None = None  # None: the task's (or the model's) default


#: an engine takes a job, gets ready (builds the model, starts Ray, …) and returns the function
#: that turns the inputs to do into records
Engine = Callable[[Job], Callable[[Iterable[str]], Iterable[dict[str, Any]]]]


@dataclass(frozen=True)
class Settings:
    """How to run a job: where records go and what to do on failures."""

    specs: tuple[str, ...]  # INPUTS as given
    output: str  # a .jsonl / .csv path, or "-"
    resume: bool = False
    stop_on_error: bool = False
    progress: bool | None = None  # None: on a terminal only
    quiet: bool = False  # no download bars


def local_engine(quiet: bool) -> Engine:
    """This process: the model is built once; inputs are decoded in worker threads, in order."""

    def start(job: Job) -> Callable[[Iterable[str]], Iterator[dict[str, Any]]]:
        model = job.model.build(progress=not quiet)
        job.task.check(model)

        def answer(todo: Iterable[str]) -> Iterator[dict[str, Any]]:
            for name, outcome in job.task.stream(model, todo, batch_size=job.batch_size, backend=job.model.backend):
                yield job.task.record(name, outcome)

        return answer

    return start


def header_of(job: Job) -> dict[str, Any]:
    """What a records file says of the job that writes it (see :mod:`.records`): its task, the
    options that change answers, the model, weights and backend."""
    return {
        "task": job.task.name,
        "options": job.task.options(),
        "model": job.model.model,
        "weights": job.model.weights or "DEFAULT",
        "backend": job.model.backend,
    }


@dataclass(frozen=True)
class Outcome:
    """How a job went: inputs seen, how many failed, and the failure it stopped at (--on-error stop)."""

    seen: int
    failed: int
    stopped_at: dict[str, Any] | None = None

    @property
    def status(self) -> int:
        """The exit status: 0 when every input succeeded, else 1."""
        return 1 if self.failed else 0


def run_job(job: Job, settings: Settings, engine: Engine) -> Outcome:
    """Run ``job`` on the inputs of ``settings`` through ``engine``, holding the records file's lock."""
    with records_lock(settings.output):
        return _run_locked(job, settings, engine)


def _run_locked(job: Job, settings: Settings, engine: Engine) -> Outcome:
    header = header_of(job)
    done, job_id = resume(settings.output, job.task, header) if settings.resume else (set(), None)
    job_id = job_id or uuid.uuid4().hex  # a resumed job keeps its id: translate may replace its own pictures
    job = replace(job, task=job.task.for_job(job_id))
    total = _total(settings)
    answer = engine(job)  # a model that cannot be built fails before the output is touched
    writer = open_writer(settings.output, job.task, {**header, "job": job_id}, append=settings.resume)
    counts = {"seen": 0, "failed": 0}
    claimed: set[str] = set()
    early: list[dict[str, Any]] = []  # records decided before running (translate's name clashes)

    def todo() -> Iterator[str]:
        for item in batch_inputs.expand(settings.specs, sys.stdin):
            counts["seen"] += 1
            out = job.task.output_of(item)
            if out is not None:  # two inputs must not write one file
                if out in claimed:
                    if item not in done:
                        early.append(
                            error_record(
                                item,
                                f"another input is already written to {out}; rename "
                                "one of them or write them into different folders.",
                            )
                        )
                    continue
                claimed.add(out)
            if item in done:
                bar.update(1)
                continue
            yield item

    bar = _progress_bar(total, settings)

    def emit(record: dict[str, Any]) -> None:
        writer.write(record)
        bar.update(1)
        if "error" in record:
            counts["failed"] += 1
            if settings.stop_on_error:
                raise _Stop(record)

    records = answer(todo())
    try:
        for record in records:
            while early:
                emit(early.pop(0))
            emit(record)
        while early:
            emit(early.pop(0))
    except _Stop as stop:
        return Outcome(counts["seen"], counts["failed"], stop.record)
    finally:
        close = getattr(records, "close", None)
        if close is not None:
            close()
        bar.close()
        writer.close()
    return Outcome(counts["seen"], counts["failed"])


class _Stop(Exception):
    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(record["error"])
        self.record = record


def _total(settings: Settings) -> int | None:
    if not _show_progress(settings) or not batch_inputs.is_known_count(settings.specs):
        return None
    return batch_inputs.count(settings.specs)


def _show_progress(settings: Settings) -> bool:
    if settings.progress is not None:
        return settings.progress
    return not settings.quiet and sys.stderr.isatty()


def _progress_bar(total: int | None, settings: Settings) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="img",
        file=sys.stderr,
        disable=not _show_progress(settings),
        dynamic_ncols=True,
        smoothing=0.1,
    )

"""What each batch task does with a model: a :class:`Job` (picklable, so a Ray actor can rebuild
the model from it), :func:`load_model` through dlwp's normal path, and :func:`job_records`, one
record per input from the model's ``*_stream`` method.

The records carry what ``predict``, ``caption`` and ``translate`` return for the same input:
classify ``{"input", "predictions": [{"label", "index", "percent"}, …]}``, caption ``{"input",
"caption"}``, translate ``{"input", "output"}`` (the PNG it wrote), a failure ``{"input", "error"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import urlsplit

from ...errors import DlwpError

__all__ = ["Job", "TASK_MODELS", "error_record", "error_text", "job_records", "load_model", "outcome_record", "output_path",
           "save_png"]

#: the model each task runs when the task has no --model
TASK_MODELS = {"caption": "neuraltalk2", "translate": "cyclegan"}


@dataclass(frozen=True)
class Job:
    """Everything needed to answer inputs of one task, on any machine."""

    task: str                       # classify | caption | translate
    model: str
    weights: str | None = None
    device: str = "cpu"
    batch_size: int | None = None   # None: the task's default
    topk: int = 5
    beam_size: int = 2
    size: int | None = 256
    preset: str = "trained"
    output_dir: str | None = None   # translate's -o DIR
    overwrite: bool = False         # translate may replace existing pictures (--overwrite, --resume)
    backend: str = "eager"          # classify and translate: --backend

    @property
    def default_batch_size(self) -> int:
        """Inputs per batch: --batch-size, else the model's own default (classifiers), 8 for
        captions, 4 for translations."""
        return self.batch_size or {"caption": 8, "translate": 4}.get(self.task, 0)


def load_model(job: Job, *, progress: bool = False) -> Any:
    """The job's model, built by :func:`dlwp_models.hub.build` (cache, mirrors and DLWP_OFFLINE
    apply), on the job's device."""
    from ...hub import build

    model = build(job.model, weights=job.weights or "DEFAULT", progress=progress, map_location="cpu")
    return model.to(job.device)


def error_text(exc: BaseException) -> str:
    """An exception as the one line a user reads."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc) or type(exc).__name__


def error_record(item: str, exc: BaseException | str) -> dict[str, str]:
    """The record of an input that failed."""
    return {"input": item, "error": exc if isinstance(exc, str) else error_text(exc)}


def output_path(job: Job, item: str) -> Path:
    """Where translate writes an input's picture: ``<output_dir>/<stem>_zebra.png``."""
    stem = Path(urlsplit(item).path if "://" in item else item).stem or "image"
    assert job.output_dir is not None
    return Path(job.output_dir) / f"{stem}_zebra.png"


def save_png(image: Any, out: Path, *, overwrite: bool) -> None:
    """Save a PIL image as PNG through an exclusive temporary file (:func:`..outputs.write_output`),
    so a crash never leaves half a picture and a planted link is never written through."""
    from ..outputs import write_output

    out.parent.mkdir(parents=True, exist_ok=True)
    write_output(out, lambda fh: image.save(fh, format="PNG"), overwrite=overwrite)


def job_records(job: Job, model: Any, inputs: Iterable[Any], names: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """One record per input, in order, each as soon as its batch is done. ``names`` (default: the
    inputs themselves) are what the records call the inputs, e.g. when ``inputs`` are decoded
    images."""
    batch_size = job.default_batch_size or None
    if job.task == "classify":
        stream = model.predict_stream(inputs, topk=job.topk, batch_size=batch_size, backend=job.backend)
    elif job.task == "caption":
        stream = model.caption_stream(inputs, beam_size=job.beam_size, batch_size=batch_size)
    elif job.task == "translate":
        stream = model.translate_stream(inputs, size=job.size, preset=job.preset, batch_size=batch_size,
                                        backend=job.backend)
    else:
        raise ValueError(f"unknown task {job.task!r}; choose classify, caption or translate.")
    name_of = iter(names) if names is not None else None
    for item, outcome in stream:
        yield outcome_record(job, item if name_of is None else next(name_of), outcome)


def outcome_record(job: Job, name: str, outcome: Any) -> dict[str, Any]:
    """The record of one input from its outcome in a model's stream (translate writes the picture)."""
    if isinstance(outcome, BaseException):
        return error_record(name, outcome)
    if job.task == "classify":
        return {"input": name, "predictions": [{"label": label, "index": index, "percent": percent}
                                               for (label, percent), index in zip(outcome, outcome.indices)]}
    if job.task == "caption":
        return {"input": name, "caption": outcome}
    out = output_path(job, name)
    try:
        save_png(outcome, out, overwrite=job.overwrite)
    except DlwpError as exc:                  # exists (without --overwrite), full disk, ...: this input fails
        return error_record(name, exc)
    except OSError as exc:
        return error_record(name, f"cannot write {out} ({exc.strerror or exc}); check the -o folder.")
    return {"input": name, "output": str(out)}

"""Accuracy of a classifier on labelled photos: acc@1, acc@5, per-class accuracy, the confusion
matrix and the throughput, through the same ``predict_stream`` every other caller uses (so the
answers are ``predict``'s, on any backend)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from ..errors import DataError
from .data import Labelled, model_indices

__all__ = ["Evaluation", "evaluate"]

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """What :func:`evaluate` measured. ``confusion[i][j]``: photos of class ``i`` whose top-1 answer
    was class ``j``; the last column counts answers that are none of the data's classes (a
    1000-class model answering outside them)."""

    classes: list[str]
    confusion: list[list[int]]
    top1: int
    topk: int
    k: int
    images: int
    seconds: float
    backend: str
    source: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)

    @property
    def acc1(self) -> float:
        """Top-1 accuracy in percent of the photos answered."""
        return 100.0 * self.top1 / self.images if self.images else 0.0

    @property
    def acck(self) -> float:
        """Top-``k`` accuracy (k = 5, or the number of classes when fewer) in percent."""
        return 100.0 * self.topk / self.images if self.images else 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def per_class(self) -> dict[str, float | None]:
        """Each class's top-1 accuracy in percent (None for a class without photos)."""
        return {
            name: (100.0 * row[i] / sum(row) if sum(row) else None)
            for i, (name, row) in enumerate(zip(self.classes, self.confusion))
        }

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            {
                "acc@1": round(self.acc1, 4),
                f"acc@{self.k}": round(self.acck, 4),
                "per_class": self.per_class(),
                "images_per_s": round(self.images_per_s, 3),
            }
        )
        data["skipped"] = [{"file": f, "error": e} for f, e in self.skipped]
        return data

    def confusion_csv(self) -> str:
        """The confusion matrix as CSV: a header of predicted classes, one row per true class."""
        import csv
        from io import StringIO

        out = StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["true \\ predicted", *self.classes, "other"])
        for name, row in zip(self.classes, self.confusion):
            writer.writerow([name, *row])
        return out.getvalue()


def evaluate(
    model: nn.Module,
    data: Labelled,
    *,
    backend: str = "eager",
    batch_size: int | None = None,
    on_error: str = "skip",
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """Run ``model`` (a dlwp classifier) on every photo of ``data`` and count. A photo that cannot
    be decoded is skipped and listed (``on_error="skip"``) or stops the evaluation
    (``"stop"``, a :class:`~dlwp_models.errors.DataError` naming it). ``progress`` is called with
    the number of photos done after each one."""
    categories = getattr(model, "categories", None)
    if not categories:
        raise DataError("the model has no labels (model.categories); set them before evaluating it.")
    wanted = model_indices(data.classes, categories, data.source)
    to_data = {model_index: i for i, model_index in enumerate(wanted)}
    n = len(data.classes)
    k = min(5, len(categories))
    confusion = [[0] * (n + 1) for _ in range(n)]
    top1 = topk = answered = 0
    skipped: list[tuple[str, str]] = []
    labels = {path: label for path, label in data.samples}
    start = time.perf_counter()
    stream = model.predict_stream([p for p, _ in data.samples], topk=k, batch_size=batch_size, backend=backend)
    with closing(stream):  # closed at once when a failure stops it, so no decoding thread outlives it
        for done, (path, outcome) in enumerate(stream, start=1):
            if isinstance(outcome, BaseException):
                if on_error == "stop":
                    raise DataError(f"{path}: {outcome} (skip such files with --on-error skip)")
                skipped.append((str(path), str(outcome)))
                log.warning("skipped %s: %s", path, outcome)
            else:
                truth = labels[path]
                guess = to_data.get(outcome.indices[0], n)
                confusion[truth][guess] += 1
                top1 += guess == truth
                topk += wanted[truth] in outcome.indices
                answered += 1
            if progress is not None:
                progress(done)
    seconds = time.perf_counter() - start
    if not answered:
        raise DataError(f"{data.source}: none of the {len(data.samples)} photos could be read as an image.")
    return Evaluation(
        classes=list(data.classes),
        confusion=confusion,
        top1=top1,
        topk=topk,
        k=k,
        images=answered,
        seconds=seconds,
        backend=backend,
        source=data.source,
        skipped=skipped,
    )

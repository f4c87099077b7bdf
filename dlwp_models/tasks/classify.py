"""classify: the top-k labels of a photo, with percentages (softmax × 100, as the book prints them).

The answers are the model's own (:meth:`~dlwp_models.models.classifiers.ClassifierMixin.predict_stream`
and ``predict_crops``, the one softmax and top-k); this module only says how the task is run and
written down."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..inputs.images import ImageItem
from ..inputs.predictions import Prediction
from .base import ModelSpec, Task

__all__ = ["Classify"]


@dataclass(frozen=True)
class Classify(Task):
    """Top-``topk`` labels per image: ``{"predictions": [{"label", "index", "percent"}, …]}``."""

    name = "classify"
    default_model = "resnet101"

    topk: int = 5

    def check(self, model: nn.Module) -> None:
        count = len(getattr(model, "categories", None) or [])
        if not count:
            raise ValueError(
                "this model has no category names (model.categories is None); give it one label per output first."
            )
        if isinstance(self.topk, bool) or not isinstance(self.topk, int) or not 1 <= self.topk <= count:
            raise ValueError(f"topk must be between 1 and {count} (the number of categories), got {self.topk!r}.")

    @classmethod
    def ready(cls, model: nn.Module, backend: str) -> None:
        model.ready(backend)

    @classmethod
    def describe(cls, model: nn.Module) -> dict[str, Any]:
        return {"categories": len(model.categories or [])}

    def stream(
        self, model: nn.Module, inputs: Iterable[Any], *, batch_size: int | None = None, backend: str = "eager"
    ) -> Iterator[tuple[Any, Any]]:
        return model.predict_stream(inputs, topk=self.topk, batch_size=batch_size, backend=backend)

    def prepare(self, model: nn.Module, image: ImageItem) -> Any:
        return model.transforms.crop_pixels(image)  # uint8 (crop, crop, 3), as predict

    def run(self, model: nn.Module, batch: list[Any], *, backend: str = "eager") -> list[Prediction]:
        return model.predict_crops(batch, self.topk, backend=backend)

    def decode_preparer(self, spec: ModelSpec) -> Callable[[ImageItem], Any] | None:
        """The weight set's resize and center crop, read from the manifest alone (None for a one-off
        checkpoint file, whose images the model's machine prepares)."""
        from ..inputs.transforms import ClassifierTransform
        from ..weights.resolve import resolve

        chosen = resolve(spec.model, pretrained=False, weights=spec.weights or "DEFAULT").weights
        return None if chosen is None else ClassifierTransform.from_weights(chosen).crop_pixels

    def answer(self, outcome: Prediction) -> dict[str, Any]:
        return {
            "predictions": [
                {"label": label, "index": index, "percent": percent}
                for (label, percent), index in zip(outcome, outcome.indices or ())
            ]
        }

    def csv_columns(self) -> list[str]:
        return [
            "input",
            *(f"{kind}_{rank}" for rank in range(1, self.topk + 1) for kind in ("label", "percent")),
            "error",
        ]

    def csv_cells(self, record: dict[str, Any]) -> list[Any]:
        return [value for p in record["predictions"] for value in (p["label"], repr(p["percent"]))]

    def text(self, record: dict[str, Any]) -> str:
        table = Prediction((p["label"], p["percent"]) for p in record["predictions"])
        return f"{record['input']}:\n{table}"

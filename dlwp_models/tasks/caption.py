"""caption: one sentence describing a photo (NeuralTalk2, beam search as the book runs it).

The sentences are the model's own (:meth:`~dlwp_models.models.captioning.NeuralTalk2.caption_stream`,
``caption_preparer`` and ``caption_batch``); this module only says how the task is run and
written down."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..inputs.images import ImageItem
from .base import Task

__all__ = ["Caption"]


@dataclass(frozen=True)
class Caption(Task):
    """A sentence per image: ``{"caption": "…"}``."""

    name = "caption"
    default_model = "neuraltalk2"
    default_batch_size = 8

    beam_size: int = 2

    def check(self, model: nn.Module) -> None:
        model.check_caption_args(beam_size=self.beam_size)

    @classmethod
    def describe(cls, model: nn.Module) -> dict[str, Any]:
        return {"vocabulary_size": len(model.vocab)}

    def stream(
        self, model: nn.Module, inputs: Iterable[Any], *, batch_size: int | None = None, backend: str = "eager"
    ) -> Iterator[tuple[Any, Any]]:
        return model.caption_stream(inputs, beam_size=self.beam_size, batch_size=self.batch_size(model, batch_size))

    def prepare(self, model: nn.Module, image: ImageItem) -> Any:
        return model.caption_preparer()(image)  # (3, H, W), downscaled to max_side as caption

    def run(self, model: nn.Module, batch: list[Any], *, backend: str = "eager") -> list[str]:
        return model.caption_batch(batch, beam_size=self.beam_size)

    def answer(self, outcome: str) -> dict[str, Any]:
        return {"caption": outcome}

    def csv_columns(self) -> list[str]:
        return ["input", "caption", "error"]

    def csv_cells(self, record: dict[str, Any]) -> list[Any]:
        return [record["caption"]]

    def text(self, record: dict[str, Any]) -> str:
        return f"{record['input']}: {record['caption']}"

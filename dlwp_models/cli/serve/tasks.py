"""The three tasks behind the API, each with its model's own preprocessing.

A task turns a decoded image into a batch key and an item (:meth:`Task.prepare`, run in a worker
thread) and a list of same-key items into answers (:meth:`Task.run`, run on the model's inference
thread). The answers are those of the Python API on the same image:

* classify: ``model.transforms.crop_pixels`` then ``collate`` (what ``model.predict`` does), the
  forward pass, softmax × 100, top-k;
* translate: the images of one output size through ``model.translate`` (its resize, padding and
  8-bit rounding);
* caption: the images (downscaled to ``max_side`` as ``caption`` does) through ``model.caption``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import torch
from PIL import Image
from torch import nn

from ...inputs.images import image_hw
from ...inputs.transforms import MAX_SIDE, fit_side
from ...models.cyclegan import MAX_PIXELS
from .uploads import ApiError

__all__ = ["Task", "ClassifyTask", "TranslateTask", "CaptionTask", "task_for", "MAX_SIZE", "MAX_BEAM"]

log = logging.getLogger(__name__)

#: the largest ``size`` (shorter side) /v1/translate accepts
MAX_SIZE = 1024
#: the widest beam /v1/caption accepts
MAX_BEAM = 10


@dataclass(frozen=True)
class ClassifyAnswer:
    """One image's top-k: category indices and percentages, best first."""

    indices: list[int]
    percents: list[float]


class Task:
    """One loaded model and how the server runs it."""

    kind = ""

    def __init__(self, name: str, model: nn.Module, backend: str = "eager") -> None:
        self.name, self.model, self.backend = name, model, backend
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self.dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32

    @property
    def weights(self) -> str | None:
        """The weight set's name (None for random weights)."""
        weights = getattr(self.model, "weights", None)
        return None if weights is None else weights.name

    def describe(self) -> dict[str, Any]:
        """What /v1/models says about the model besides its name, task and batching."""
        return {}

    def prepare(self, image: Image.Image, params: dict[str, Any]) -> tuple[Hashable, Any]:
        """(batch key, item) for one decoded image; raises :class:`ApiError` for unusable input."""
        raise NotImplementedError

    def run(self, key: Hashable, items: Sequence[Any]) -> list[Any]:
        """The answers for ``items`` (all with ``key``), in order."""
        raise NotImplementedError


class ClassifyTask(Task):
    kind = "classify"

    @property
    def categories(self) -> list[str]:
        return list(self.model.categories or [])

    def describe(self) -> dict[str, Any]:
        return {"categories": len(self.categories)}

    @property
    def forward(self) -> Any:
        """The network, run by the server's backend (eager PyTorch, or ONNX Runtime)."""
        if self.backend == "eager":
            return self.model
        from ...models.onnx_backend import OnnxRunner

        return OnnxRunner(self.model, any_size=False)      # its sessions are kept per model

    def check_topk(self, topk: int) -> None:
        if not 1 <= topk <= len(self.categories):
            raise ApiError(422, f"topk must be between 1 and {len(self.categories)} (the number of "
                                f"categories of {self.name}), got {topk}.")

    def prepare(self, image: Image.Image, params: dict[str, Any]) -> tuple[Hashable, Any]:
        pixels = self.model.transforms.crop_pixels(image)          # uint8 (crop, crop, 3), as predict
        return tuple(pixels.shape), (pixels, params["topk"])

    def run(self, key: Hashable, items: Sequence[Any]) -> list[ClassifyAnswer]:
        batch = self.model.transforms.collate([pixels for pixels, _ in items], self.device, self.dtype)
        with torch.inference_mode():
            logits = self.forward(batch)
            if isinstance(logits, tuple):                           # InceptionOutputs
                logits = logits[0]
            percent = (torch.softmax(logits.float(), dim=1) * 100).cpu()
        answers = []
        for row, (_, topk) in zip(percent, items):
            values, indices = row.topk(topk)
            answers.append(ClassifyAnswer(indices.tolist(), values.tolist()))
        return answers


class TranslateTask(Task):
    kind = "translate"

    def prepare(self, image: Image.Image, params: dict[str, Any]) -> tuple[Hashable, Any]:
        size = params["size"]        # at least MIN_SIDE (the route checks): so is each resized side
        height, width = image_hw(image)
        new_h, new_w = self.model.transforms.configured(size=size, preset="trained").output_size(height, width)
        if new_h * new_w > MAX_PIXELS:
            raise ApiError(413, f"the image would be {new_w}×{new_h} at size={size}, more than the "
                                f"{MAX_PIXELS / 1e6:.1f} megapixels the generator accepts; pass a smaller size.")
        return (size, new_h, new_w), image

    def run(self, key: Hashable, items: Sequence[Any]) -> list[Image.Image]:
        size = key[0]                                               # type: ignore[index]
        return list(self.model.translate(list(items), size=size, backend=self.backend))


class CaptionTask(Task):
    kind = "caption"

    @property
    def vocabulary_size(self) -> int:
        return len(self.model.vocab)

    def describe(self) -> dict[str, Any]:
        return {"vocabulary_size": self.vocabulary_size}

    def check_beam_size(self, beam_size: int) -> None:
        widest = min(MAX_BEAM, self.vocabulary_size + 1)
        if not 1 <= beam_size <= widest:
            raise ApiError(422, f"beam_size must be between 1 and {widest}, got {beam_size}.")

    def prepare(self, image: Image.Image, params: dict[str, Any]) -> tuple[Hashable, Any]:
        image = fit_side(image, MAX_SIDE, "an uploaded image")     # what caption() does by default
        return (params["beam_size"], *image_hw(image)), image

    def run(self, key: Hashable, items: Sequence[Any]) -> list[str]:
        beam_size = key[0]                                          # type: ignore[index]
        return list(self.model.caption(list(items), beam_size=beam_size))


_TASKS = {"classify": ClassifyTask, "translate": TranslateTask, "caption": CaptionTask}


def task_for(name: str, model: nn.Module, backend: str = "eager") -> Task:
    """The task a built model serves: captioning, translation, or classification; ``backend`` runs
    the classifiers' and the generator's network (captioning is always eager)."""
    if hasattr(model, "caption"):
        return CaptionTask(name, model)
    if hasattr(model, "translate"):
        return TranslateTask(name, model, backend)
    if hasattr(model, "predict") and getattr(model, "categories", None):
        return ClassifyTask(name, model, backend)
    raise ValueError(f"{name} cannot be served: it has no caption, translate or predict with categories.")

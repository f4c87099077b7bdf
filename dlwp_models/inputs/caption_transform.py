"""The captioning encoder's preprocessing: :class:`CaptionTransform` (RGB, ``/255``, ImageNet
statistics, at the image's own size) and :func:`fit_side`, the memory guard that downscales a
huge photo before it is encoded."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..weights.manifest import WeightSet
from .transform_settings import from_weight_set, mean_std
from .transforms import IMAGENET_MEAN, IMAGENET_STD, _channels, _is_int

__all__ = ["CaptionTransform", "fit_side", "MAX_SIDE"]

log = logging.getLogger(__name__)

#: captioning downscales images whose longer side exceeds this (memory guard)
MAX_SIDE = 2048
_CAPTION_KEYS = {"mean", "std", "max_side"}


@dataclass(frozen=True)
class CaptionTransform:
    """Image → encoder input (the ``transforms`` attribute of the model): RGB, ``/255``, then
    ImageNet ``mean``/``std``, at the image's own size (upstream's preprocessing; no resize).

    Calling it on a PIL image or a CHW tensor (uint8, or float in [0, 1]; 1 channel is tiled to 3)
    returns a float32 (3, H, W) tensor. ``max_side`` records the weight set's memory-guard limit for
    reference; the transform itself never resizes, :meth:`NeuralTalk2.caption` applies its own
    ``max_side`` argument (default 2048) before it.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    max_side: int | None = MAX_SIDE

    def __post_init__(self) -> None:
        mean, std = mean_std(self.mean, self.std)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if self.max_side is not None and (not _is_int(self.max_side) or self.max_side < 1):
            raise ValueError(f"max_side must be None or a positive integer, got {self.max_side!r}")

    @classmethod
    def from_weights(cls, weights: WeightSet | None) -> CaptionTransform:
        """The transform a weight set's manifest entry describes (ImageNet defaults without one)."""
        if weights is None:
            return cls()
        return from_weight_set(cls, weights, _CAPTION_KEYS)

    def __call__(self, image: Any) -> torch.Tensor:  # PIL image or (C, H, W) -> (3, H, W) float32
        if isinstance(image, torch.Tensor):
            x = image.float().div(255) if image.dtype == torch.uint8 else image.float()
            if x.dim() != 3 or x.shape[0] not in (1, 3):
                raise ValueError(f"expected a (3, H, W) or (1, H, W) image tensor, got {tuple(image.shape)}")
            x = x.expand(3, -1, -1)
        else:
            from .images import to_float_tensor

            x = to_float_tensor(image.convert("RGB"))  # (3, H, W) in [0, 1]
        return (x - _channels(self.mean, x)) / _channels(self.std, x)


def fit_side(item: Any, max_side: int | None, where: str) -> Any:
    """Downscale an image whose longer side exceeds ``max_side`` (aspect kept), with a log note."""
    from .images import image_hw

    height, width = image_hw(item)
    if max_side is None or max(height, width) <= max_side:
        return item
    scale = max_side / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    log.info(
        "%s is %dx%d (width x height), more than max_side=%d; captioning it downscaled to %dx%d "
        "to bound memory (pass max_side=None to keep the full size)",
        where,
        width,
        height,
        max_side,
        new_w,
        new_h,
    )
    if isinstance(item, torch.Tensor):
        x = item.float().unsqueeze(0)  # (1, C, H, W)
        return (
            F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
            .squeeze(0)
            .clamp_(0, 1)
        )
    from PIL import Image

    return item.resize((new_w, new_h), Image.Resampling.BILINEAR)

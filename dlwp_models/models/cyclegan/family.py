"""How the one builder builds the CycleGAN generator: the ``cyclegan`` weight format (the book's
48-key file, or junyanz's 2018 layout whose InstanceNorm statistics are dropped); the entrypoint's
docstring is in :mod:`.docs`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from ...errors import ExportError, ImageTooLargeError, IncompatibleWeightsError
from ...inputs.transforms import CycleGANTransform
from ...loading.modules import build_on_meta, load_into
from ...loading.weight_files import load_weight_file
from ...weights.manifest import WeightSet
from ...weights.store import CachedFile
from ..family import Family
from ..pipelines import CycleGANPipeline, plain_module
from .network import MAX_PIXELS, MIN_SIDE, ResNetGenerator

__all__ = ["CycleGANFamily", "FAMILY", "adapt_cyclegan_state_dict"]

log = logging.getLogger(__name__)

_INSTANCE_NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")


def adapt_cyclegan_state_dict(raw: Any, module: nn.Module, *, source: str) -> dict[str, torch.Tensor]:
    """The ``cyclegan`` format: a plain generator state dict, either the book's 48-key layout or
    junyanz's 2018 layout, whose InstanceNorm layers also carry ``running_mean``,
    ``running_var`` and ``num_batches_tracked``. Exactly those entries (of InstanceNorm layers of
    ``module``) are dropped; everything else is passed on for a strict load."""
    if not isinstance(raw, Mapping):
        raise IncompatibleWeightsError(
            f"{source}: expected a generator state dict (a mapping of names to tensors), got "
            f"{type(raw).__name__}. Save the generator with torch.save(netG.state_dict(), path)."
        )
    stale = {
        f"{name}.{stat}"
        for name, sub in module.named_modules()
        if isinstance(sub, nn.InstanceNorm2d)
        for stat in _INSTANCE_NORM_STATS
    }
    state_dict = {key: value for key, value in raw.items() if key not in stale}
    dropped = len(raw) - len(state_dict)
    if dropped:
        log.debug("%s: dropped %d InstanceNorm running-statistics entries (junyanz 2018 layout)", source, dropped)
    return state_dict


class _Plan(NamedTuple):
    weights: WeightSet | None  # None: a one-off generator file
    transforms: CycleGANTransform


class CycleGANFamily(Family):
    """The CycleGAN horse→zebra generator."""

    def random(self, model: str, kwargs: Mapping[str, Any]) -> nn.Module:
        return ResNetGenerator().eval()

    def plan(self, model: str, weights: WeightSet | None, kwargs: Mapping[str, Any]) -> _Plan:
        return _Plan(weights, CycleGANTransform.from_weights(weights))  # a bad entry fails before any download

    def load(self, plan: _Plan, files: Mapping[str, CachedFile], map_location: Any) -> nn.Module:
        file = files["state_dict"]
        source = str(file.path) if plan.weights is None else f"weight set {plan.weights.name!r} ({file.name})"
        model = build_on_meta(ResNetGenerator)
        raw = load_weight_file(file, map_location=map_location)
        load_into(model, adapt_cyclegan_state_dict(raw, model, source=source), source=source)
        model.weights = plan.weights
        model.weight_file = file
        model.transforms = plan.transforms
        log.info("cyclegan: loaded %s", source)
        return model.eval()

    def check_export_size(self, model: nn.Module, height: int, width: int) -> None:
        new_h, new_w = model.transforms.output_size(height, width)
        if min(new_h, new_w) < MIN_SIDE:
            raise ValueError(
                f"an input of {height}x{width} would be {new_h}x{new_w} after resizing; the generator "
                f"needs at least {MIN_SIDE} pixels on each side. Pass a larger --input-size."
            )
        if new_h * new_w > MAX_PIXELS:
            raise ImageTooLargeError(
                f"an input of {height}x{width} would be {new_h}x{new_w} after resizing, over the "
                f"generator's {MAX_PIXELS / 1e6:.1f} megapixels; pass a less extreme --input-size."
            )

    def export_pipeline(self, model: nn.Module) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        t = model.transforms
        if t.resize is None or t.mean is None:
            raise ExportError("exporting needs a fixed resize and normalisation in the weights' transforms.")

        def reference(images: torch.Tensor) -> torch.Tensor:
            x = torch.stack([t(img.float() / 255) for img in images])
            return ((model._forward_same_size(x) + 1) / 2).clamp(0, 1)

        return CycleGANPipeline(plain_module(model), t), reference


FAMILY = CycleGANFamily()

"""How the one builder builds the CycleGAN generator: the ``cyclegan`` weight format (the book's
48-key file, or junyanz's 2018 layout whose InstanceNorm statistics are dropped); the entrypoint's
docstring is in :mod:`.docs`."""

from __future__ import annotations

import logging
from typing import Any, Mapping, NamedTuple

import torch
from torch import nn

from ...errors import IncompatibleWeightsError
from ...inputs.transforms import CycleGANTransform
from ...loading.modules import build_on_meta, load_into
from ...loading.weight_files import load_weight_file
from ...weights.manifest import WeightSet
from ...weights.store import CachedFile
from ..family import Family
from .docs import MODELS
from .network import ResNetGenerator

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
            f"{type(raw).__name__}. Save the generator with torch.save(netG.state_dict(), path).")
    stale = {f"{name}.{stat}"
             for name, sub in module.named_modules() if isinstance(sub, nn.InstanceNorm2d)
             for stat in _INSTANCE_NORM_STATS}
    state_dict = {key: value for key, value in raw.items() if key not in stale}
    dropped = len(raw) - len(state_dict)
    if dropped:
        log.debug("%s: dropped %d InstanceNorm running-statistics entries (junyanz 2018 layout)",
                  source, dropped)
    return state_dict




class _Plan(NamedTuple):
    weights: WeightSet | None          # None: a one-off generator file
    transforms: CycleGANTransform


class CycleGANFamily(Family):
    """The CycleGAN horse→zebra generator."""

    models = MODELS
    format = "cyclegan"

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



FAMILY = CycleGANFamily()

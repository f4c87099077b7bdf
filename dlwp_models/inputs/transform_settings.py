"""Checks shared by the preprocessing records that weight sets describe in their manifest
``transforms``: per-channel mean/std, and building a record from a weight set with an error
that names the weight set and its manifest."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, TypeVar

from ..errors import ManifestError
from ..weights.manifest import WeightSet

__all__ = ["mean_std", "from_weight_set"]

T = TypeVar("T")


def _rgb_triple(name: str, value: Any) -> tuple[float, float, float]:
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 3
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"{name} must be 3 numbers (one per RGB channel), got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def mean_std(mean: Any, std: Any) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Checked per-channel normalisation constants, as tuples of floats (std positive)."""
    mean, std = _rgb_triple("mean", mean), _rgb_triple("std", std)
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, got {std!r}")
    return mean, std


def from_weight_set(build: Callable[..., T], weights: WeightSet, allowed: Collection[str]) -> T:
    """``build(**weights.transforms)``, refusing settings outside ``allowed``; a bad value is a
    :class:`~dlwp_models.ManifestError` naming the weight set and the manifest to fix."""
    settings = dict(weights.transforms)
    unknown = set(settings) - set(allowed)
    if unknown:
        raise ManifestError(
            f"weight set {weights.name!r} has unknown transform setting "
            f"{sorted(unknown)[0]!r}; expected only {sorted(allowed)}. Fix its "
            f'"transforms" in {weights.source}.'
        )
    try:
        return build(**settings)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f'weight set {weights.name!r}: {exc}. Fix its "transforms" in {weights.source}.') from None

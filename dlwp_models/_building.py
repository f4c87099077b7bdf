"""What every entrypoint does before its architecture-specific part: resolve which weight set the
arguments ask for, and fetch its files."""

from __future__ import annotations

from pathlib import Path

from ._fetch import fetch
from ._manifest import WeightSet, get_weights

__all__ = ["resolve_weights", "fetch_for"]


def resolve_weights(model: str, *, pretrained: bool, weights: "str | WeightSet | None") -> WeightSet | None:
    """The weight set asked for: ``weights`` (tag, full name or "DEFAULT"), else the default when
    ``pretrained``, else None. Both ``pretrained=True`` and a non-default ``weights`` is an error."""
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be True or False, got {pretrained!r}")
    if weights is None:
        return get_weights("DEFAULT", model) if pretrained else None
    chosen = get_weights(weights, model)
    if pretrained and not chosen.default:
        default = get_weights("DEFAULT", model)
        raise ValueError(
            f"pretrained=True asks for {model}'s default weights {default.name!r}, but weights="
            f"{weights!r} names {chosen.name!r}. Pass only weights={chosen.tag!r} (or only pretrained=True).")
    return chosen


def fetch_for(weights: WeightSet, expected_format: str, *, progress: bool) -> dict[str, Path]:
    """Fetch a weight set's files after checking it is in the format the caller can read."""
    if weights.format != expected_format:
        raise ValueError(f"weight set {weights.name!r} has format {weights.format!r}, but this model "
                         f"reads {expected_format!r}; fix the entry's \"format\" in {weights.source}.")
    return fetch(weights, progress=progress)

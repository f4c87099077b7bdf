"""The one builder and the hub entrypoints.

:func:`build` is the route every entrypoint takes, down through the layers and back up once:
resolve the arguments (:mod:`.weights.resolve`), let the model's family check everything that
needs no file (:meth:`~.models.family.Family.plan`), fetch what was verified (:mod:`.weights.download`
→ path and sha256), and let the family load, adapt and attach (:meth:`~.models.family.Family.load`).
The family comes from the registry (:mod:`.models.registry`).

``hubconf.py`` names each entrypoint (``resnet101 = entrypoint("resnet101")``); :func:`entrypoint`
makes it, with the docstring ``torch.hub.help`` shows. Importing this module is cheap (no
torchvision, no network code), so ``torch.hub.list`` stays fast.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from torch import nn

from .errors import ManifestError
from .models.registry import FamilyInfo, family_info, load_family
from .weights.download import fetch_file, fetch_files
from .weights.manifest import WeightSet, bundled_manifest_path, read_manifest_cached
from .weights.resolve import Choice, resolve
from .weights.store import CachedFile

__all__ = ["build", "entrypoint"]

log = logging.getLogger(__name__)


def build(
    model: str,
    *,
    pretrained: bool = False,
    weights: str | os.PathLike | WeightSet | None = None,
    progress: bool = True,
    map_location: Any = None,
    sha256: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build ``model`` (an entrypoint name) as its entrypoint does: resolve, plan, fetch, load."""
    info = family_info(model)
    family = load_family(model)
    family.check_arguments(model, kwargs)
    choice = resolve(model, pretrained=pretrained, weights=weights, sha256=sha256, files=info.accepts_files)
    if choice.is_random:
        return family.random(model, kwargs)
    if choice.weights is not None:
        _check_files_fit(info, choice.weights)
    plan = family.plan(model, choice.weights, kwargs)
    return family.load(plan, _fetch(choice, progress), map_location)


def _check_files_fit(info: FamilyInfo, weights: WeightSet) -> None:
    if weights.format != info.format:
        raise ManifestError(
            f"weight set {weights.name!r} has format {weights.format!r}, but this model "
            f'reads {info.format!r}; fix the entry\'s "format" in {weights.source}.'
        )
    if set(weights.files) != set(info.roles):
        raise ManifestError(
            f"{weights.source}: weight set {weights.name!r}.files: a {info.format!r} weight "
            f"set needs the roles {list(info.roles)}, got {sorted(weights.files)}. Fix that "
            "field of the manifest."
        )


def _fetch(choice: Choice, progress: bool) -> Mapping[str, CachedFile]:
    if choice.weights is not None:
        return fetch_files(choice.weights, progress=progress)
    if choice.remote is not None:
        return {"state_dict": fetch_file(choice.remote, progress=progress)}
    assert choice.local is not None
    return {"state_dict": CachedFile(choice.local)}  # the caller's own file: loaded, never copied


# --------------------------------------------------------------------------- entrypoints


@lru_cache(maxsize=1)
def _bundled_sets() -> tuple[WeightSet, ...]:
    try:
        return tuple(read_manifest_cached(bundled_manifest_path()))
    except ManifestError as exc:  # keep hubconf importable; loading will report the problem
        log.warning("cannot list weight sets in docstrings: %s", exc)
        return ()


def entrypoint(model: str) -> Callable[..., nn.Module]:
    """The hub entrypoint of ``model``: keyword-only, built by :func:`build`, documented by its
    family's docstring (with the bundled weight sets). ``hubconf.py`` makes one per model."""

    def entrypoint(
        *,
        pretrained: bool = False,
        weights: str | os.PathLike | None = None,
        progress: bool = True,
        map_location: Any = None,
        sha256: str | None = None,
        **kwargs: Any,
    ) -> nn.Module:
        return build(
            model,
            pretrained=pretrained,
            weights=weights,
            progress=progress,
            map_location=map_location,
            sha256=sha256,
            **kwargs,
        )

    entrypoint.__name__ = entrypoint.__qualname__ = model
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = family_info(model).docstring(model, list(_bundled_sets()))
    return entrypoint

"""The one builder and the hub entrypoints.

:func:`build` is the route every entrypoint takes, down through the layers and back up once:
resolve the arguments (:mod:`.weights.resolve`), let the model's family check everything that
needs no file (:meth:`~.models.family.Family.plan`), fetch what was verified (:mod:`.weights.download`
→ path and sha256), and let the family load, adapt and attach (:meth:`~.models.family.Family.load`).

The entrypoints (``alexnet`` … ``inception_v3``, ``cyclegan``, ``neuraltalk2``) are made here from
the families' model lists, each with the docstring ``torch.hub.help`` shows. Importing this module
is cheap (no torchvision), so ``torch.hub.list`` stays fast.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping

from torch import nn

from importlib import import_module

from .errors import ManifestError
from .models.captioning import docs as _captioning_docs
from .models.classifiers import CLASSIFIERS
from .models.classifiers import docs as _classifier_docs
from .models.cyclegan import docs as _cyclegan_docs
from .models.family import Family
from .weights.download import fetch_file, fetch_files
from .weights.manifest import WeightSet, bundled_manifest_path, read_manifest_cached
from .weights.resolve import Choice, resolve
from .weights.store import CachedFile

__all__ = ["build", "family_of", "ENTRYPOINTS"]

log = logging.getLogger(__name__)

#: each family: its models, the module that builds them (imported only when one is built, so
#: listing the entrypoints costs no network code) and its entrypoints' docstrings
_FAMILIES: tuple[tuple[tuple[str, ...], str, Callable[[str, list[WeightSet]], str]], ...] = (
    (CLASSIFIERS, "classifiers", _classifier_docs.docstring),
    (_cyclegan_docs.MODELS, "cyclegan", lambda model, sets: _cyclegan_docs.DOC),
    (_captioning_docs.MODELS, "captioning", lambda model, sets: _captioning_docs.DOC),
)
_PACKAGE_OF: dict[str, str] = {model: package for models, package, _ in _FAMILIES for model in models}


def family_of(model: str) -> Family:
    """The family that builds ``model``; a ValueError listing the models otherwise."""
    package = _PACKAGE_OF.get(model)
    if package is None:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(_PACKAGE_OF)}.")
    family = import_module(f"{__package__}.models.{package}.family").FAMILY
    assert model in family.models, (model, package)
    return family


def build(model: str, *, pretrained: bool = False, weights: "str | os.PathLike | WeightSet | None" = None,
          progress: bool = True, map_location: Any = None, sha256: str | None = None,
          **kwargs: Any) -> nn.Module:
    """Build ``model`` (an entrypoint name) as its entrypoint does: resolve, plan, fetch, load."""
    family = family_of(model)
    family.check_arguments(model, kwargs)
    choice = resolve(model, pretrained=pretrained, weights=weights, sha256=sha256, files=family.accepts_files)
    if choice.is_random:
        return family.random(model, kwargs)
    if choice.weights is not None:
        _check_files_fit(family, choice.weights)
    plan = family.plan(model, choice.weights, kwargs)
    return family.load(plan, _fetch(choice, progress), map_location)


def _check_files_fit(family: Family, weights: WeightSet) -> None:
    if weights.format != family.format:
        raise ManifestError(f"weight set {weights.name!r} has format {weights.format!r}, but this model "
                            f"reads {family.format!r}; fix the entry's \"format\" in {weights.source}.")
    if set(weights.files) != set(family.roles):
        raise ManifestError(f"{weights.source}: weight set {weights.name!r}.files: a {family.format!r} weight "
                            f"set needs the roles {list(family.roles)}, got {sorted(weights.files)}. Fix that "
                            "field of the manifest.")


def _fetch(choice: Choice, progress: bool) -> Mapping[str, CachedFile]:
    if choice.weights is not None:
        return fetch_files(choice.weights, progress=progress)
    if choice.remote is not None:
        return {"state_dict": fetch_file(choice.remote, progress=progress)}
    assert choice.local is not None
    return {"state_dict": CachedFile(choice.local)}   # the caller's own file: loaded, never copied


# --------------------------------------------------------------------------- entrypoints


def _bundled_sets() -> list[WeightSet]:
    try:
        return read_manifest_cached(bundled_manifest_path())
    except ManifestError as exc:  # keep hubconf importable; loading will report the problem
        log.warning("cannot list weight sets in docstrings: %s", exc)
        return []


def _entrypoint(model: str, docstring: Callable[[str, list[WeightSet]], str],
                sets: list[WeightSet]) -> Callable[..., nn.Module]:
    def entrypoint(*, pretrained: bool = False, weights: "str | os.PathLike | None" = None,
                   progress: bool = True, map_location: Any = None, sha256: str | None = None,
                   **kwargs: Any) -> nn.Module:
        return build(model, pretrained=pretrained, weights=weights, progress=progress,
                     map_location=map_location, sha256=sha256, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = model
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = docstring(model, sets)
    return entrypoint


_sets = _bundled_sets()
#: every entrypoint by name, in the families' order
ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {
    model: _entrypoint(model, docstring, _sets) for models, _, docstring in _FAMILIES for model in models}
globals().update(ENTRYPOINTS)
__all__ += list(ENTRYPOINTS)
del _sets

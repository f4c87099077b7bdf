"""The one registry of model families: each family registers itself once, in its own package's
``__init__`` (:func:`register_family`), with its models, weight format, file roles, task, head,
whether the ONNX Runtime backend runs it, its entrypoints' docstrings and the module that builds
it. The builder (:mod:`dlwp_models.hub`), the manifest's format check, ``torch.hub.list`` /
``help``, the tasks and the backends read it; nothing else names a family.

The families are found by importing each sub-package of :mod:`dlwp_models.models` once, on the
first question (:func:`families`): registrations are cheap (no torchvision, no network code), and
a new family is a new package with one :func:`register_family` call (plus its entrypoint lines in
``hubconf.py``, which a test compares with this registry).
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING

from ..weights.manifest import WeightSet, register_format

if TYPE_CHECKING:
    from .family import Family

__all__ = ["FamilyInfo", "register_family", "families", "family_info", "load_family", "models", "models_for_task"]


@dataclass(frozen=True)
class FamilyInfo:
    """What the rest of dlwp knows about one model family."""

    name: str  # its package under dlwp_models.models
    models: tuple[str, ...]  # its entrypoints, in hubconf.py's order
    format: str  # the manifest "format" of its weight sets
    task: str  # the name of a task of dlwp_models.tasks
    builder: str  # "module:attribute" of its Family, imported when a model is built
    docstring: Callable[[str, Sequence[WeightSet]], str]  # each entrypoint's docstring (torch.hub.help)
    roles: tuple[str, ...] = ("state_dict",)  # the file roles of a weight set of its format
    accepts_files: bool = True  # a one-off checkpoint (path, or URL with sha256=) may stand in
    onnx: bool = False  # the ONNX Runtime backend runs its network
    int8: bool = False  # the int8 backend runs its network (dlwp quantize makes and checks its graph)
    exportable: bool = False  # `dlwp export` writes it with its preprocessing
    #: model -> attribute paths of its classification head (the layers a new head replaces)
    heads: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


_FAMILIES: dict[str, FamilyInfo] = {}
_BY_MODEL: dict[str, FamilyInfo] = {}
_discovered = False


def register_family(info: FamilyInfo) -> FamilyInfo:
    """Register a family (call it once, from the family package's ``__init__``)."""
    clash = [model for model in info.models if model in _BY_MODEL and _BY_MODEL[model].name != info.name]
    if clash:
        raise ValueError(f"family {info.name!r}: model {clash[0]!r} is registered by {_BY_MODEL[clash[0]].name!r}.")
    _FAMILIES[info.name] = info
    _BY_MODEL.update((model, info) for model in info.models)
    register_format(info.format)
    return info


def _discover() -> None:
    """Import every family package once (each registers itself on import)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    package = __name__.rpartition(".")[0]
    for found in pkgutil.iter_modules(import_module(package).__path__):
        if found.ispkg:
            import_module(f"{package}.{found.name}")


def families() -> tuple[FamilyInfo, ...]:
    """Every registered family."""
    _discover()
    return tuple(_FAMILIES.values())


def models() -> tuple[str, ...]:
    """Every model (entrypoint) name, family by family."""
    return tuple(model for info in families() for model in info.models)


def models_for_task(task: str) -> tuple[str, ...]:
    """The models that do ``task``."""
    return tuple(model for info in families() if info.task == task for model in info.models)


def family_info(model: str) -> FamilyInfo:
    """The family of ``model``; a ValueError listing the models otherwise."""
    _discover()
    info = _BY_MODEL.get(model)
    if info is None:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(models())}.")
    return info


def load_family(model: str) -> Family:
    """The :class:`~.family.Family` that builds ``model`` (its module imported now)."""
    module, _, attribute = family_info(model).builder.partition(":")
    return getattr(import_module(module), attribute)

"""What the one builder (:func:`dlwp_models.hub.build`) needs from a model family besides its
registration (:class:`~.registry.FamilyInfo`): the hooks that build and load its models.

The builder resolves the arguments (:func:`dlwp_models.weights.resolve.resolve`), asks the family
for a :meth:`Family.plan` (every check that needs no weight file, so a mistake costs no
download), fetches the files, and hands them to :meth:`Family.load`. A family holds no state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..weights.manifest import WeightSet
from ..weights.store import CachedFile

__all__ = ["Family"]


class Family:
    """One model family's hooks (its models, format and roles are in its registration)."""

    def check_arguments(self, model: str, kwargs: Mapping[str, Any]) -> None:
        """Refuse keyword arguments the model does not take (TypeError), before anything else."""
        if kwargs:
            raise TypeError(
                f"{model}() got an unexpected keyword argument {sorted(kwargs)[0]!r}; it takes "
                "pretrained, weights, progress and map_location."
            )

    def random(self, model: str, kwargs: Mapping[str, Any]) -> nn.Module:
        """The model with random weights (``pretrained=False`` and no ``weights``)."""
        raise NotImplementedError

    def plan(self, model: str, weights: WeightSet | None, kwargs: Mapping[str, Any]) -> Any:
        """Everything :meth:`load` needs besides the files, checked before any download.
        ``weights`` is None for a one-off checkpoint file."""
        raise NotImplementedError

    def load(self, plan: Any, files: Mapping[str, CachedFile], map_location: Any) -> nn.Module:
        """The model built from ``plan`` and the fetched ``files`` (by role), in eval mode."""
        raise NotImplementedError

    def check_export_size(self, model: nn.Module, height: int, width: int) -> None:
        """Refuse (``ImageTooLargeError``, ``ValueError``) an export input size the built ``model``
        cannot run within its memory guards, before any tensor of that size is made."""

    def export_pipeline(self, model: nn.Module) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        """For a family registered as exportable: the built ``model`` with its preprocessing, as a
        module of uint8 (N, 3, H, W) images, and an eager reference function of the same images."""
        raise NotImplementedError

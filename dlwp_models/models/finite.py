"""The one check that a model's numbers are numbers: damaged weights (a cached file corrupted in
place keeps its size and date, which is all a load checks before trusting it) show as NaN or
infinite outputs, and are then named, not answered as ``nan %``."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import NonFiniteOutputError

__all__ = ["check_finite"]


def check_finite(values: torch.Tensor, model: nn.Module, what: str) -> None:
    """Raise :class:`NonFiniteOutputError` when ``values`` (``what``, computed by ``model``) hold a
    NaN or an infinity, saying how to re-check the cached weights."""
    if bool(torch.isfinite(values).all()):
        return
    weights = getattr(model, "weights", None)
    name = f"weight set {weights.name!r}" if weights is not None else "its weights"
    raise NonFiniteOutputError(
        f"{what} of {type(model).__name__} holds NaN or infinite values: {name} may be damaged on disk (a load "
        "trusts a cached file whose size and date are unchanged). Run `python -m dlwp_models fetch --verify` to "
        "re-hash the cached files; a damaged one is fetched again."
    )

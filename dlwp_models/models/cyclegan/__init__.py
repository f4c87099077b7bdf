"""The CycleGAN horse→zebra generator of chapter 2: the network and its ``translate``
(:mod:`.network`), its weight format (:mod:`.family`)."""

from __future__ import annotations

from ..lazy import lazy_getattr
from ..registry import FamilyInfo, register_family
from . import docs

INFO = register_family(
    FamilyInfo(
        name="cyclegan",
        models=docs.MODELS,
        format="cyclegan",
        task="translate",
        builder=f"{__name__}.family:FAMILY",
        docstring=lambda model, sets: docs.DOC,
        onnx=True,
        exportable=True,
    )
)

__all__ = ["INFO", "FAMILY", "MAX_PIXELS", "MIN_SIDE", "ResNetBlock", "ResNetGenerator", "adapt_cyclegan_state_dict"]

__getattr__ = lazy_getattr(
    __name__,
    {
        "family": ("FAMILY", "adapt_cyclegan_state_dict"),
        "network": ("MAX_PIXELS", "MIN_SIDE", "ResNetBlock", "ResNetGenerator"),
    },
)

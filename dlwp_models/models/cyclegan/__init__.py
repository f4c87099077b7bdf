"""The CycleGAN horse→zebra generator of chapter 2: the network and its ``translate``
(:mod:`.network`), its weight format (:mod:`.family`)."""

from __future__ import annotations


__all__ = ["FAMILY", "MAX_PIXELS", "MIN_SIDE", "ResNetBlock", "ResNetGenerator", "adapt_cyclegan_state_dict"]

_LAZY = {name: module for module, names in {
    "family": ("FAMILY", "adapt_cyclegan_state_dict"),
    "network": ("MAX_PIXELS", "MIN_SIDE", "ResNetBlock", "ResNetGenerator"),
}.items() for name in names}


def __getattr__(name: str):
    """Import a submodule only when one of its names is asked for (PEP 562): listing the hub's
    entrypoints reads :mod:`.docs` alone, without the networks."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)

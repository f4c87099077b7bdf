"""The CycleGAN horse→zebra generator of chapter 2: the network and its ``translate``
(:mod:`.network`), its weight format (:mod:`.family`)."""

from __future__ import annotations

from .family import FAMILY, adapt_cyclegan_state_dict
from .network import MAX_PIXELS, MIN_SIDE, ResNetBlock, ResNetGenerator

__all__ = ["FAMILY", "MAX_PIXELS", "MIN_SIDE", "ResNetBlock", "ResNetGenerator", "adapt_cyclegan_state_dict"]

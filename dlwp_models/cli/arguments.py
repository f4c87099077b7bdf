"""Argument types shared by the command line's subcommands."""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_int", "positive_float", "non_negative_float", "port_number", "export_side", "translate_size"]


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number of at least 0."""
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("must be a finite number of at least 0")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("must be a finite number above 0")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be a port number from 1 to 65535")
    return value


def export_side(text: str) -> int:
    """An argparse type: a side of ``export --input-size``, 1 to its documented maximum."""
    from ..export import MAX_INPUT_SIDE

    value = int(text)
    if not 1 <= value <= MAX_INPUT_SIDE:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_INPUT_SIDE} pixels")
    return value


def translate_size(text: str) -> int | None:
    """An argparse type: translate's ``--size``, at least the generator's smallest side, or 'none'."""
    from ..models.cyclegan import MIN_SIDE

    if text.lower() == "none":
        return None
    value = int(text)
    if value < MIN_SIDE:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_SIDE} pixels, or 'none'")
    return value

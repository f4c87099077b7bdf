"""What decoding an image costs, and the one conversion of wide grey to 8 bits.

:func:`decode_cost` is the most memory decoding an opened image (its header read, no pixel yet)
and turning it into RGB takes: pixels × depth × channels, and every copy the conversion makes.
:func:`check_decode_cost` refuses an image over a limit before anything is decoded (the library's
default :data:`MAX_IMAGE_BYTES`, ``DLWP_MAX_IMAGE_MB``; the server's ``--max-image-mb``), and
:func:`grey8` scales 16- and 32-bit grey to 8 bits in integers, never through a float64 copy.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ..errors import ImageInputError, ImageTooLargeError

__all__ = [
    "MAX_IMAGE_BYTES",
    "EXIF_ORIENTATION",
    "WIDE_GREY_MODES",
    "ALPHA_MODES",
    "decode_cost",
    "max_image_bytes",
    "check_decode_cost",
    "grey8",
]

#: the most memory one image may take while it is decoded and turned into RGB (see :func:`decode_cost`);
#: DLWP_MAX_IMAGE_MB overrides it. An RGB photo at PIL's pixel limit (89 megapixels) takes 716 MB.
MAX_IMAGE_BYTES = 1 << 30
EXIF_ORIENTATION = 0x0112

#: bytes per pixel PIL keeps for a decoded image of each single-band mode (every other mode: 4)
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


def decode_cost(img: Image.Image) -> int:
    """The most memory, in bytes, that decoding ``img`` (opened: its header read, its pixels not)
    and turning it into RGB takes at once: the decoded pixels at their depth and channels, and
    every copy the conversion makes (a rotation for EXIF, 16-bit grey scaled in integers,
    transparency composited on white). Checked before any pixel is decoded."""
    pixels = img.width * img.height
    decoded = pixels * _MODE_BYTES.get(img.mode, 4)
    if img.mode == "RGB":
        conversion = 0 if img.format == "JPEG" else pixels * 4  # a copy that lets the file go
    elif img.mode in WIDE_GREY_MODES:
        conversion = pixels * (2 + 4 + 1 + 1 + 4)  # the array PIL hands over, its 32-bit copy, 8-bit grey, "L", RGB
    elif img.mode in ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        conversion = pixels * 4 * 4  # RGBA, white background, composite, RGB
    else:
        conversion = pixels * 4  # RGB
    try:
        rotated = img.getexif().get(EXIF_ORIENTATION, 1) != 1
    except Exception:
        rotated = False
    return decoded * (2 if rotated else 1) + conversion


def max_image_bytes() -> int:
    """:data:`MAX_IMAGE_BYTES`, or DLWP_MAX_IMAGE_MB (MiB) when set."""
    value = os.environ.get("DLWP_MAX_IMAGE_MB", "").strip()
    if not value:
        return MAX_IMAGE_BYTES
    try:
        megabytes = float(value)
    except ValueError:
        megabytes = -1.0
    if not 0 < megabytes < 1 << 40:
        raise ImageInputError(f"DLWP_MAX_IMAGE_MB must be a positive number of MiB, got {value!r}; fix or unset it.")
    return int(megabytes * 2**20)


def check_decode_cost(img: Image.Image, what: str, limit: int | None = None) -> int:
    """:func:`decode_cost` of ``img``, or an ``ImageTooLargeError`` when it is over ``limit``
    (default :func:`max_image_bytes`), raised before anything is decoded."""
    limit = max_image_bytes() if limit is None else limit
    cost = decode_cost(img)
    if cost > limit:
        raise ImageTooLargeError(
            f"{what} is {img.width}x{img.height} pixels in PIL mode {img.mode!r}: decoding it would take "
            f"{cost / 2**20:,.0f} MiB, over the limit of {limit / 2**20:,.0f} MiB per image. Downscale it "
            "(or save it with 8 bits per channel) first."
        )
    return cost


def grey8(img: Image.Image) -> np.ndarray:
    """16- or 32-bit grey scaled to 8 bits (``round(v * 255 / peak)``, clipped; peak 65535 for 16-bit
    files and for wider values, else 255), in 32-bit arithmetic: never a float64 copy."""
    if img.mode == "F":
        array = np.array(img, dtype=np.float32)  # (H, W), one working copy
        peak = 65535.0 if img.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        np.multiply(array, np.float32(255.0 / peak), out=array)
        np.rint(array, out=array)
        return np.clip(array, 0, 255).astype(np.uint8)
    array = np.array(img, dtype=np.int32 if img.mode == "I" else np.uint32)  # (H, W), one working copy
    peak = 65535 if img.mode.startswith("I;16") or array.max(initial=0) > 255 else 255
    if peak == 255:
        return np.clip(array, 0, 255).astype(np.uint8)
    np.clip(array, 0, 65535, out=array)
    array *= 255
    array += peak // 2  # round to nearest: v * 255 / 65535 is never exactly half-way
    array //= peak
    return array.astype(np.uint8)

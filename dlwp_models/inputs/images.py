"""Turning what users pass to ``predict``/``translate``/``caption`` into images.

Accepted, alone or in a list: a path (str or Path), an http(s) URL, a PIL image, a numpy HWC uint8
array, or a CHW / NCHW tensor (uint8, or float in [0, 1]). Each becomes either an RGB PIL image
(EXIF orientation applied; grey, palette, RGBA, CMYK and 16-bit images converted) or a float32
CHW tensor in [0, 1] with three channels. Anything else is refused with a clear error.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import (
    BudgetExceededError,
    HttpLimitError,
    ImageFetchError,
    ImageInputError,
    ImageNotFoundError,
    StallError,
)
from .decode_cost import ALPHA_MODES, EXIF_ORIENTATION, WIDE_GREY_MODES, check_decode_cost, grey8

__all__ = [
    "ImageItem",
    "ImageSource",
    "image_sources",
    "load_images",
    "load_image",
    "to_float_tensor",
    "image_hw",
    "resized_hw",
    "same_size_chunks",
]

log = logging.getLogger(__name__)

ImageItem = Image.Image | torch.Tensor
ImageSource = Callable[[], "list[ImageItem]"]  # decodes one input when called (from any thread)
URL_TIMEOUT = (5.0, 20.0)  # connect, read (seconds)
URL_DEADLINE = 120.0  # the whole download, so a server that drips bytes cannot hang us
URL_MAX_BYTES = 64 * 1024 * 1024  # an image bigger than this over HTTP is refused
_OPEN_LOCK = threading.Lock()
_KINDS = "a path, an http(s) URL, a PIL image, a numpy HWC uint8 array or a CHW/NCHW tensor"


def image_sources(inputs: Any) -> tuple[list[ImageSource], bool]:
    """Check ``inputs`` now, decode later: one source per input, each returning that input's
    RGB PIL images / float CHW tensors when called.

    Everything that needs no decoding is checked here (kinds, that files exist, URL schemes), so
    a wrong argument fails before any work starts. Files and URLs are read when their source is
    called, which may be from a worker thread (PIL and requests release the GIL while they work);
    in-memory images are converted here. Returns ``(sources, single)``: ``single`` is True when
    one image was given (not a list, not an NCHW batch), so callers return one result instead
    of a list.
    """
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise ImageInputError("got an empty list of images; pass at least one image.")
        return [_source(item) for item in inputs], False
    single = not (isinstance(inputs, torch.Tensor) and inputs.dim() == 4)
    return [_source(inputs)], single


def load_images(inputs: Any) -> tuple[list[ImageItem], bool]:
    """Normalise ``inputs`` to a list of RGB PIL images / float CHW tensors, all decoded now.

    Returns ``(items, single)`` as :func:`image_sources` does.
    """
    sources, single = image_sources(inputs)
    return [item for source in sources for item in source()], single


def load_image(item: Any) -> ImageItem:
    """One input (not a list, not a batch) as an RGB PIL image or a float CHW tensor."""
    items, single = load_images(item)
    if not single:
        raise ImageInputError(f"expected one image, got {len(items)}; pass them one at a time.")
    return items[0]


def to_float_tensor(item: ImageItem) -> torch.Tensor:
    """An item from :func:`load_images` as a float32 CHW tensor in [0, 1] (what ToTensor gives)."""
    if isinstance(item, torch.Tensor):
        return item
    array = np.asarray(item, dtype=np.uint8)  # H, W, 3
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)


def image_hw(item: ImageItem) -> tuple[int, int]:
    """(height, width) of an item from :func:`load_images`."""
    if isinstance(item, torch.Tensor):
        return int(item.shape[-2]), int(item.shape[-1])
    width, height = item.size  # PIL
    return height, width


def resized_hw(height: int, width: int, short: int) -> tuple[int, int]:
    """(height, width) after torchvision's ``Resize(short)``: the shorter side becomes ``short``,
    the longer ``int(short * long / short_side)``. (Scriptable: the export pipelines use it.)"""
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def same_size_chunks(tensors: list[torch.Tensor], batch_pixels: int) -> list[list[int]]:
    """Indices of (…, H, W) tensors grouped by shape, in chunks of at most ``batch_pixels`` pixels
    in all (at least one image each): what can be stacked and run together."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape), []).append(i)
    chunks = []
    for shape, indices in groups.items():
        per_chunk = max(1, batch_pixels // (shape[-1] * shape[-2]))
        chunks += [indices[k : k + per_chunk] for k in range(0, len(indices), per_chunk)]
    return chunks


# --------------------------------------------------------------------------- one input


def _source(item: Any) -> ImageSource:
    if isinstance(item, Image.Image):
        loaded: list[ImageItem] = [_to_rgb(_loaded(item), "the PIL image")]
    elif isinstance(item, torch.Tensor):
        loaded = list(_from_tensor(item))
    elif isinstance(item, np.ndarray):
        loaded = [_from_array(item)]
    elif isinstance(item, (str, os.PathLike)):
        text = os.fspath(item)
        if isinstance(item, str) and "://" in text:
            _check_url(text)
            return lambda: [_from_url(text)]
        path = Path(text)
        _check_path(path)
        return lambda: [_decode(path, f"image file {str(path)!r}")]
    elif isinstance(item, bytes):
        raise TypeError("got raw bytes; wrap them as PIL.Image.open(io.BytesIO(data)) or save them to a file.")
    else:
        raise TypeError(f"unsupported image input of type {type(item).__name__}; pass {_KINDS}.")
    return lambda: loaded


def _loaded(img: Image.Image) -> Image.Image:
    """A caller's PIL image with its pixels read now, in this thread (one opened lazily and passed
    twice must not be decoded by two worker threads at once)."""
    try:
        img.load()
    except ValueError as exc:
        if _is_closed(img):
            raise ImageInputError(
                "the PIL image was closed before it was passed (its pixels are gone); "
                "pass it before closing it, or pass img.copy()."
            ) from None
        raise ImageInputError(f"the PIL image could not be decoded ({exc}).") from None
    except (OSError, SyntaxError) as exc:
        raise ImageInputError(
            f"the PIL image could not be decoded ({exc}); its file is damaged or truncated. Re-save or re-download it."
        ) from None
    return img


def _is_closed(img: Image.Image) -> bool:
    """Whether ``img`` was closed: its pixel store then refuses access (Pillow >= 10)."""
    try:
        _ = img.im
    except ValueError:
        return True
    except Exception:
        return False
    return False


def _decode(open_arg: Any, what: str, limit: int | None = None) -> Image.Image:
    """Open and fully decode an image file, turning PIL's failures into clear errors; its memory
    cost is checked first (:func:`check_decode_cost`, ``limit`` bytes). Safe to call from several
    threads at once."""
    try:
        # warnings.catch_warnings swaps process-wide state, so dlwp's threads take turns, and only
        # around Image.open (which reads the header and runs PIL's decompression-bomb check). A
        # user thread changing warning filters at that very moment could still interleave: that
        # is Python's own limit (3.14 adds thread-local warning contexts).
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(open_arg)
        try:
            check_decode_cost(img, what, limit)
            img.load()
            rgb = _to_rgb(img, what)
        except BaseException:
            img.close()
            raise
        # a single-frame JPEG has closed its file after load(): keep its pixels without a copy;
        # other formats may hold their file (or a downloaded buffer) open until closed
        if rgb is img and img.format != "JPEG":
            rgb = img.copy()
        if rgb is not img:
            img.close()
        return rgb
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageInputError(
            f"{what} is too large to decode safely ({exc}). Downscale it first, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust the file."
        ) from None
    except UnidentifiedImageError:
        raise ImageInputError(f"{what} is not an image PIL can read; pass a JPEG, PNG or other image file.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageInputError):
            raise
        raise ImageInputError(
            f"{what} could not be decoded ({exc}); the file is damaged or truncated. Re-save or re-download it."
        ) from None


def _check_path(path: Path) -> None:
    if not path.exists():
        raise ImageNotFoundError(f"image file {str(path)!r} does not exist; check the path.")
    if path.is_dir():
        raise ImageInputError(f"{str(path)!r} is a directory, not an image; pass image files (e.g. {path}/*.jpg).")
    if path.stat().st_size == 0:
        raise ImageInputError(f"image file {str(path)!r} is empty; re-save or re-download it.")


def _check_url(url: str) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ImageInputError(
            f"refusing to open {url!r}: only http(s) URLs are fetched; for a local file pass its path instead."
        )


def _from_url(url: str) -> Image.Image:
    import requests
    import urllib3

    from ..weights import http

    timeout = (URL_TIMEOUT[0], min(URL_TIMEOUT[1], URL_DEADLINE))  # a silent server cannot outlast the deadline
    started = time.monotonic()
    try:
        with requests.get(url, stream=True, timeout=timeout, headers={"Accept-Encoding": "identity"}) as resp:
            if resp.status_code != 200:
                raise ImageFetchError(
                    f"fetching image {url!r} failed: HTTP {resp.status_code} "
                    f"{resp.reason or ''}. Check the URL.".replace("  ", " ")
                )
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype.startswith("text/") or ctype in ("application/json", "application/xhtml+xml"):
                raise ImageFetchError(
                    f"{url!r} returned {ctype}, not an image (a web page rather than "
                    "the picture?). Use the direct link to the image file."
                )
            # a wall-clock deadline checked after every read, however small: a drip cannot hang us
            watch = http.Stopwatch(deadline=URL_DEADLINE)
            data = b"".join(http.read_limited(resp, budget=URL_MAX_BYTES, watch=watch))
    except (StallError, requests.Timeout, urllib3.exceptions.TimeoutError) as exc:
        if not isinstance(exc, StallError) and time.monotonic() - started < URL_DEADLINE:
            raise ImageFetchError(
                f"fetching image {url!r} timed out (limits {timeout[0]:.0f}s to connect, "
                f"{timeout[1]:.0f}s between bytes); try again or download it "
                "first."
            ) from None
        raise ImageFetchError(
            f"fetching image {url!r} took longer than {URL_DEADLINE:.0f}s; download it first and pass the file."
        ) from None
    except BudgetExceededError:
        raise ImageFetchError(
            f"{url!r} is larger than {URL_MAX_BYTES >> 20} MiB; download it and pass the file instead."
        ) from None
    except HttpLimitError as exc:
        raise ImageFetchError(f"fetching image {url!r} failed: {exc}; download it and pass the file.") from None
    except requests.RequestException as exc:
        raise ImageFetchError(
            f"fetching image {url!r} failed ({type(exc).__name__}: {exc}); check the URL and the network."
        ) from None
    except urllib3.exceptions.HTTPError as exc:  # raised by the raw reads
        raise ImageFetchError(
            f"fetching image {url!r} failed ({type(exc).__name__}: {exc}); check the URL and the network."
        ) from None
    if not data:
        raise ImageFetchError(f"{url!r} returned no data; check the URL.")
    return _decode(io.BytesIO(data), f"the image at {url!r}")


def _to_rgb(img: Image.Image, what: str) -> Image.Image:
    """Any PIL mode → RGB, after applying the EXIF orientation. Transparency is composited on white;
    16-bit and 32-bit grey is scaled to 8 bits instead of clipped. ``img`` itself is returned
    (never modified) when nothing needs changing."""
    try:
        if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
            img = ImageOps.exif_transpose(img)
    except Exception as exc:
        log.warning("ignoring unreadable EXIF orientation of %s (%s)", what, exc)
    if img.mode == "RGB":
        return img
    if img.mode in WIDE_GREY_MODES:
        return Image.fromarray(grey8(img), "L").convert("RGB")
    if img.mode in ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageInputError(f"{what} has PIL mode {img.mode!r}, which cannot be converted to RGB ({exc}).") from None


def _from_array(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise ImageInputError(
            f"numpy images must be uint8 HWC arrays, got dtype {array.dtype}; convert with "
            "(array * 255).round().astype(np.uint8) or pass a float tensor in [0, 1]."
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array), "L").convert("RGB")
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageInputError(f"numpy images must have shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}.")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageInputError(f"numpy image has an empty side: shape {array.shape}.")
    mode = "RGB" if array.shape[2] == 3 else "RGBA"
    return _to_rgb(Image.fromarray(np.ascontiguousarray(array), mode), "the numpy image")


def _from_tensor(tensor: torch.Tensor) -> list[torch.Tensor]:
    if tensor.dim() == 3:
        batch = tensor.unsqueeze(0)
    elif tensor.dim() == 4:
        batch = tensor
    else:
        raise ImageInputError(f"image tensors must be CHW or NCHW, got shape {tuple(tensor.shape)}.")
    n, c, h, w = batch.shape
    if c not in (1, 3):
        raise ImageInputError(
            f"image tensors must have 1 or 3 channels (CHW / NCHW), got shape "
            f"{tuple(tensor.shape)} with {c} channels. Drop alpha, or permute an HWC "
            "tensor with .permute(2, 0, 1)."
        )
    if n == 0 or h == 0 or w == 0:
        raise ImageInputError(f"image tensor has an empty dimension: shape {tuple(tensor.shape)}.")
    batch = batch.detach()
    if batch.dtype == torch.uint8:
        batch = batch.float().div_(255)
    elif batch.is_floating_point():
        batch = batch.float()
        if not bool(torch.isfinite(batch).all()):
            raise ImageInputError("image tensor holds NaN or infinite values; pass finite values in [0, 1].")
        low, high = float(batch.min()), float(batch.max())
        if low < 0.0 or high > 1.0:
            raise ImageInputError(
                f"float image tensors must hold values in [0, 1], got [{low:.3g}, {high:.3g}]. Pass the "
                "unnormalised image (the model normalises it), or a uint8 tensor."
            )
    else:
        raise ImageInputError(f"image tensors must be uint8 or float, got {batch.dtype}.")
    if c == 1:
        batch = batch.expand(n, 3, h, w)
    return [img.contiguous() for img in batch]

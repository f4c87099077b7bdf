"""A batch job's INPUTS, expanded lazily: files, folders (searched recursively for image files),
quoted globs, ``@list.txt`` (one path or URL a line) and ``-`` (such a list on standard input).

Nothing is held in memory: :func:`expand` yields one input at a time, in a stable order (names
sorted within each folder), so a listing of 100,000 files costs no more than one of ten.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from ..errors import InputListError

__all__ = ["IMAGE_SUFFIXES", "expand", "count", "is_known_count"]

#: the file name endings a folder search picks up (other files in a folder are left alone)
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)
_GLOB_CHARS = frozenset("*?[")


def expand(specs: Iterable[str], stdin: IO[str] | None = None) -> Iterator[str]:
    """Every input ``specs`` names, one at a time. A path that does not exist (and is no glob) is
    passed on as it is, so that it gets its own error record instead of stopping the job."""
    for spec in specs:
        if spec == "-":
            if stdin is None:
                raise InputListError("'-' reads the list of inputs from standard input, which is not available here.")
            yield from _lines(stdin)
        elif spec.startswith("@") and len(spec) > 1:
            yield from _list_file(spec[1:])
        elif "://" in spec:
            yield spec
        elif os.path.isdir(spec):
            yield from _walk(spec)
        elif not os.path.exists(spec) and _GLOB_CHARS & set(spec):
            yield from _glob(spec)
        else:
            yield spec


def count(specs: Iterable[str]) -> int | None:
    """How many inputs :func:`expand` will yield, by listing them once more (nothing is decoded);
    None when standard input is among them (it can be read only once)."""
    specs = list(specs)
    if not is_known_count(specs):
        return None
    return sum(1 for _ in expand(specs))


def is_known_count(specs: Iterable[str]) -> bool:
    """Whether the inputs can be counted before they are processed (not when one is ``-``)."""
    return "-" not in specs


def _lines(stream: Iterable[str]) -> Iterator[str]:
    for line in stream:
        text = line.strip()
        if text and not text.startswith("#"):
            yield text


def _list_file(path: str) -> Iterator[str]:
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise InputListError(
            f"cannot read the input list {path!r} ({exc.strerror or exc}); check the path after '@'."
        ) from None
    with handle:
        try:
            for line in _lines(handle):
                if "\x00" in line:
                    raise UnicodeDecodeError("utf-8", b"\x00", 0, 1, "a NUL byte")
                yield line
        except UnicodeDecodeError as exc:
            raise InputListError(
                f"the input list {path!r} is not a text file of paths and URLs ({exc.reason}); give '@' a list "
                "with one input a line, or pass the image itself without '@'."
            ) from None


def _walk(folder: str) -> Iterator[str]:
    for root, dirs, files in os.walk(folder, onerror=None, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                yield os.path.join(root, name)


def _glob(pattern: str) -> Iterator[str]:
    for match in glob.iglob(pattern, recursive=True):
        if os.path.isdir(match):
            yield from _walk(match)
        else:
            yield match

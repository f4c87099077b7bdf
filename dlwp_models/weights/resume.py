"""A download that survives its process: ``<cache>/<pin>/<filename>.resume`` holds the bytes so
far and ``<filename>.resume.json`` the source URL and the pins they were fetched for. Only the
file lock's holder touches them; the next run continues with an HTTP Range request to the same
URL, re-hashing the kept bytes first, and nothing is used before the whole file passes its check.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import NamedTuple

from ..safe_write import create_exclusive, write_file
from .manifest import FileSpec
from .store import cached_path

__all__ = ["Resumable", "resumable", "start_resumable", "drop_resumable"]


class Resumable(NamedTuple):
    """A download of a file left by an earlier run: its bytes so far and the URL they came from."""

    path: Path
    url: str
    size: int


def _resume_path(spec: FileSpec) -> Path:
    dest = cached_path(spec)
    return dest.with_name(dest.name + ".resume")


def resumable(spec: FileSpec) -> Resumable | None:
    """Under the lock: the partial download an earlier run left for these pins, if any (a regular
    file, not a link). Its bytes are re-hashed when continued and the whole file checked at the end."""
    path = _resume_path(spec)
    try:
        record = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
        st = os.lstat(path)
    except (OSError, ValueError):
        return None
    if (
        not isinstance(record, dict)
        or record.get("pinned") != spec.integrity()
        or not isinstance(record.get("url"), str)
        or not stat.S_ISREG(st.st_mode)
    ):
        return None
    return Resumable(path, record["url"], st.st_size)


def start_resumable(spec: FileSpec, url: str) -> Path:
    """Under the lock: a new, empty resumable partial file for a download of ``spec`` from ``url``
    (replacing any earlier one), created exclusively, with its record."""
    path = drop_resumable(spec)
    create_exclusive(path).close()
    write_file(
        path.with_name(path.name + ".json"), json.dumps({"url": url, "pinned": spec.integrity()}).encode(), replace=True
    )
    return path


def drop_resumable(spec: FileSpec) -> Path:
    """Under the lock: remove the resumable partial download of ``spec`` and its record; returns
    its path."""
    path = _resume_path(spec)
    path.with_name(path.name + ".json").unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    return path

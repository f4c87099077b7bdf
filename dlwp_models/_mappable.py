"""Memory-mappable copies of legacy-format weight files in the cache.

Files written by ``torch.save`` before PyTorch 1.6 (the book's ``horse2zebra_0.4.0.pth``, the
captioning encoder and decoder) are not zip archives, which ``torch.load``'s ``mmap`` option
needs: every load reads and unpickles the whole file. The first time such a verified cache file is
loaded, a zip-format copy of its tensors is written beside it (``<file>.mmap.pt``, atomically,
with a ``.verified`` record of its own, under a lock so that one process writes it); later loads
map that copy, which costs almost no time or memory. The copy holds exactly the tensors the
original gives (on the CPU); it is used only where it gives the same result as the original would:

* ``map_location`` is None, a string or a ``torch.device`` (a callable or a dict sees the saved
  locations, which the copy no longer has); with None, only when every tensor was saved on the CPU;
* its record matches it (size, modification time) and names the sha256 the original was
  verified with; anything else is rebuilt from the original.

A copy that cannot be written (read-only cache, full disk) is skipped with a log line, and the
original is loaded as before. Removing a file from the cache removes its copy (``_fetch._discard``).
"""

from __future__ import annotations

import logging
import os
import uuid
import zipfile
from pathlib import Path
from typing import Any

import torch

from ._checkpoints import load_state_dict_file
from ._errors import UnsafeFileError
from ._fetch import cache_dir, current_record, file_lock, mappable_copy_path, record_path, write_record

__all__ = ["load_weight_file"]

log = logging.getLogger(__name__)

COPY_LOCK_TIMEOUT = 60.0   # seconds to wait for another process writing the copy; then read the original


def load_weight_file(path: str | os.PathLike, map_location: Any = None) -> Any:
    """:func:`~._checkpoints.load_state_dict_file` for a weight file: the same result, read
    through a memory-mappable copy when ``path`` is a verified legacy-format file in dlwp's cache."""
    path = Path(path)
    if zipfile.is_zipfile(path):              # mappable as it is (every torchvision file)
        return load_state_dict_file(path, map_location, mmap=True)
    source_sha256 = _verified_sha256(path)
    if source_sha256 is None or not isinstance(map_location, (type(None), str, torch.device)):
        return load_state_dict_file(path, map_location)
    copy = mappable_copy_path(path)
    record = _copy_record(copy, source_sha256)
    if record is None:
        try:
            with file_lock(copy, timeout=COPY_LOCK_TIMEOUT):   # one process writes it; the others wait
                record = _copy_record(copy, source_sha256) or _write_copy(path, copy, source_sha256)
        except OSError as exc:                # a read-only cache (no lock file), or a writer that hangs
            _cannot_copy(path, exc)
        if record is None:
            return load_state_dict_file(path, map_location)
    if map_location is None and not set(record["locations"]) <= {"cpu"}:
        return load_state_dict_file(path, map_location)   # saved on a GPU: torch.load puts it back there
    try:
        return load_state_dict_file(copy, map_location, mmap=True)
    except UnsafeFileError as exc:   # damaged since it was written: drop it, use the original
        log.warning("ignoring the mappable copy %s (%s); loading %s", copy.name, exc, path.name)
        _remove(copy)
        return load_state_dict_file(path, map_location)


def _verified_sha256(path: Path) -> str | None:
    """The sha256 in ``path``'s cache record, when ``path`` is in the cache and unchanged since it
    was verified; None for any other file (a user's own checkpoint is never copied)."""
    try:
        if path.resolve().parent != cache_dir().resolve():
            return None
    except OSError:
        return None
    record = current_record(path)
    return record["sha256"] if record is not None and isinstance(record.get("sha256"), str) else None


def _copy_record(copy: Path, source_sha256: str) -> dict | None:
    record = current_record(copy)
    if record is not None and record.get("source_sha256") == source_sha256 and isinstance(record.get("locations"), list):
        return record
    return None


def _write_copy(path: Path, copy: Path, source_sha256: str) -> dict | None:
    """Under the copy's lock: read the original once (to the CPU, noting where each tensor was
    saved) and write its zip-format copy and the copy's record, each atomically. Leftovers of a
    writer that died are removed first. None when the copy cannot be written."""
    for pattern in (f"{copy.name}.*.tmp", f"{copy.name}.*.verified-tmp"):
        for stale in copy.parent.glob(pattern):
            _unlink(stale)
    locations: set[str] = set()

    def to_cpu(storage: Any, location: str) -> Any:
        locations.add(str(location))
        return storage

    before = path.stat()
    raw = load_state_dict_file(path, to_cpu)
    after = path.stat()
    if _verified_sha256(path) != source_sha256 or (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        return None                           # replaced meanwhile (a re-fetch): copy it next time
    tmp = copy.with_name(f"{copy.name}.{uuid.uuid4().hex}.tmp")
    try:
        record_path(copy).unlink(missing_ok=True)        # no record may describe a copy being replaced
        torch.save(raw, tmp)
        os.replace(tmp, copy)
        record = write_record(copy, source_sha256=source_sha256, locations=sorted(locations))
    except (OSError, RuntimeError) as exc:               # torch.save reports I/O errors as RuntimeError
        _cannot_copy(path, exc)
        _remove(copy)
        return None
    finally:
        _unlink(tmp)
    log.info("wrote %s: later loads of %s map it instead of reading the file", copy.name, path.name)
    return record


def _cannot_copy(path: Path, exc: BaseException) -> None:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    log.warning("could not keep a memory-mappable copy of %s (%s); it is read whole on every load",
                path.name, reason)


def _remove(copy: Path) -> None:
    _unlink(copy)
    _unlink(record_path(copy))


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:                           # not ours to remove (e.g. a folder), or gone read-only
        pass

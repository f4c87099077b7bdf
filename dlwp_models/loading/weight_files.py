"""Reading a weight file with the least time and memory: zip-format files are memory-mapped, and
a verified legacy-format cache file is read through its memory-mappable copy.

Files written by ``torch.save`` before PyTorch 1.6 (the book's ``horse2zebra_0.4.0.pth``, the
captioning encoder and decoder) are not zip archives, which ``torch.load``'s ``mmap`` option
needs: every load reads and unpickles the whole file. The first time such a verified cache file is
loaded, a zip-format copy of its tensors is written beside it (the cache's derived copy
``<file>.mmap.pt``; :func:`dlwp_models.weights.derived.derived_copy` owns its place, record, lock
and atomic write); later loads map that copy, which costs almost no time or memory. The copy holds
exactly the tensors the original gives (on the CPU); it is used only where it gives the same
result as the original would:

* ``map_location`` is None, a string or a ``torch.device`` (a callable or a dict sees the saved
  locations, which the copy no longer has); with None, only when every tensor was saved on the CPU;
* its record names the sha256 the original was verified with; anything else is rebuilt.

A copy that cannot be written (read-only cache, full disk) is skipped with a log line, and the
original is loaded as before.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import UnsafeFileError
from ..weights import derived, store
from ..weights.store import CachedFile
from .checkpoints import load_state_dict_file

__all__ = ["load_weight_file"]

log = logging.getLogger(__name__)

COPY_LOCK_TIMEOUT = 60.0  # seconds to wait for another process writing the copy; then read the original


def load_weight_file(file: CachedFile | str | os.PathLike, map_location: Any = None) -> Any:
    """:func:`~.checkpoints.load_state_dict_file` for a weight file: the same result, read
    through a memory-mappable copy when ``file`` is a verified legacy-format cache file (a
    :class:`CachedFile` with a sha256; a plain path is a caller's own file, never copied)."""
    if not isinstance(file, CachedFile):
        file = CachedFile(Path(file))
    if zipfile.is_zipfile(file.path):  # mappable as it is (every torchvision file)
        return load_state_dict_file(file.path, map_location, mmap=True)
    if file.sha256 is None or not isinstance(map_location, (type(None), str, torch.device)):
        return load_state_dict_file(file.path, map_location)
    found = derived.derived_copy(
        file, store.MAPPABLE, lambda tmp: _write_copy(file.path, tmp), lock_timeout=COPY_LOCK_TIMEOUT
    )
    if found is None:
        return load_state_dict_file(file.path, map_location)
    copy, record = found
    if not isinstance(record.get("locations"), list):
        store.remove_derived(file.path, store.MAPPABLE)
        return load_state_dict_file(file.path, map_location)
    if map_location is None and not set(record["locations"]) <= {"cpu"}:
        return load_state_dict_file(file.path, map_location)  # saved on a GPU: torch.load puts it back there
    try:
        return load_state_dict_file(copy, map_location, mmap=True)
    except UnsafeFileError as exc:  # damaged since it was written: drop it, use the original
        log.warning("ignoring the mappable copy %s (%s); loading %s", copy.name, exc, file.name)
        store.remove_derived(file.path, store.MAPPABLE)
        return load_state_dict_file(file.path, map_location)


def _write_copy(path: Path, tmp: Path) -> dict:
    """Read the original once (to the CPU, noting where each tensor was saved) and write its
    zip-format copy to ``tmp``; the fields for the copy's record."""
    locations: set[str] = set()

    def to_cpu(storage: Any, location: str) -> Any:
        locations.add(str(location))
        return storage

    raw = load_state_dict_file(path, to_cpu)
    try:
        torch.save(raw, tmp)
    except RuntimeError as exc:  # torch.save reports I/O errors as RuntimeError
        raise OSError(str(exc)) from None
    return {"locations": sorted(locations)}

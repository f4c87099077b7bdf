"""Copies derived from verified cache files (a legacy file's memory-mappable copy, an ONNX Runtime
graph of the weights): made once under the copy's lock, written through :mod:`dlwp_models.safe_write`,
recorded beside the copy with the sha256 of the file they came from, and trusted only while that
record is current. Their names and removal belong to the cache's layout (:mod:`.store`)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path

from ..errors import first_line
from ..safe_write import staged
from .store import (
    MAPPABLE,
    CachedFile,
    current_record,
    file_lock,
    is_derived_suffix,
    record_path,
    remove_derived,
    unlink_quietly,
    write_record,
)

__all__ = ["derived_copy"]

log = logging.getLogger(__name__)


def _derived_record(copy: Path, source_sha256: str) -> dict | None:
    record = current_record(copy)
    return record if record is not None and record.get("source_sha256") == source_sha256 else None


def _sound_record(copy: Path, source_sha256: str, validate: Callable[[Path, dict], bool] | None) -> dict | None:
    """The copy's record when it is current and (with ``validate``) the copy passes the caller's check."""
    record = _derived_record(copy, source_sha256)
    if record is not None and validate is not None and not validate(copy, record):
        log.warning("%s fails its check (damaged?): making it again", copy.name)
        return None
    return record


def derived_copy(
    file: CachedFile,
    suffix: str,
    make: Callable[[Path], dict | None],
    *,
    lock_timeout: float,
    validate: Callable[[Path, dict], bool] | None = None,
) -> tuple[Path, dict] | None:
    """The copy of verified cache file ``file`` that ``suffix`` names (:data:`MAPPABLE`, or an
    :func:`~.store.onnx_suffix`), and its record; made first when missing, stale or (with ``validate``)
    failing ``validate(copy, record)``, by ``make(tmp)`` (which writes the copy to ``tmp`` and
    returns fields for its record, or None to give up), under the copy's lock (one process makes
    it, the others wait at most ``lock_timeout`` seconds), moved into place atomically. None when
    ``file`` is not a verified cache file or the copy cannot be made (a read-only cache, a full
    disk: logged)."""
    if file.sha256 is None or not is_derived_suffix(suffix):
        return None
    copy = file.path.with_name(file.path.name + suffix)
    record = _sound_record(copy, file.sha256, validate)
    if record is None:
        try:
            with file_lock(copy, timeout=lock_timeout):
                record = _sound_record(copy, file.sha256, validate) or _make_derived(file, copy, make)
        except OSError as exc:  # a read-only cache (no lock file), or a writer that hangs
            _cannot_copy(file.path, copy.name[len(file.path.name) :], exc)
            return None
    return (copy, record) if record is not None else None


def _make_derived(file: CachedFile, copy: Path, make: Callable[[Path], dict | None]) -> dict | None:
    for pattern in (f"{copy.name}.*.tmp", f"{copy.name}.*.verified-tmp"):  # leftovers of a writer that died
        for stale in copy.parent.glob(pattern):
            unlink_quietly(stale)
    before = file.path.stat()
    try:
        record_path(copy).unlink(missing_ok=True)  # no record may describe a copy being replaced
        with staged(
            copy, replace=True, durable=True, temporary=copy.with_name(f"{copy.name}.{uuid.uuid4().hex}.tmp")
        ) as (tmp, out):
            out.close()  # ours, new: ``make`` writes it by its path
            fields = make(tmp)
            after = file.path.stat()
            record = current_record(file.path)
            if (
                fields is None
                or record is None
                or record.get("sha256") != file.sha256
                or (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns)
            ):
                raise _Abandoned  # replaced meanwhile (a re-fetch): copy it next time
        record = write_record(copy, source_sha256=file.sha256, **fields)
    except _Abandoned:
        return None
    except OSError as exc:
        _cannot_copy(file.path, copy.name[len(file.path.name) :], exc)
        remove_derived(file.path, copy.name[len(file.path.name) :])
        return None
    log.info("wrote %s: later loads of %s use it", copy.name, file.path.name)
    return record


class _Abandoned(Exception):
    """A derived copy that must not be kept (its source changed, or ``make`` gave up)."""


def _cannot_copy(path: Path, suffix: str, exc: BaseException) -> None:
    reason = first_line(exc) or type(exc).__name__
    if suffix == MAPPABLE:
        log.warning(
            "could not keep a memory-mappable copy of %s (%s); it is read whole on every load", path.name, reason
        )
    else:
        log.warning(
            "could not keep the derived copy %s%s (%s); it is made again when next needed", path.name, suffix, reason
        )

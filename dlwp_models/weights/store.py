"""The cache of weight files: the one owner of its layout, its records and its locks (the copies
derived from its files are made by :mod:`.derived`).

Layout, under ``torch.hub.get_dir()/checkpoints/dlwp/`` (so ``TORCH_HOME`` moves it)::

    <pin>/<filename>                 a verified file; <pin> is what pins it, e.g. sha256-63fe…0a
    <pin>/<filename>.verified        its record: size, modification time, sha256, the pins
    <pin>/<filename>.lock            held while the file is fetched (across processes)
    <pin>/<filename>.<id>.partial    a download in progress (only the lock's holder writes one)
    <pin>/<filename>.resume          a download that can be continued (only under the lock), and
    <pin>/<filename>.resume.json     the source URL and pins it was for (never trusted unhashed)
    <pin>/<filename>.mmap.pt         a derived copy (a legacy file's mappable copy), with its record
    <pin>/<filename>.<key>.onnx      a derived copy (an ONNX Runtime graph of the weights; <key> names the
                                     torch and onnxruntime versions and the input size), with its record

Keying the folder by the pin keeps two manifests that pin one file name differently (a team
republishing ``resnet50-mine.pth``, a mirror manifest) from evicting each other. A file cached by
the layout before pins (``checkpoints/dlwp/<filename>``) is moved into its folder once, the first
time a spec it was verified against asks for it (no download, no re-hash when its record is
current).

A file is trusted without re-reading it only while its record matches it (same size and
modification time) and names the same pins; anything else is hashed again under the lock.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from ..errors import CacheWriteError, DownloadError
from ..safe_write import Advice, create_exclusive, is_not_writable, write_failure, write_file
from .integrity import hash_file, mismatch
from .manifest import FileSpec

__all__ = [
    "CachedFile",
    "cache_dir",
    "cached_path",
    "verified",
    "settle",
    "install",
    "discard",
    "file_lock",
    "new_partial",
    "remove_stale_partials",
    "recheck",
    "remove_derived",
    "CacheWriteError",
    "disk_error",
    "verify_read_only",
    "onnx_suffix",
    "MAPPABLE",
    "record_path",
    "current_record",
    "write_record",
    "is_derived_suffix",
    "unlink_quietly",
]

log = logging.getLogger(__name__)

LOCK_TIMEOUT = 3600.0  # seconds to wait for another process's download; DLWP_LOCK_TIMEOUT overrides


class CachedFile(NamedTuple):
    """A weight file ready to load: its path, and the sha256 it was verified with (None for a
    caller's own file, which dlwp never verified and never derives copies from)."""

    path: Path
    sha256: str | None = None

    @property
    def name(self) -> str:
        return self.path.name


# --------------------------------------------------------------------------- layout


def cache_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints/dlwp`` (so ``TORCH_HOME`` moves it)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / "dlwp"


def pin_key(spec: FileSpec) -> str:
    """The cache folder name for what pins ``spec``'s bytes (the strongest pin it has)."""
    if spec.sha256:
        return f"sha256-{spec.sha256}"
    if spec.git_blob_sha1:
        return f"gitblob-{spec.git_blob_sha1}"
    if spec.sha256_prefix:
        return f"sha256prefix-{spec.sha256_prefix}"
    parts = json.dumps(spec.integrity(), sort_keys=True).encode()  # pinned only through its parts
    return f"parts-{hashlib.sha256(parts).hexdigest()[:32]}"


def cached_path(spec: FileSpec) -> Path:
    """Where ``spec``'s file lives in the cache once fetched (or where to put it by hand)."""
    return cache_dir() / pin_key(spec) / spec.filename


def _legacy_path(spec: FileSpec) -> Path:
    """Where the layout before pins kept the file."""
    return cache_dir() / spec.filename


# --------------------------------------------------------------------------- records


def record_path(path: Path) -> Path:
    """Where the record of cache file ``path`` lives (``<path>.verified``)."""
    return path.with_name(path.name + ".verified")


def write_record(path: Path, **fields: object) -> dict:
    """Write (atomically) and return ``path``'s record: its size and modification time now, plus
    ``fields``."""
    st = path.stat()
    record = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, **fields}
    write_file(
        record_path(path),
        json.dumps(record).encode("utf-8"),
        replace=True,
        durable=True,
        temporary=path.with_name(f"{path.name}.{uuid.uuid4().hex}.verified-tmp"),
    )
    return record


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(record_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def current_record(path: Path) -> dict | None:
    """``path``'s record when it still describes the file (same size and modification time): a
    stat and a small read, no side effects, so it is safe without the lock."""
    record = _read_record(path)
    try:
        st = path.stat()
    except OSError:
        return None
    if record is not None and record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns:
        return record
    return None


def _verified_by(record: dict | None, spec: FileSpec) -> dict | None:
    """``record`` when it vouches for ``spec``'s bytes (same pins, a sha256, the pinned size)."""
    if (
        record is None
        or record.get("pinned") != spec.integrity()
        or not isinstance(record.get("sha256"), str)
        or (spec.size is not None and spec.size != record.get("size"))
    ):
        return None
    return record


def verified(spec: FileSpec) -> CachedFile | None:
    """The cached file when it was verified against these pins and has not changed since: one
    record read and one stat, no lock, no hashing (the warm path)."""
    path = cached_path(spec)
    record = _verified_by(current_record(path), spec)
    return CachedFile(path, record["sha256"]) if record else None


def install(partial: Path, spec: FileSpec, sha256: str) -> CachedFile:
    """Under the lock: move verified bytes into place (on disk first, so a crash cannot leave a
    recorded file of the right size whose bytes never arrived) and record them."""
    dest = cached_path(spec)
    fd = os.open(partial, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, dest)
    write_record(dest, sha256=sha256, pinned=spec.integrity())
    return CachedFile(dest, sha256)


def verify_read_only(spec: FileSpec) -> CachedFile | None:
    """The cached file when its bytes match ``spec``, checked without the lock and writing nothing
    (for a cache that cannot be written: a read-only mount, another user's folder)."""
    dest = cached_path(spec)
    if not spec.has_own_hash or not dest.is_file():
        return None
    size = dest.stat().st_size
    if spec.size is not None and size != spec.size:
        return None
    sha256, blob = hash_file(dest, want_blob=spec.git_blob_sha1 is not None)
    return None if mismatch(spec, size, sha256, blob) else CachedFile(dest, sha256)


def discard(path: Path) -> None:
    """Remove a cache file, its record, and the copies derived from it."""
    for suffix in _derived_suffixes_of(path):
        remove_derived(path, suffix)
    path.unlink(missing_ok=True)
    record_path(path).unlink(missing_ok=True)


def settle(spec: FileSpec) -> CachedFile | None:
    """Under the file's lock: the cached file when it holds the spec's bytes, else None (fetch it).

    A file placed by hand, or copied without keeping times, is hashed (no network); one cached by
    the layout before pins is moved into its folder. A file failing its size or hash check is
    removed; a file that cannot be checked (pinned only through its parts, without a record) is
    left alone and will be replaced by a fresh join."""
    dest = cached_path(spec)
    if not dest.exists():
        _adopt_legacy(spec, dest)
    record = _verified_by(current_record(dest), spec)
    if record:
        return CachedFile(dest, record["sha256"])
    try:
        size = dest.stat().st_size
    except FileNotFoundError:
        record_path(dest).unlink(missing_ok=True)
        return None
    if spec.size is not None and size != spec.size:
        log.warning("cached %s has %d bytes, expected %d: fetching it again", dest, size, spec.size)
        discard(dest)
        return None
    sha256, blob = hash_file(dest, want_blob=spec.git_blob_sha1 is not None)
    if not spec.has_own_hash:
        # pinned through its parts: the sha256 recorded when the join was verified is the check
        record = _read_record(dest)
        if record is None or record.get("pinned") != spec.integrity() or record.get("sha256") != sha256:
            return None
    reason = mismatch(spec, size, sha256, blob)
    if reason:
        log.warning("cached %s fails verification (%s): fetching it again", dest, reason)
        discard(dest)
        return None
    write_record(dest, sha256=sha256, pinned=spec.integrity())
    return CachedFile(dest, sha256)


def recheck(spec: FileSpec) -> bool | None:
    """Under the file's lock: hash the cached file of ``spec`` again, whatever its record says (for
    ``fetch --verify``: a file corrupted in place may keep its size and date). True when it holds
    the pinned bytes (its record is rewritten), False when it did not (it is removed, so the next
    fetch downloads it again), None when it is not cached."""
    dest = cached_path(spec)
    with file_lock(dest):
        if not dest.is_file():
            return None
        size = dest.stat().st_size
        sha256, blob = hash_file(dest, want_blob=spec.git_blob_sha1 is not None)
        if spec.has_own_hash:
            bad = mismatch(spec, size, sha256, blob)
        else:  # pinned through its parts: the sha256 recorded when the join was verified is the check
            record = _read_record(dest)
            bad = (
                None if record is not None and record.get("sha256") == sha256 else "not the verified join of its parts"
            )
        if bad:
            log.warning("cached %s fails verification (%s): removed", dest, bad)
            discard(dest)
            return False
        write_record(dest, sha256=sha256, pinned=spec.integrity())
        return True


def _adopt_legacy(spec: FileSpec, dest: Path) -> None:
    """Move a file of the layout before pins (``checkpoints/dlwp/<filename>``) into ``dest``'s
    folder, with its record and derived copies, when its record names these pins or it has none
    (then :func:`settle` hashes it). A file verified against other pins stays where it is."""
    old = _legacy_path(spec)
    if not old.is_file():
        return
    record = _read_record(old)
    if record is not None and record.get("pinned") != spec.integrity():
        return
    with file_lock(old):
        if not old.is_file():
            return
        for suffix in ("", *_derived_suffixes_of(old)):
            for name in (old.name + suffix, old.name + suffix + ".verified"):
                source = old.with_name(name)
                if source.is_file():
                    os.replace(source, dest.with_name(name))  # same file system: keeps times and records valid
    log.info("moved %s into the cache's pinned layout (%s)", old.name, dest.parent.name)


# --------------------------------------------------------------------------- locks and partial files


def _lock_timeout() -> float:
    value = os.environ.get("DLWP_LOCK_TIMEOUT")
    if value is None:
        return LOCK_TIMEOUT
    try:
        return float(value)
    except ValueError:
        raise DownloadError(f"DLWP_LOCK_TIMEOUT must be a number of seconds, got {value!r}; fix or unset it.") from None


@contextmanager
def file_lock(path: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold ``<path>.lock`` (across processes) while ``path`` is being written; wait at most
    ``timeout`` seconds (default: DLWP_LOCK_TIMEOUT, else an hour) for another holder. Creates
    ``path``'s folder."""
    from filelock import FileLock
    from filelock import Timeout as LockTimeout

    timeout = _lock_timeout() if timeout is None else timeout
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.with_name(path.name + ".lock")), timeout=1)
    try:
        try:
            lock.acquire()
        except LockTimeout:
            raise
        except OSError as exc:  # read-only (EROFS), not ours (EACCES), full (ENOSPC)
            raise disk_error(exc, Path(lock.lock_file), "create its lock file") from None
    except LockTimeout:
        log.info("waiting for another process that is writing %s", path.name)
        try:
            lock.acquire(timeout=timeout)
        except LockTimeout:
            raise DownloadError(
                f"gave up after {timeout:.0f}s waiting for another process to finish writing "
                f"{path.name} (lock {lock.lock_file}). If no other dlwp process is running, delete "
                "the lock file and try again; DLWP_LOCK_TIMEOUT sets the wait."
            ) from None
    try:
        yield
    finally:
        lock.release()


def new_partial(spec: FileSpec) -> Path:
    """A new, empty file with a unique name for a download of ``spec`` in progress (in its cache
    folder), created exclusively."""
    dest = cached_path(spec)
    partial = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.partial")
    create_exclusive(partial).close()
    return partial


def _cache_advice(where: Path) -> Advice:
    return Advice(
        full=(
            f"the disk holding {where} is full. Free some space there, or set TORCH_HOME to a folder "
            "on a disk with room, and run again (a download resumes where it stopped)"
        ),
        not_writable=(
            f"the cache folder {where} cannot be written. A cached file whose .verified record is "
            "missing or out of date must be checked under its lock: make the folder writable, copy "
            "the cache with its .verified files keeping times (cp -p), or set TORCH_HOME to a "
            "writable folder"
        ),
        other="check the cache folder (or set TORCH_HOME to another folder) and try again",
    )


def disk_error(exc: OSError, path: Path, doing: str) -> CacheWriteError:
    """A clear message for a file-system failure while writing ``path`` in the cache."""
    error = write_failure(exc, path, doing, _cache_advice(path.parent), CacheWriteError)
    assert isinstance(error, CacheWriteError)
    error.read_only = is_not_writable(exc)
    return error


def remove_stale_partials(spec: FileSpec) -> None:
    """Partial files are only written by the lock's holder: any found while holding it were left
    by a process that died mid-download."""
    dest = cached_path(spec)
    for stale in dest.parent.glob(f"{dest.name}.*.partial"):
        log.info("removing %s, left by an interrupted download", stale.name)
        stale.unlink(missing_ok=True)


# --------------------------------------------------------------------------- derived copies

MAPPABLE = ".mmap.pt"  # a legacy-format file's zip-format (memory-mappable) copy
DERIVED_SUFFIXES = (MAPPABLE,)
_ONNX_SUFFIX = re.compile(r"\.[A-Za-z0-9_.-]+\.onnx")  # an ONNX Runtime graph (see onnx_suffix)


def onnx_suffix(*parts: str) -> str:
    """The derived-copy suffix of an ONNX graph made for ``parts`` (e.g. the torch and onnxruntime
    versions and the input size): ``.<part>.<part>….onnx``, each part reduced to letters, digits,
    dots and ``_``, so that a change in any part names another copy."""
    return "." + ".".join(re.sub(r"[^A-Za-z0-9.]+", "_", part) for part in parts) + ".onnx"


def is_derived_suffix(suffix: str) -> bool:
    return suffix in DERIVED_SUFFIXES or _ONNX_SUFFIX.fullmatch(suffix) is not None


def _derived_suffixes_of(path: Path) -> list[str]:
    """The suffixes of the copies derived from ``path`` that may exist (the mappable copy, and
    every ONNX graph found beside it)."""
    onnx = [copy.name[len(path.name) :] for copy in path.parent.glob(f"{glob.escape(path.name)}.*.onnx")]
    return [*DERIVED_SUFFIXES, *sorted(suffix for suffix in onnx if is_derived_suffix(suffix))]


def remove_derived(path: Path, suffix: str) -> None:
    """Remove the copy of ``path`` that ``suffix`` names, and its record."""
    copy = path.with_name(path.name + suffix)
    unlink_quietly(copy)
    unlink_quietly(record_path(copy))


def unlink_quietly(path: Path) -> None:
    """Remove ``path`` if it is there and ours to remove (never raises)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:  # not ours to remove (e.g. a folder), or gone read-only
        pass

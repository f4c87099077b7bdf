"""Verified fetching of weight files into the cache.

Order of concerns for one file (design.md §3): a verified cache hit costs no request; otherwise
take a per-file lock, try each source (DLWP_MIRROR bases, then the manifest's URLs, then the
file's parts), stream into a unique ``.partial`` file while hashing, resume with HTTP Range after
a dropped connection, check size and hash, and move the file into place atomically. A source
that fails (404, mismatch, too many retries) hands over to the next; when all fail, one error
lists each source and why.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # requests, tqdm and filelock are imported where a download happens:
    import requests  # a verified cache hit never pays for them

from ._errors import DownloadError, IntegrityError, OfflineError
from ._manifest import FileSpec, WeightSet

__all__ = ["fetch", "fetch_file", "cache_dir", "cached_path", "is_offline"]

log = logging.getLogger(__name__)

CHUNK = 1 << 20                 # file reads
NET_CHUNK = 1 << 20             # network reads: a dropped connection loses at most this much
TIMEOUT = (10.0, 60.0)          # connect, read (seconds)
MAX_ATTEMPTS = 5                # per source, counting resumes after dropped connections
BACKOFF = 0.5                   # seconds, doubled per attempt
MAX_RETRY_AFTER = 60.0          # a longer Retry-After gives up on that source instead of waiting
LOCK_TIMEOUT = 3600.0            # seconds to wait for another process's download; DLWP_LOCK_TIMEOUT overrides
MAPPABLE_SUFFIX = ".mmap.pt"    # a legacy-format file's zip-format copy: <file>.mmap.pt (see _mappable)
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_USER_AGENT = "dlwp-models/0.1 (+https://github.com/org/dlwp)"


def cache_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints/dlwp`` (so ``TORCH_HOME`` moves it)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / "dlwp"


def cached_path(spec: FileSpec) -> Path:
    """Where a file lives in the cache once fetched."""
    return cache_dir() / spec.filename


def is_offline() -> bool:
    """True when DLWP_OFFLINE asks for no network at all."""
    return os.environ.get("DLWP_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _mirror_bases() -> list[str]:
    return [b.strip().rstrip("/") for b in os.environ.get("DLWP_MIRROR", "").split(",") if b.strip()]


# --------------------------------------------------------------------------- hashing


class _Digests:
    """sha256 always, plus git's blob sha1 when the spec pins one (it needs the size up front)."""

    def __init__(self, spec: FileSpec, total: int | None) -> None:
        self.sha256 = hashlib.sha256()
        self.blob: "hashlib._Hash | None" = None
        self.count = 0
        self._want_blob = spec.git_blob_sha1 is not None
        if self._want_blob and total is not None:
            self.blob = hashlib.sha1(b"blob %d\0" % total)

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        if self.blob is not None:
            self.blob.update(data)
        self.count += len(data)

    def blob_hexdigest(self, path: Path) -> str:
        if self.blob is not None:
            return self.blob.hexdigest()
        return _hash_file(path, want_blob=True)[1]  # size was unknown while streaming


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    return _hash_file(path, want_blob=False)[0]


def _hash_file(path: Path, *, want_blob: bool) -> tuple[str, str | None]:
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(b"blob %d\0" % size) if want_blob else None
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            sha256.update(chunk)
            if blob is not None:
                blob.update(chunk)
    return sha256.hexdigest(), blob.hexdigest() if blob is not None else None


def _check(spec: FileSpec, size: int, sha256: str, blob: str | None) -> str | None:
    """The reason the bytes do not match the spec, or None when they do."""
    if spec.size is not None and size != spec.size:
        return f"size mismatch: expected {spec.size} bytes, got {size}"
    if spec.sha256 is not None and sha256 != spec.sha256:
        return f"sha256 mismatch: expected {spec.sha256}, got {sha256}"
    if spec.sha256_prefix is not None and not sha256.startswith(spec.sha256_prefix):
        return f"sha256 mismatch: expected prefix {spec.sha256_prefix}, got {sha256}"
    if spec.git_blob_sha1 is not None and blob != spec.git_blob_sha1:
        return f"git blob sha1 mismatch: expected {spec.git_blob_sha1}, got {blob}"
    return None


# --------------------------------------------------------------------------- cache records


def record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified")


def mappable_copy_path(dest: Path) -> Path:
    """Where the memory-mappable copy of legacy-format cache file ``dest`` lives (``_mappable``)."""
    return dest.with_name(dest.name + MAPPABLE_SUFFIX)


def write_record(dest: Path, **fields: object) -> dict:
    """Write (atomically) and return ``dest``'s ``.verified`` record: its size and modification
    time now, plus ``fields``."""
    st = dest.stat()
    record = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, **fields}
    tmp = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.verified-tmp")
    try:
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, record_path(dest))
    finally:
        tmp.unlink(missing_ok=True)
    return record


def current_record(dest: Path) -> dict | None:
    """``dest``'s record when it still describes the file (same size and modification time); a
    stat and a small read, no side effects, so it is safe without the lock."""
    try:
        record = json.loads(record_path(dest).read_text(encoding="utf-8"))
        st = dest.stat()
    except (OSError, ValueError):
        return None
    if isinstance(record, dict) and record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns:
        return record
    return None


def _write_record(dest: Path, spec: FileSpec, sha256: str) -> None:
    write_record(dest, sha256=sha256, pinned=spec.integrity())


def _discard(dest: Path) -> None:
    """Remove a cache file, its record, and the memory-mappable copy made from it."""
    copy = mappable_copy_path(dest)
    for path in (dest, record_path(dest), copy, record_path(copy)):
        path.unlink(missing_ok=True)


def _record_for(dest: Path, spec: FileSpec) -> dict | None:
    """The record written when ``dest`` was verified against these same pins, if any."""
    try:
        record = json.loads(record_path(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(record, dict) and record.get("pinned") == spec.integrity():
        return record
    return None


def _recorded(dest: Path, spec: FileSpec) -> bool:
    """True when ``dest`` was verified against these pins and has not changed since (same size
    and modification time)."""
    record = current_record(dest)
    return (record is not None and record.get("pinned") == spec.integrity()
            and (spec.size is None or spec.size == record["size"]))


def _verify_cached(dest: Path, spec: FileSpec) -> bool:
    """Under the file's lock: True when ``dest`` holds the spec's bytes, hashing it (no network)
    when its record is missing or stale (e.g. copied without keeping times). A file that fails
    its size or hash check is removed; a file that cannot be checked (pinned only through its
    parts, without a record) is left alone and will be replaced by a fresh join."""
    if _recorded(dest, spec):
        return True
    try:
        size = dest.stat().st_size
    except FileNotFoundError:
        record_path(dest).unlink(missing_ok=True)
        return False
    if spec.size is not None and size != spec.size:
        log.warning("cached %s has %d bytes, expected %d: fetching it again", dest, size, spec.size)
        _discard(dest)
        return False
    sha256, blob = _hash_file(dest, want_blob=spec.git_blob_sha1 is not None)
    if not spec.has_own_hash:
        # pinned through its parts: the sha256 recorded when the join was verified is the check
        record = _record_for(dest, spec)
        if record is None or record.get("sha256") != sha256:
            return False
    reason = _check(spec, size, sha256, blob)
    if reason:
        log.warning("cached %s fails verification (%s): fetching it again", dest, reason)
        _discard(dest)
        return False
    _write_record(dest, spec, sha256)
    return True


def verified_sha256(spec: FileSpec) -> str:
    """The sha256 of a file :func:`fetch_file` has placed in the cache, from its record when that
    is current (no re-read of the file), else by hashing it."""
    dest = cached_path(spec)
    record = _record_for(dest, spec) if _recorded(dest, spec) else None
    return record["sha256"] if record and record.get("sha256") else sha256_file(dest)


def _remove_stale_partials(dest: Path) -> None:
    """Partial files are only written by the lock's holder: any found while holding it were left
    by a process that died mid-download."""
    for stale in dest.parent.glob(f"{dest.name}.*.partial"):
        log.info("removing %s, left by an interrupted download", stale.name)
        stale.unlink(missing_ok=True)


# --------------------------------------------------------------------------- downloading


class _SourceFailed(Exception):
    """This source cannot provide the file; the reason goes into the final error."""


def _retry_after(response: requests.Response, attempt: int) -> float:
    value = response.headers.get("Retry-After")
    if value:
        try:
            delay = float(value)
        except ValueError:
            try:
                delay = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError, IndexError):
                log.info("ignoring malformed Retry-After %r", value)
                delay = BACKOFF * 2**attempt
        delay = max(0.0, delay)
        if delay > MAX_RETRY_AFTER:
            raise _SourceFailed(f"HTTP {response.status_code} with Retry-After {value!r} (longer than "
                                f"{MAX_RETRY_AFTER:.0f}s)")
        return delay
    return BACKOFF * 2**attempt


def _check_scheme(url: str, spec: FileSpec) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme == "https":
        return
    if scheme == "http":
        if spec.strongly_pinned:
            return
        raise _SourceFailed("plain http:// is refused for a file pinned only by sha256_prefix; "
                            "serve it over https or pin it by full sha256 or git_blob_sha1")
    raise _SourceFailed(f"unsupported URL scheme {scheme!r}; only https (or http with a full hash) is fetched")


def _total_from(response: requests.Response, offset: int) -> int | None:
    if response.status_code == 206:
        crange = response.headers.get("Content-Range", "")
        total = crange.rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _download(session: requests.Session, url: str, spec: FileSpec, partial: Path, progress: bool) -> str:
    """Stream ``url`` into ``partial``; return its sha256 once size and hash match the spec."""
    import requests
    from tqdm.auto import tqdm

    _check_scheme(url, spec)
    digests: _Digests | None = None
    bar: tqdm | None = None
    attempt = 0
    try:
        with open(partial, "wb") as out:
            while True:
                offset = digests.count if digests is not None else 0
                headers = {"Range": f"bytes={offset}-"} if offset else {}
                try:
                    with session.get(url, headers=headers, stream=True, timeout=TIMEOUT) as resp:
                        if resp.url != url:
                            _check_scheme(resp.url, spec)  # a redirect must not downgrade security
                        if resp.status_code in _RETRY_STATUS:
                            attempt += 1
                            if attempt >= MAX_ATTEMPTS:
                                raise _SourceFailed(f"HTTP {resp.status_code} after {attempt} attempts")
                            delay = _retry_after(resp, attempt - 1)
                            log.info("%s answered HTTP %d; retrying in %.1fs", url, resp.status_code, delay)
                            time.sleep(delay)
                            continue
                        if resp.status_code == 416 and offset:
                            digests = None  # our partial does not fit the remote file: start over
                            out.seek(0)
                            out.truncate()
                            continue
                        if resp.status_code not in (200, 206):
                            raise _SourceFailed(f"HTTP {resp.status_code} {resp.reason or ''}".strip())
                        resumed = resp.status_code == 206
                        if resumed and not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                            raise _SourceFailed(f"server answered a range request with "
                                                f"Content-Range {resp.headers.get('Content-Range')!r}")
                        total = _total_from(resp, offset)
                        if spec.size is not None and total is not None and total != spec.size:
                            raise _SourceFailed(f"size mismatch: server announces {total} bytes, "
                                                f"expected {spec.size}")
                        if not resumed:
                            out.seek(0)
                            out.truncate()
                            digests = _Digests(spec, total if total is not None else spec.size)
                        if bar is None:
                            bar = tqdm(total=total, initial=0, unit="B", unit_scale=True,
                                       unit_divisor=1024, desc=spec.filename, disable=not progress,
                                       leave=False)
                        for chunk in resp.iter_content(NET_CHUNK):
                            out.write(chunk)
                            digests.update(chunk)
                            bar.update(len(chunk))
                            if spec.size is not None and digests.count > spec.size:
                                raise _SourceFailed(f"size mismatch: more than the expected {spec.size} bytes")
                        if total is not None and digests.count < total:
                            raise requests.ConnectionError(f"body ended at {digests.count} of {total} bytes")
                        break
                except (requests.ConnectionError, requests.Timeout,
                        requests.exceptions.ChunkedEncodingError) as exc:
                    attempt += 1
                    if attempt >= MAX_ATTEMPTS:
                        raise _SourceFailed(f"connection failed after {attempt} attempts: {exc}") from None
                    have = digests.count if digests is not None else 0
                    log.info("connection to %s dropped at %d bytes (%s); resuming", url, have, exc)
                    time.sleep(BACKOFF * 2 ** (attempt - 1))
                except requests.RequestException as exc:
                    raise _SourceFailed(f"request failed: {exc}") from None
        assert digests is not None
        size = partial.stat().st_size
        sha256 = digests.sha256.hexdigest()
        blob = digests.blob_hexdigest(partial) if spec.git_blob_sha1 else None
        reason = _check(spec, size, sha256, blob)
        if reason:
            raise _SourceFailed(reason)
        return sha256
    finally:
        if bar is not None:
            bar.close()


def _join_parts(spec: FileSpec, partial: Path, progress: bool) -> str:
    """Fetch each part (each checked by its own spec), concatenate into ``partial``, check the whole."""
    part_paths = [fetch_file(part, progress=progress) for part in spec.parts]
    digests = _Digests(spec, sum(p.stat().st_size for p in part_paths))
    with open(partial, "wb") as out:
        for path in part_paths:
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    out.write(chunk)
                    digests.update(chunk)
    reason = _check(spec, digests.count, digests.sha256.hexdigest(), digests.blob_hexdigest(partial))
    if reason:
        raise _SourceFailed(f"joined parts: {reason}")
    return digests.sha256.hexdigest()


def _lock_timeout() -> float:
    value = os.environ.get("DLWP_LOCK_TIMEOUT")
    if value is None:
        return LOCK_TIMEOUT
    try:
        return float(value)
    except ValueError:
        raise DownloadError(f"DLWP_LOCK_TIMEOUT must be a number of seconds, got {value!r}; fix or unset it.") from None


@contextmanager
def file_lock(dest: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold ``<dest>.lock`` (across processes) while ``dest`` is being written; wait at most
    ``timeout`` seconds (default: DLWP_LOCK_TIMEOUT, else an hour) for another holder."""
    from filelock import FileLock, Timeout as LockTimeout

    timeout = _lock_timeout() if timeout is None else timeout
    lock = FileLock(str(dest.with_name(dest.name + ".lock")), timeout=1)
    try:
        lock.acquire()
    except LockTimeout:
        log.info("waiting for another process that is fetching %s", dest.name)
        try:
            lock.acquire(timeout=timeout)
        except LockTimeout:
            raise DownloadError(
                f"gave up after {timeout:.0f}s waiting for another process to finish fetching "
                f"{dest.name} (lock {lock.lock_file}). If no other dlwp process is running, delete "
                "the lock file and try again; DLWP_LOCK_TIMEOUT sets the wait.") from None
    try:
        yield
    finally:
        lock.release()


def fetch_file(spec: FileSpec, progress: bool = True) -> Path:
    """Return the cached path of one file, downloading and verifying it first if needed."""
    dest = cached_path(spec)
    if _recorded(dest, spec):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest):
        if _verify_cached(dest, spec):  # copied in by hand, or finished by another process
            return dest
        if is_offline():
            if dest.exists():
                raise OfflineError(
                    f"{dest} cannot be checked offline: it is pinned only through its parts and its "
                    f"{record_path(dest).name} record is missing. Copy the .verified files along with "
                    "the cache folder, or unset DLWP_OFFLINE to join the parts again.")
            raise OfflineError(
                f"{spec.filename} is not in the cache ({dest}) and DLWP_OFFLINE=1 forbids downloading. "
                "Run `python -m dlwp_models fetch NAME` on a machine with network and copy its cache "
                "folder (with the .verified files) here, or unset DLWP_OFFLINE.")
        _remove_stale_partials(dest)
        failures: list[str] = []
        # a file pinned only through its parts is never taken whole from anywhere: nothing could check it
        sources = ([f"{base}/{spec.filename}" for base in _mirror_bases()] + list(spec.urls)
                   if spec.has_own_hash else [])
        import requests

        with requests.Session() as session:
            session.headers["User-Agent"] = _USER_AGENT
            session.headers["Accept-Encoding"] = "identity"  # sizes, hashes and ranges are of the file's bytes
            for url in sources:
                if _try_source(dest, spec, lambda p: _download(session, url, spec, p, progress), url, failures):
                    return dest
        if spec.parts and _try_source(dest, spec, lambda p: _join_parts(spec, p, progress),
                                      f"{len(spec.parts)} parts", failures):
            for part in spec.parts:  # the joined file is what is used; don't keep the bytes twice
                _discard(cached_path(part))
            return dest
    listing = "\n".join(f"  - {line}" for line in failures) or "  (no sources listed)"
    raise DownloadError(
        f"could not fetch {spec.filename}; every source failed:\n{listing}\n"
        "Check the network (or DLWP_MIRROR), or download the file by other means and place it in "
        f"{dest.parent}; it is accepted once it matches the pinned hash.")


def _try_source(dest: Path, spec: FileSpec, produce, label: str, failures: list[str]) -> bool:
    partial = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.partial")
    try:
        sha256 = produce(partial)
        os.replace(partial, dest)
        _write_record(dest, spec, sha256)
        log.info("fetched %s from %s", spec.filename, label)
        return True
    except (_SourceFailed, DownloadError, IntegrityError, OfflineError) as exc:
        log.warning("source %s failed for %s: %s", label, spec.filename, exc)
        failures.append(f"{label}: {exc}")
        return False
    finally:
        partial.unlink(missing_ok=True)


def fetch(weights: WeightSet, progress: bool = True) -> dict[str, Path]:
    """Fetch every file of a weight set; returns ``{role: cached path}``."""
    from ._manifest import get_weights

    weights = get_weights(weights)
    return {role: fetch_file(spec, progress=progress) for role, spec in weights.files.items()}

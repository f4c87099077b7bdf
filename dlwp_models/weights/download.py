"""Verified fetching of weight files into the cache (:mod:`.store`).

Order of concerns for one file (design.md §3): a verified cache hit costs no request; otherwise
take the file's lock, try each source (DLWP_MIRROR bases, then the manifest's URLs, then the
file's parts), stream into a unique ``.partial`` file while hashing, resume with HTTP Range after
a dropped connection, check size and hash, and move the file into place atomically. A source
that fails (404, mismatch, too many retries) hands over to the next; when all fail, one error
lists each source and why. What comes back is what was verified: a
:class:`~.store.CachedFile` (path and sha256).
"""

from __future__ import annotations

import email.utils
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit

if TYPE_CHECKING:  # requests and tqdm are imported where a download happens:
    import requests  # a verified cache hit never pays for them

from ..errors import DownloadError, IntegrityError, OfflineError
from . import store
from .integrity import CHUNK, Digests, mismatch
from .manifest import FileSpec, WeightSet, get_weights
from .store import CachedFile

__all__ = ["fetch", "fetch_files", "fetch_file", "is_offline"]

log = logging.getLogger(__name__)

NET_CHUNK = 1 << 20             # network reads: a dropped connection loses at most this much
TIMEOUT = (10.0, 60.0)          # connect, read (seconds)
MAX_ATTEMPTS = 5                # per source, counting resumes after dropped connections
BACKOFF = 0.5                   # seconds, doubled per attempt
MAX_RETRY_AFTER = 60.0          # a longer Retry-After gives up on that source instead of waiting
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_USER_AGENT = "dlwp-models/0.1 (+https://github.com/org/dlwp)"


def is_offline() -> bool:
    """True when DLWP_OFFLINE asks for no network at all."""
    return os.environ.get("DLWP_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _mirror_bases() -> list[str]:
    return [b.strip().rstrip("/") for b in os.environ.get("DLWP_MIRROR", "").split(",") if b.strip()]


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
    digests: Digests | None = None
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
                            digests = Digests(spec, total if total is not None else spec.size)
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
        reason = mismatch(spec, size, sha256, blob)
        if reason:
            raise _SourceFailed(reason)
        return sha256
    finally:
        if bar is not None:
            bar.close()


def _join_parts(spec: FileSpec, partial: Path, progress: bool) -> str:
    """Fetch each part (each checked by its own spec), concatenate into ``partial``, check the whole."""
    parts = [fetch_file(part, progress=progress).path for part in spec.parts]
    digests = Digests(spec, sum(p.stat().st_size for p in parts))
    with open(partial, "wb") as out:
        for path in parts:
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    out.write(chunk)
                    digests.update(chunk)
    reason = mismatch(spec, digests.count, digests.sha256.hexdigest(), digests.blob_hexdigest(partial))
    if reason:
        raise _SourceFailed(f"joined parts: {reason}")
    return digests.sha256.hexdigest()


def fetch_file(spec: FileSpec, progress: bool = True) -> CachedFile:
    """One file in the cache, downloaded and verified first if needed: its path and sha256."""
    hit = store.verified(spec)
    if hit is not None:
        return hit
    dest = store.cached_path(spec)
    with store.file_lock(dest):
        hit = store.settle(spec)  # placed by hand, cached by an older layout, or fetched by another process
        if hit is not None:
            return hit
        if is_offline():
            if dest.exists():
                raise OfflineError(
                    f"{dest} cannot be checked offline: it is pinned only through its parts and its "
                    f"{dest.name}.verified record is missing. Copy the .verified files along with "
                    "the cache folder, or unset DLWP_OFFLINE to join the parts again.")
            raise OfflineError(
                f"{spec.filename} is not in the cache ({dest}) and DLWP_OFFLINE=1 forbids downloading. "
                "Run `python -m dlwp_models fetch NAME` on a machine with network and copy its cache "
                "folder (with the .verified files) here, or unset DLWP_OFFLINE.")
        store.remove_stale_partials(spec)
        failures: list[str] = []
        # a file pinned only through its parts is never taken whole from anywhere: nothing could check it
        sources = ([f"{base}/{spec.filename}" for base in _mirror_bases()] + list(spec.urls)
                   if spec.has_own_hash else [])
        import requests

        with requests.Session() as session:
            session.headers["User-Agent"] = _USER_AGENT
            session.headers["Accept-Encoding"] = "identity"  # sizes, hashes and ranges are of the file's bytes
            for url in sources:
                got = _try_source(spec, lambda p: _download(session, url, spec, p, progress), url, failures)
                if got is not None:
                    return got
        if spec.parts:
            got = _try_source(spec, lambda p: _join_parts(spec, p, progress), f"{len(spec.parts)} parts", failures)
            if got is not None:
                for part in spec.parts:  # the joined file is what is used; don't keep the bytes twice
                    store.discard(store.cached_path(part))
                return got
    listing = "\n".join(f"  - {line}" for line in failures) or "  (no sources listed)"
    raise DownloadError(
        f"could not fetch {spec.filename}; every source failed:\n{listing}\n"
        "Check the network (or DLWP_MIRROR), or download the file by other means and place it at "
        f"{dest}; it is accepted once it matches the pinned hash.")


def _try_source(spec: FileSpec, produce: Callable[[Path], str], label: str,
                failures: list[str]) -> CachedFile | None:
    partial = store.new_partial(spec)
    try:
        cached = store.install(partial, spec, produce(partial))
        log.info("fetched %s from %s", spec.filename, label)
        return cached
    except (_SourceFailed, DownloadError, IntegrityError, OfflineError) as exc:
        log.warning("source %s failed for %s: %s", label, spec.filename, exc)
        failures.append(f"{label}: {exc}")
        return None
    finally:
        partial.unlink(missing_ok=True)


def fetch_files(weights: WeightSet, progress: bool = True) -> dict[str, CachedFile]:
    """Every file of a weight set, fetched and verified: ``{role: CachedFile}``."""
    weights = get_weights(weights)
    return {role: fetch_file(spec, progress=progress) for role, spec in weights.files.items()}


def fetch(weights: "WeightSet | str", progress: bool = True) -> dict[str, Path]:
    """Fetch every file of a weight set (a :class:`WeightSet` or its name); returns ``{role: cached path}``."""
    return {role: cached.path for role, cached in fetch_files(weights, progress).items()}

"""Verified fetching of weight files into the cache (:mod:`.store`).

Order of concerns for one file (design.md §3): a verified cache hit costs no request; otherwise
take the file's lock, try each source (the file beside its manifest for an entry without URLs,
a copy allowed offline (:mod:`.local`); then DLWP_MIRROR bases, the manifest's URLs, the file's
parts), stream into a unique ``.partial`` file while hashing, resume with HTTP Range after
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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

if TYPE_CHECKING:  # requests and tqdm are imported where a download happens:
    import requests  # a verified cache hit never pays for them

from ..errors import BudgetExceededError, DownloadError, HttpLimitError, IntegrityError, OfflineError, StallError
from . import local, store
from .integrity import CHUNK, Digests, mismatch
from .manifest import FileSpec, WeightSet, get_weights
from .store import CachedFile

__all__ = ["fetch", "fetch_files", "fetch_file", "is_offline", "verify_cached"]

log = logging.getLogger(__name__)

TIMEOUT = (10.0, 60.0)  # connect, read (seconds)
MAX_ATTEMPTS = 5  # per source, counting resumes after dropped connections
BACKOFF = 0.5  # seconds, doubled per attempt
MAX_RETRY_AFTER = 60.0  # a longer Retry-After gives up on that source instead of waiting
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_USER_AGENT = "dlwp-models/0.1 (+https://github.com/org/dlwp)"


def is_offline() -> bool:
    """True when DLWP_OFFLINE asks for no network at all."""
    return os.environ.get("DLWP_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _mirror_bases() -> list[str]:
    return [b.strip().rstrip("/") for b in os.environ.get("DLWP_MIRROR", "").split(",") if b.strip()]


# --------------------------------------------------------------------------- downloading


class _SourceFailed(Exception):
    """This source cannot provide the file; the reason goes into the final error. ``keep``: the
    bytes so far are good as far as anyone knows (a stall, a dropped connection) and are kept for
    the next run to continue."""

    def __init__(self, reason: str, keep: bool = False) -> None:
        super().__init__(reason)
        self.keep = keep


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
            raise _SourceFailed(
                f"HTTP {response.status_code} with Retry-After {value!r} (longer than {MAX_RETRY_AFTER:.0f}s)"
            )
        return delay
    return BACKOFF * 2**attempt


def _check_scheme(url: str, spec: FileSpec) -> None:
    """Refuse ``url`` (a source, or any hop of its redirects, before it is requested) when its
    scheme is weaker than the file's pin allows."""
    from . import http  # only a download needs it: a warm load imports nothing of it

    scheme = urlsplit(url).scheme.lower()
    if scheme == "https":
        return
    if scheme == "http":
        if spec.strongly_pinned:
            return
        raise _SourceFailed(
            f"plain http:// is refused for a file pinned only by sha256_prefix "
            f"({http.url_host(url)}); serve it over https or pin it by full sha256 or git_blob_sha1"
        )
    raise _SourceFailed(f"unsupported URL scheme {scheme!r}; only https (or http with a full hash) is fetched")


def _total_from(response: requests.Response) -> int | None:
    if response.status_code == 206:
        crange = response.headers.get("Content-Range", "")
        total = crange.rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


class _Stream:
    """One download of ``spec`` from ``url`` into its resumable partial file (see :mod:`.resume`)."""

    def __init__(self, session: requests.Session, url: str, spec: FileSpec, progress: bool) -> None:
        from . import http  # only a download needs it: a warm load imports nothing of it

        self.session, self.url, self.spec, self.progress = session, url, spec, progress
        if spec.size is not None:
            self.budget = spec.size
        elif spec.budget is not None:  # the weight set's meta says how large the file is
            self.budget = min(spec.budget, http.max_download_bytes())
        else:
            self.budget = http.max_download_bytes()
        self.rate, self.window = http.stall_limits()
        self.timeout = (TIMEOUT[0], min(TIMEOUT[1], self.window))

    def _budget_hint(self) -> str:
        return _META_BUDGET_HINT if self.spec.size is None and self.spec.budget is not None else _BUDGET_HINT

    def run(self) -> tuple[Path, str]:
        """Stream the file; return the partial's path and sha256 once size and hash match the spec.
        Bytes kept by an earlier run for this URL and pin are continued; if the result then fails
        its check, it is fetched once more from the start."""
        from . import resume  # only a download needs it: a warm load imports nothing of it

        try:
            kept = resume.resumable(self.spec)
            if kept is not None and kept.url == self.url and 0 < kept.size <= self.budget:
                log.info("continuing the download of %s at byte %d", self.spec.filename, kept.size)
                reason, partial, sha256 = self._fetch(kept.path, kept.size)
                if reason is None:
                    return partial, sha256
                log.warning(
                    "the continued download of %s failed its check (%s); starting over", self.spec.filename, reason
                )
            partial = _cache_write(lambda: resume.start_resumable(self.spec, self.url), self.spec, "start the download")
            reason, partial, sha256 = self._fetch(partial, 0)
            if reason is not None:
                raise _SourceFailed(reason)
            return partial, sha256
        except _SourceFailed as exc:
            if not exc.keep:
                resume.drop_resumable(self.spec)
            raise

    def _fetch(self, partial: Path, have: int) -> tuple[str | None, Path, str]:
        from tqdm.auto import tqdm

        fd = _cache_write(
            lambda: os.open(partial, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0)), self.spec, "open the partial download"
        )
        with (
            os.fdopen(fd, "r+b") as out,
            tqdm(
                total=self.spec.size,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=self.spec.filename,
                disable=not self.progress,
                leave=False,
            ) as bar,
        ):
            digests = self._transfer(out, have, bar)
        size = partial.stat().st_size
        sha256 = digests.sha256.hexdigest()
        blob = digests.blob_hexdigest(partial) if self.spec.git_blob_sha1 else None
        return mismatch(self.spec, size, sha256, blob), partial, sha256

    def _transfer(self, out: BinaryIO, have: int, bar: Any) -> Digests:
        import requests
        import urllib3

        from . import http  # only a download needs it: a warm load imports nothing of it

        digests: Digests | None = None
        attempt = 0
        while True:
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with http.get_checked(
                    self.session,
                    self.url,
                    check=lambda u: _check_scheme(u, self.spec),
                    headers=headers,
                    timeout=self.timeout,
                ) as resp:
                    status = resp.status_code
                    if status in _RETRY_STATUS:
                        attempt += 1
                        if attempt >= MAX_ATTEMPTS:
                            raise _SourceFailed(f"HTTP {status} after {attempt} attempts")
                        delay = _retry_after(resp, attempt - 1)
                        log.info("%s answered HTTP %d; retrying in %.1fs", self.url, status, delay)
                        time.sleep(delay)
                        continue
                    if status == 416 and have:
                        have, digests = 0, None  # our partial does not fit the remote file: start over
                        continue
                    if status == 206 and not have:
                        raise _SourceFailed("HTTP 206 (a partial answer) to a request for the whole file")
                    if status not in (200, 206):
                        raise _SourceFailed(f"HTTP {status} {resp.reason or ''}".strip())
                    if status == 206 and not resp.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                        raise _SourceFailed(
                            f"server answered a range request with Content-Range {resp.headers.get('Content-Range')!r}"
                        )
                    total = _total_from(resp)
                    if self.spec.size is not None and total is not None and total != self.spec.size:
                        raise _SourceFailed(f"size mismatch: server announces {total} bytes, expected {self.spec.size}")
                    if total is not None and total > self.budget:
                        raise _SourceFailed(
                            f"server announces {total} bytes, over the download budget of "
                            f"{self.budget} ({self._budget_hint()})"
                        )
                    if status == 200:
                        have, digests = 0, None
                    if digests is None:
                        digests = Digests(self.spec, total if total is not None else self.spec.size)
                        _rehash(out, have, digests)
                    out.seek(have)
                    _cache_write(out.truncate, self.spec, "write the download")
                    bar.reset(total=total)
                    bar.update(have)
                    watch = http.Stopwatch(self.rate, self.window)
                    for chunk in http.read_limited(resp, budget=self.budget - have, watch=watch):
                        _cache_write(lambda chunk=chunk: out.write(chunk), self.spec, "write the download")
                        digests.update(chunk)
                        have += len(chunk)
                        bar.update(len(chunk))
                    _cache_write(out.flush, self.spec, "write the download")
                    if total is not None and have < total:
                        raise requests.ConnectionError(f"body ended at {have} of {total} bytes")
                    return digests
            except StallError as exc:
                raise _SourceFailed(f"{exc} ({_STALL_HINT})", keep=True) from None
            except BudgetExceededError as exc:
                raise _SourceFailed(f"sent {exc} ({self._budget_hint()})") from None
            except HttpLimitError as exc:
                raise _SourceFailed(str(exc)) from None
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError,
            ) as exc:
                attempt += 1
                if attempt >= MAX_ATTEMPTS:
                    raise _SourceFailed(f"connection failed after {attempt} attempts: {exc}", keep=True) from None
                out.flush()
                log.info("connection to %s dropped at %d bytes (%s); resuming", self.url, have, exc)
                time.sleep(BACKOFF * 2 ** (attempt - 1))
            except requests.RequestException as exc:
                raise _SourceFailed(f"request failed: {exc}") from None


_BUDGET_HINT = "pin the file's size in the manifest, or raise DLWP_MAX_DOWNLOAD_BYTES for a file without one"
_META_BUDGET_HINT = "its weight set's meta.file_size_mb bounds it; pin the file's size in the manifest if that is wrong"
_STALL_HINT = "DLWP_STALL_BYTES_PER_S and DLWP_STALL_SECONDS set the limit"


def _rehash(out: BinaryIO, have: int, digests: Digests) -> None:
    """Feed the first ``have`` bytes already in ``out`` (kept from before) into ``digests``."""
    out.seek(0)
    left = have
    while left:
        chunk = out.read(min(CHUNK, left))
        if not chunk:
            raise _SourceFailed("the kept partial download is shorter than recorded")
        digests.update(chunk)
        left -= len(chunk)


def _cache_write(action: Callable[[], Any], spec: FileSpec, doing: str) -> Any:
    """Run a write to the cache; a file-system failure becomes a clear :class:`store.CacheWriteError`."""
    try:
        return action()
    except OSError as exc:
        raise store.disk_error(exc, store.cached_path(spec), f"{doing} of {spec.filename}") from None


def _join_parts(spec: FileSpec, progress: bool) -> tuple[Path, str]:
    """Fetch each part (each checked by its own spec), concatenate into a new partial file, check the whole."""
    parts = [fetch_file(part, progress=progress).path for part in spec.parts]
    try:
        return local.copy_checked(spec, parts, "joined file", _cache_write)
    except local.CopyFailed as exc:
        raise _SourceFailed(f"joined parts: {exc}") from None


def fetch_file(spec: FileSpec, progress: bool = True) -> CachedFile:
    """One file in the cache, downloaded and verified first if needed: its path and sha256."""
    hit = store.verified(spec)
    if hit is not None:
        return hit
    dest = store.cached_path(spec)
    try:
        with store.file_lock(dest):
            return _fetch_locked(spec, dest, progress)
    except store.CacheWriteError as exc:
        if exc.read_only:
            hit = store.verify_read_only(spec)  # a read-only cache holding the right bytes still works
            if hit is not None:
                log.warning("%s verified without its lock (%s)", dest.name, exc)
                return hit
        raise


def _fetch_locked(spec: FileSpec, dest: Path, progress: bool) -> CachedFile:
    from . import resume  # only a download needs it: a warm load imports nothing of it

    hit = store.settle(spec)  # placed by hand, cached by an older layout, or fetched by another process
    if hit is not None:
        return hit
    failures: list[str] = []
    if spec.beside is not None:  # a local copy, not a download: DLWP_OFFLINE allows it
        store.remove_stale_partials(spec)
        got = _try_source(
            spec, lambda: local.copy_beside(spec, _cache_write), f"beside the manifest: {spec.beside}", failures
        )
        if got is not None:
            return got
    if is_offline():
        if failures:  # the one source DLWP_OFFLINE allows failed: say why
            raise _every_source_failed(spec, dest, failures)
        if dest.exists():
            raise OfflineError(
                f"{dest} cannot be checked offline: it is pinned only through its parts and its "
                f"{dest.name}.verified record is missing. Copy the .verified files along with "
                "the cache folder, or unset DLWP_OFFLINE to join the parts again."
            )
        raise OfflineError(
            f"{spec.filename} is not in the cache ({dest}) and DLWP_OFFLINE=1 forbids downloading. "
            "Run `python -m dlwp_models fetch NAME` on a machine with network and copy its cache "
            "folder (with the .verified files) here, or unset DLWP_OFFLINE."
        )
    store.remove_stale_partials(spec)
    # a file pinned only through its parts is never taken whole from anywhere: nothing could check it
    sources = [f"{base}/{spec.filename}" for base in _mirror_bases()] + list(spec.urls) if spec.has_own_hash else []
    import requests

    with requests.Session() as session:
        session.headers["User-Agent"] = _USER_AGENT
        session.headers["Accept-Encoding"] = "identity"  # sizes, hashes and ranges are of the file's bytes
        for url in sources:
            got = _try_source(spec, lambda url=url: _Stream(session, url, spec, progress).run(), url, failures)
            if got is not None:
                resume.drop_resumable(spec)
                return got
    if spec.parts:
        got = _try_source(spec, lambda: _join_parts(spec, progress), f"{len(spec.parts)} parts", failures)
        if got is not None:
            for part in spec.parts:  # the joined file is what is used; don't keep the bytes twice
                store.discard(store.cached_path(part))
            return got
    raise _every_source_failed(spec, dest, failures)


def _every_source_failed(spec: FileSpec, dest: Path, failures: list[str]) -> DownloadError:
    listing = "\n".join(f"  - {line}" for line in failures) or "  (no sources listed)"
    advice = (
        local.beside_advice(spec, dest)
        if spec.beside is not None
        else f"Check the network (or DLWP_MIRROR), or download the file by other means and place it at {dest}"
    )
    return DownloadError(
        f"could not fetch {spec.filename}; every source failed:\n{listing}\n"
        f"{advice}; it is accepted once it matches the pinned hash."
    )


def _try_source(
    spec: FileSpec, produce: Callable[[], tuple[Path, str]], label: str, failures: list[str]
) -> CachedFile | None:
    try:
        partial, sha256 = produce()
        cached = _cache_write(lambda: store.install(partial, spec, sha256), spec, "move the verified file into place")
        log.info("fetched %s from %s", spec.filename, label)
        return cached
    except store.CacheWriteError:
        raise  # a full or read-only disk: no other source would help
    except (_SourceFailed, local.CopyFailed, DownloadError, IntegrityError, OfflineError) as exc:
        log.warning("source %s failed for %s: %s", label, spec.filename, exc)
        failures.append(f"{label}: {exc}")
        return None


def fetch_files(weights: WeightSet, progress: bool = True) -> dict[str, CachedFile]:
    """Every file of a weight set, fetched and verified: ``{role: CachedFile}``."""
    weights = get_weights(weights)
    return {role: fetch_file(spec, progress=progress) for role, spec in weights.files.items()}


def verify_cached(weights: WeightSet | str) -> dict[str, bool | None]:
    """Hash every cached file of a weight set again, whatever their records say: ``{role: True}``
    for a file that holds its pinned bytes, False for one that did not (removed: the next fetch
    downloads it again), None for one not cached (``fetch --verify``)."""
    weights = get_weights(weights)
    return {role: store.recheck(spec) for role, spec in weights.files.items()}


def fetch(weights: WeightSet | str, progress: bool = True) -> dict[str, Path]:
    """Fetch every file of a weight set (a :class:`WeightSet` or its name); returns ``{role: cached path}``."""
    return {role: cached.path for role, cached in fetch_files(weights, progress).items()}

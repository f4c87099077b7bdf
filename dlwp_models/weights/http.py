"""HTTP reading with limits that hold against a hostile server: every redirect hop checked before
it is requested, the raw (never content-decoded) body read in short reads with a byte budget, a
stall watch and an optional wall-clock deadline checked after every read, however small.

The limits are module constants (tests shrink them) that environment variables override:

- ``DLWP_MAX_DOWNLOAD_BYTES``: budget of a weight file without a pinned ``size`` (default 8 GiB);
  a file with a pinned size is never read past that size.
- ``DLWP_STALL_BYTES_PER_S`` / ``DLWP_STALL_SECONDS``: a weight transfer averaging under this many
  bytes per second over this many seconds is abandoned (default 1024 B/s over 60 s) and the next
  source is tried.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from ..errors import BudgetExceededError, DownloadError, HttpLimitError, StallError

if TYPE_CHECKING:
    import requests

__all__ = [
    "MAX_DOWNLOAD_BYTES",
    "STALL_BYTES_PER_S",
    "STALL_SECONDS",
    "MAX_REDIRECTS",
    "READ_SIZE",
    "max_download_bytes",
    "stall_limits",
    "get_checked",
    "read_limited",
    "Stopwatch",
]

MAX_DOWNLOAD_BYTES = 8 << 30  # a weight file without a pinned size; DLWP_MAX_DOWNLOAD_BYTES overrides
STALL_BYTES_PER_S = 1024.0  # slower than this on average ...; DLWP_STALL_BYTES_PER_S overrides
STALL_SECONDS = 60.0  # ... over this many seconds is a stall; DLWP_STALL_SECONDS overrides
MAX_REDIRECTS = 10  # hops followed from one URL
READ_SIZE = 1 << 20  # the most one short read asks for (it returns what has arrived)
_REDIRECTS = {301, 302, 303, 307, 308}


def _env_number(name: str, default: float, minimum: float) -> float:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number >= minimum:
        raise DownloadError(f"{name} must be a number of at least {minimum:g}, got {value!r}; fix or unset it.")
    return number


def max_download_bytes() -> int:
    """The byte budget of a file without a pinned size (DLWP_MAX_DOWNLOAD_BYTES, else the default)."""
    return int(_env_number("DLWP_MAX_DOWNLOAD_BYTES", MAX_DOWNLOAD_BYTES, 1))


def stall_limits() -> tuple[float, float]:
    """``(bytes per second, seconds)``: a transfer slower than that on average over that long stalls."""
    return (
        _env_number("DLWP_STALL_BYTES_PER_S", STALL_BYTES_PER_S, 0),
        _env_number("DLWP_STALL_SECONDS", STALL_SECONDS, 0.001),
    )


class Stopwatch:
    """Watches one transfer: a stall (under ``rate`` bytes/s on average over any ``window``
    seconds) and a wall-clock ``deadline`` (seconds from now) each raise :class:`StallError`."""

    def __init__(self, rate: float = 0.0, window: float = float("inf"), deadline: float | None = None) -> None:
        self.rate, self.window = rate, window
        now = time.monotonic()
        self.deadline = now + deadline if deadline is not None else None
        self.total = 0
        self._samples: deque[tuple[float, int]] = deque([(now, 0)])

    def add(self, count: int) -> None:
        """Record ``count`` more bytes (0 when a read returned nothing) and check the limits."""
        now = time.monotonic()
        self.total += count
        if self.deadline is not None and now > self.deadline:
            raise StallError("took longer than its deadline")
        samples = self._samples
        samples.append((now, self.total))
        # keep the newest sample at least a window old, and the ones after it
        while len(samples) > 1 and now - samples[1][0] >= self.window:
            samples.popleft()
        start, at = samples[0]
        if self.rate > 0 and now - start >= self.window and self.total - at < self.rate * (now - start):
            raise StallError(
                f"stalled: {self.total - at} bytes in the last {now - start:.0f}s (under "
                f"{self.rate:g} B/s on average over {self.window:g}s)"
            )


def get_checked(
    session: requests.Session,
    url: str,
    *,
    check: Callable[[str], None],
    headers: dict[str, str] | None = None,
    timeout: tuple[float, float],
) -> requests.Response:
    """GET ``url`` as a stream, following redirects here (at most :data:`MAX_REDIRECTS`) so that
    ``check(url)`` vets every hop *before* it is requested (it raises to refuse). The caller
    closes the response."""
    check(url)
    for _ in range(MAX_REDIRECTS + 1):
        resp = session.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=False)
        if resp.status_code not in _REDIRECTS:
            return resp
        location = resp.headers.get("Location")
        resp.close()
        if not location:
            raise HttpLimitError(f"HTTP {resp.status_code} redirect without a Location")
        url = urljoin(url, location)
        check(url)
    raise HttpLimitError(f"more than {MAX_REDIRECTS} redirects")


def read_limited(resp: requests.Response, *, budget: int, watch: Stopwatch) -> Iterator[bytes]:
    """The raw body of ``resp`` (no content decoding) in short reads; raises
    :class:`BudgetExceededError` the moment more than ``budget`` bytes arrive and :class:`StallError`
    when ``watch`` says so, checked after every read, however few bytes it brought."""
    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise HttpLimitError(f"the server applied Content-Encoding {encoding!r} although identity was asked")
    raw = resp.raw
    received = 0
    while True:
        chunk = raw.read1(min(READ_SIZE, budget - received + 1), decode_content=False)
        if not chunk:
            watch.add(0)
            return
        received += len(chunk)
        if received > budget:
            raise BudgetExceededError(f"more than the budget of {budget} bytes")
        watch.add(len(chunk))
        yield chunk


def url_host(url: str) -> str:
    """``scheme://host[:port]`` of a URL (no credentials, path or query), for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"

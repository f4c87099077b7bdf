"""The byte-level guards of the fetcher, each on its own: what `http.read_limited` asks the socket
for and refuses, and how `download._total_from` reads the size a server announces. Fake responses
(a body in memory, the reads recorded) make each guard observable without the others behind it;
`test_hostile_servers.py` runs the same guards end to end against a loopback server."""

from __future__ import annotations

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from dlwp_models.weights import http
from dlwp_models.weights.download import _total_from


class Body:
    """A raw urllib3-like body: ``read1`` returns at most what is asked and records each ask."""

    def __init__(self, data: bytes) -> None:
        self.data, self.asks = data, []

    def read1(self, amount=-1, decode_content=None):
        self.asks.append((amount, decode_content))
        chunk, self.data = self.data[:amount], self.data[amount:]
        return chunk


def response(data: bytes = b"", status: int = 200, **headers: str) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp.headers = CaseInsensitiveDict({key.replace("_", "-"): value for key, value in headers.items()})
    resp.raw = Body(data)
    return resp


def read_all(resp: requests.Response, budget: int) -> bytes:
    return b"".join(http.read_limited(resp, budget=budget, watch=http.Stopwatch()))


def test_each_read_asks_for_at_most_one_byte_past_the_budget_and_never_decodes():
    resp = response(b"x" * 25)
    assert read_all(resp, 25) == b"x" * 25
    assert resp.raw.asks == [(26, False), (1, False)]  # the 26th byte would be one too many


def test_a_body_past_the_budget_is_refused_at_the_first_byte_too_many():
    resp = response(b"x" * 25)
    with pytest.raises(http.HttpLimitError) as info:
        read_all(resp, 10)
    assert str(info.value) == "more than the budget of 10 bytes"
    assert resp.raw.asks == [(11, False)]  # 11 bytes read, none handed on


def test_big_bodies_are_read_in_short_reads():
    resp = response(b"x" * (3 * http.READ_SIZE))
    assert len(read_all(resp, 10 * http.READ_SIZE)) == 3 * http.READ_SIZE
    assert [amount for amount, _ in resp.raw.asks] == [http.READ_SIZE] * 4
    assert all(decode is False for _, decode in resp.raw.asks)


@pytest.mark.parametrize("encoding", ["gzip", "br", " GZIP "])
def test_a_body_the_server_encoded_is_refused_before_any_read(encoding):
    resp = response(b"\x1f\x8b...", Content_Encoding=encoding)
    with pytest.raises(http.HttpLimitError) as info:
        read_all(resp, 100)
    assert str(info.value) == (
        f"the server applied Content-Encoding {encoding.strip().lower()!r} although identity was asked"
    )
    assert resp.raw.asks == []


@pytest.mark.parametrize("encoding", ["identity", " Identity ", ""])
def test_identity_or_an_empty_encoding_is_read(encoding):
    assert read_all(response(b"abc", Content_Encoding=encoding), 3) == b"abc"


@pytest.mark.parametrize(
    ("status", "headers", "total"),
    [
        (200, {"Content_Length": "42"}, 42),
        (200, {}, None),  # chunked: no length announced
        (200, {"Content_Length": "forty"}, None),
        (200, {"Content_Length": ""}, None),
        (206, {"Content_Range": "bytes 10-41/42", "Content_Length": "32"}, 42),  # the whole file's size
        (206, {"Content_Range": "bytes 10-41/*"}, None),
        (206, {"Content_Length": "32"}, None),  # a 206 without its range says nothing
    ],
)
def test_the_announced_size_is_the_whole_files(status, headers, total):
    assert _total_from(response(status=status, **headers)) == total


def test_the_stopwatch_is_told_every_read_and_the_end_as_nothing():
    class Watch(http.Stopwatch):
        def __init__(self) -> None:
            super().__init__()
            self.told = []

        def add(self, count: int) -> None:
            self.told.append(count)
            super().add(count)

    watch = Watch()
    assert b"".join(http.read_limited(response(b"x" * 5), budget=5, watch=watch)) == b"x" * 5
    assert watch.told == [5, 0]


class Clock:
    """``time.monotonic`` for the stopwatch, moved by hand (starting far from 0)."""

    def __init__(self, monkeypatch) -> None:
        self.now = 1000.0
        monkeypatch.setattr(http.time, "monotonic", lambda: self.now)

    def at(self, seconds: float) -> None:
        self.now = 1000.0 + seconds

    def add(self, watch: http.Stopwatch, seconds: float, count: int) -> None:
        """``count`` bytes arrive ``seconds`` after the start."""
        self.at(seconds)
        watch.add(count)


def stall(clock: Clock, watch: http.Stopwatch, seconds: float) -> str:
    """The message of the stall that a read of nothing, ``seconds`` after the start, must raise."""
    clock.at(seconds)
    with pytest.raises(http.StallError) as info:
        watch.add(0)
    return str(info.value)


def test_a_transfer_under_the_rate_stalls_once_a_whole_window_has_passed(monkeypatch):
    clock = Clock(monkeypatch)
    watch = http.Stopwatch(rate=100, window=10)
    clock.add(watch, 1, 500)
    clock.add(watch, 6, 0)  # 500 bytes in 6 s: under the rate, but not a window yet
    assert stall(clock, watch, 10) == "stalled: 500 bytes in the last 10s (under 100 B/s on average over 10s)"


def test_the_window_slides_and_its_edge_counts(monkeypatch):
    clock = Clock(monkeypatch)
    watch = http.Stopwatch(rate=100, window=10)
    clock.add(watch, 1, 500)
    # at 11 s the sample at 1 s is exactly a window old: the window starts there
    assert stall(clock, watch, 11) == "stalled: 0 bytes in the last 10s (under 100 B/s on average over 10s)"


def test_exactly_the_rate_is_not_a_stall(monkeypatch):
    clock = Clock(monkeypatch)
    watch = http.Stopwatch(rate=100, window=10)
    for second in range(1, 31):
        clock.add(watch, second, 100)  # 100 B/s, never less, for three windows
    assert watch.total == 3000


def test_the_deadline_counts_from_the_start_and_its_edge_is_allowed(monkeypatch):
    clock = Clock(monkeypatch)
    watch = http.Stopwatch(deadline=5)
    clock.add(watch, 5, 1)
    clock.at(5.5)
    with pytest.raises(http.StallError) as info:
        watch.add(1)
    assert str(info.value) == "took longer than its deadline"


def test_a_rate_of_one_byte_a_second_is_a_limit_too(monkeypatch):
    clock = Clock(monkeypatch)
    watch = http.Stopwatch(rate=1, window=10)
    clock.add(watch, 1, 5)
    assert stall(clock, watch, 10) == "stalled: 5 bytes in the last 10s (under 1 B/s on average over 10s)"

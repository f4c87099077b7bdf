"""The transfer loop's decisions, one test each, against the loopback server: how long it waits
between tries, what it says when a source keeps failing, what it keeps for the next run, and how
it treats a server that answers a range request wrongly or ignores it."""

from __future__ import annotations

import os
import time

import pytest
from conftest import kept_partial, sha256_of
from loopback import Fault

import dlwp_models
from dlwp_models import DownloadError, get_weights
from dlwp_models.weights import download, resume, store

PAYLOAD = os.urandom((1 << 20) + 4321)


def entry(files: dict) -> dict:
    return {"name": "transfer.v1", "model": "transfer", "default": True, "format": "torchvision", "files": files}


def fetch():
    return dlwp_models.fetch(get_weights("transfer.v1"), progress=False)


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Every wait of the fetcher, recorded instead of slept."""
    waited: list[float] = []
    monkeypatch.setattr(download.time, "sleep", waited.append)
    return waited


def served(make_manifest, file_entry, name: str, **pins):
    spec_entry = file_entry(name, PAYLOAD)
    spec_entry.update(pins)
    make_manifest([entry({"state_dict": spec_entry})])
    return get_weights("transfer.v1").files["state_dict"]


def test_busy_answers_without_retry_after_wait_twice_as_long_each_time(
    make_manifest, file_entry, weight_server, sleeps
):
    served(make_manifest, file_entry, "backoff.pth")
    weight_server.inject("backoff.pth", *[Fault("status", 503)] * 3)
    fetch()
    assert sleeps == [download.BACKOFF, 2 * download.BACKOFF, 4 * download.BACKOFF]


def test_a_connection_that_keeps_dropping_is_given_up_after_max_attempts_keeping_its_bytes(
    make_manifest, file_entry, weight_server, hub_home, sleeps
):
    spec = served(make_manifest, file_entry, "drops.pth")
    weight_server.inject("drops.pth", *[Fault("drop", after=1000)] * download.MAX_ATTEMPTS)
    with pytest.raises(DownloadError) as info:
        fetch()
    assert f"drops.pth: connection failed after {download.MAX_ATTEMPTS} attempts: " in str(info.value)
    assert sleeps == [download.BACKOFF * 2**n for n in range(download.MAX_ATTEMPTS - 1)]
    arrived = 1000 * download.MAX_ATTEMPTS  # each try resumed where the last one dropped
    assert [h.range for h in weight_server.hits_for("drops.pth")] == [None] + [
        f"bytes={1000 * n}-" for n in range(1, download.MAX_ATTEMPTS)
    ]
    kept = resume.resumable(spec)  # what arrived is kept for the next run
    assert kept is not None and kept.size == arrived and kept.path.read_bytes() == PAYLOAD[:arrived]
    fetch()  # which continues it
    assert weight_server.hits_for("drops.pth")[-1].range == f"bytes={arrived}-"


def test_a_partial_answer_to_a_whole_file_request_is_refused(make_manifest, file_entry, weight_server):
    served(make_manifest, file_entry, "partial.pth")
    weight_server.inject(
        "partial.pth", Fault("body", 206, headers={"Content-Range": f"bytes 0-9/{len(PAYLOAD)}"}, body=PAYLOAD[:10])
    )
    weight_server.inject(
        "partial.pth", Fault("body", 206, headers={"Content-Range": f"bytes 0-9/{len(PAYLOAD)}"}, body=PAYLOAD[:10])
    )
    with pytest.raises(DownloadError) as info:
        fetch()
    assert "partial.pth: HTTP 206 (a partial answer) to a request for the whole file\n" in str(info.value)


@pytest.mark.parametrize("content_range", ["bytes 0-9/{n}", None])
def test_a_range_answer_for_other_bytes_is_refused(make_manifest, file_entry, weight_server, content_range):
    spec = served(make_manifest, file_entry, f"ranged-{content_range is None}.pth")
    kept_partial(spec, spec.urls[0], PAYLOAD[:100])
    headers = {} if content_range is None else {"Content-Range": content_range.format(n=len(PAYLOAD))}
    weight_server.inject(spec.filename, Fault("body", 206, headers=headers, body=PAYLOAD[:10]))
    with pytest.raises(DownloadError) as info:
        fetch()
    shown = None if content_range is None else content_range.format(n=len(PAYLOAD))
    assert f"server answered a range request with Content-Range {shown!r}" in str(info.value)


def test_a_server_that_ignores_the_range_gives_the_whole_file_from_its_start(make_manifest, file_entry, weight_server):
    spec = served(make_manifest, file_entry, "norange.pth")
    kept_partial(spec, spec.urls[0], PAYLOAD[:100])
    weight_server.inject("norange.pth", Fault("body", 200, headers={"Content-Length": str(len(PAYLOAD))}, body=PAYLOAD))
    path = fetch()["state_dict"]
    assert path.read_bytes() == PAYLOAD
    assert [h.range for h in weight_server.hits_for("norange.pth")] == ["bytes=100-"]


def test_a_size_announced_over_the_budget_is_refused_before_its_body(make_manifest, weight_server, monkeypatch):
    weight_server.serve("big.pth", PAYLOAD)
    make_manifest(
        [
            entry(
                {
                    "state_dict": {
                        "filename": "big.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "urls": [weight_server.url("big.pth")],
                    }
                }
            )
        ]
    )
    monkeypatch.setenv("DLWP_MAX_DOWNLOAD_BYTES", "1000")
    with pytest.raises(DownloadError) as info:
        fetch()
    assert f"server announces {len(PAYLOAD)} bytes, over the download budget of 1000 (pin the file's size" in str(
        info.value
    )


def test_an_unknown_status_names_the_status_and_its_reason(make_manifest, file_entry, weight_server):
    spec = served(make_manifest, file_entry, "teapot.pth")
    weight_server.inject("teapot.pth", Fault("status", 418))
    with pytest.raises(DownloadError) as info:
        fetch()
    assert str(info.value) == (
        f"could not fetch teapot.pth; every source failed:\n  - {spec.urls[0]}: HTTP 418 I'm a Teapot\nCheck the "
        "network (or DLWP_MIRROR), or download the file by other means and place it at "
        f"{store.cached_path(spec)}; it is accepted once it matches the pinned hash."
    )


def test_a_server_that_never_answers_is_given_up_within_the_stall_window(
    make_manifest, file_entry, weight_server, monkeypatch
):
    monkeypatch.setenv("DLWP_STALL_SECONDS", "1")
    served(make_manifest, file_entry, "silent.pth")
    weight_server.inject("silent.pth", Fault("stall", seconds=20))
    started = time.monotonic()
    fetch()  # the next try, after the read timeout, is answered
    assert time.monotonic() - started < 10


def test_every_request_names_dlwp_and_asks_for_the_files_own_bytes(make_manifest, file_entry, weight_server):
    served(make_manifest, file_entry, "agent.pth")
    fetch()
    (hit,) = weight_server.hits_for("agent.pth")
    assert hit.headers["User-Agent"] == download._USER_AGENT and hit.headers["Accept-Encoding"] == "identity"


def test_a_verified_file_that_cannot_be_moved_into_place_names_that_step(make_manifest, file_entry, monkeypatch):
    def full(partial, spec, sha256):
        raise OSError(28, "No space left on device")

    served(make_manifest, file_entry, "nomove.pth")
    monkeypatch.setattr(store, "install", full)
    with pytest.raises(
        store.CacheWriteError,
        match=r"could not move the verified file into place of nomove\.pth "
        r"\(.*\): No space left on device",
    ):
        fetch()


@pytest.mark.parametrize(
    ("value", "offline"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        (" Yes ", True),
        ("on", True),
        ("ON", True),
        ("0", False),
        ("", False),
        ("off", False),
        ("no", False),
        ("2", False),
    ],
)
def test_dlwp_offline_spellings(monkeypatch, value, offline):
    monkeypatch.setenv("DLWP_OFFLINE", value)
    assert download.is_offline() is offline


def test_offline_without_the_file_says_how_to_bring_it(make_manifest, file_entry, monkeypatch):
    spec = served(make_manifest, file_entry, "away.pth")
    monkeypatch.setenv("DLWP_OFFLINE", "1")
    with pytest.raises(dlwp_models.OfflineError) as info:
        fetch()
    assert str(info.value) == (
        f"away.pth is not in the cache ({store.cached_path(spec)}) and DLWP_OFFLINE=1 forbids downloading. Run "
        "`python -m dlwp_models fetch NAME` on a machine with network and copy its cache folder (with the .verified "
        "files) here, or unset DLWP_OFFLINE."
    )

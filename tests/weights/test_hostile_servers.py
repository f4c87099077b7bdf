"""The fetcher against hostile servers (issue 14): byte budgets, raw bytes only, stalls, odd
statuses, every redirect hop checked, and resuming across runs."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO_DIR, sha256_of
from loopback import Fault

import dlwp_models
from dlwp_models import DownloadError, get_weights
from dlwp_models.weights import http

PAYLOAD = os.urandom(3 * (1 << 20) + 4321)


def entry(files: dict) -> dict:
    return {"name": "hostile.v1", "model": "hostile", "default": True, "format": "torchvision", "files": files}


def cache_files(hub_home) -> list:
    cache = hub_home / "hub" / "checkpoints" / "dlwp"
    return [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")] if cache.exists() else []


def fetch():
    return dlwp_models.fetch(get_weights("hostile.v1"), progress=False)["state_dict"]


def test_unsized_flood_stops_at_the_budget(make_manifest, weight_server, hub_home, monkeypatch):
    weight_server.serve("flood.pth", PAYLOAD)
    weight_server.inject("flood.pth", Fault("flood", after=400 << 20))
    make_manifest(
        [
            entry(
                {
                    "state_dict": {
                        "filename": "flood.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "urls": [weight_server.url("flood.pth")],
                    }
                }
            )
        ]
    )
    monkeypatch.setenv("DLWP_MAX_DOWNLOAD_BYTES", str(1 << 20))
    started = time.monotonic()
    with pytest.raises(DownloadError, match="over the download budget|budget of 1048576") as info:
        fetch()
    assert "DLWP_MAX_DOWNLOAD_BYTES" in str(info.value)
    assert time.monotonic() - started < 10
    assert cache_files(hub_home) == []  # nothing half-written is left
    # the next request (no fault left) gets the real file within the budget's default
    monkeypatch.delenv("DLWP_MAX_DOWNLOAD_BYTES")
    assert fetch().read_bytes() == PAYLOAD


def test_sized_entry_reads_at_most_its_size(make_manifest, weight_server, hub_home, monkeypatch):
    weight_server.serve("sized-flood.pth", PAYLOAD)
    weight_server.inject("sized-flood.pth", Fault("flood", after=400 << 20))
    make_manifest(
        [
            entry(
                {
                    "state_dict": {
                        "filename": "sized-flood.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "size": len(PAYLOAD),
                        "urls": [weight_server.url("sized-flood.pth")],
                    }
                }
            )
        ]
    )
    seen = []
    real = http.read_limited

    def spy(resp, *, budget, watch):
        seen.append(budget)
        total = 0
        for chunk in real(resp, budget=budget, watch=watch):
            total += len(chunk)
            seen.append(total)
            yield chunk

    monkeypatch.setattr(http, "read_limited", spy)
    with pytest.raises(DownloadError, match="budget"):
        fetch()
    assert seen[0] == len(PAYLOAD) and max(seen[1:]) <= len(PAYLOAD)
    assert cache_files(hub_home) == []


def test_content_encoding_is_never_decoded_into_the_cache(make_manifest, weight_server, hub_home):
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB from ~64 KiB
    weight_server.serve("gzipped.pth", PAYLOAD)
    weight_server.inject("gzipped.pth", Fault("body", 200, body=bomb, headers={"Content-Encoding": "gzip"}))
    make_manifest(
        [
            entry(
                {
                    "state_dict": {
                        "filename": "gzipped.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "urls": [weight_server.url("gzipped.pth"), weight_server.url("gzipped.pth")],
                    }
                }
            )
        ]
    )
    assert fetch().read_bytes() == PAYLOAD  # the second URL (no fault) is used
    assert [h.status for h in weight_server.hits_for("gzipped.pth")] == [200, 200]


def test_gzip_body_read_raw_never_inflates(weight_server):
    import requests

    bomb = gzip.compress(b"\0" * (64 << 20))
    weight_server.serve("raw.bin", b"x")
    weight_server.inject("raw.bin", Fault("body", 200, body=bomb, headers={"Content-Encoding": "identity"}))
    with requests.get(weight_server.url("raw.bin"), stream=True, timeout=5) as resp:
        got = b"".join(http.read_limited(resp, budget=len(bomb), watch=http.Stopwatch()))
    assert got == bomb  # the bytes sent, not what they decode to


def test_a_drip_is_abandoned_and_the_next_source_tried(make_manifest, weight_server, monkeypatch):
    monkeypatch.setattr(http, "STALL_SECONDS", 1.0)
    monkeypatch.setattr(http, "STALL_BYTES_PER_S", 1024.0)
    weight_server.serve("drip.pth", PAYLOAD)
    weight_server.serve("drip-ok.pth", PAYLOAD)
    weight_server.inject("drip.pth", Fault("drip", seconds=0.1, after=200))
    make_manifest(
        [
            entry(
                {
                    "state_dict": {
                        "filename": "drip.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "urls": [weight_server.url("drip.pth"), weight_server.url("drip-ok.pth")],
                    }
                }
            )
        ]
    )
    started = time.monotonic()
    assert fetch().read_bytes() == PAYLOAD
    assert time.monotonic() - started < 5
    assert weight_server.bytes_sent("drip.pth") < 60


def test_stall_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("DLWP_STALL_SECONDS", "5")
    monkeypatch.setenv("DLWP_STALL_BYTES_PER_S", "10")
    assert http.stall_limits() == (10.0, 5.0)
    monkeypatch.setenv("DLWP_STALL_SECONDS", "0.5")  # any positive window, any rate from 0
    monkeypatch.setenv("DLWP_STALL_BYTES_PER_S", "0")
    assert http.stall_limits() == (0.0, 0.5)
    monkeypatch.setenv("DLWP_STALL_SECONDS", "soon")
    with pytest.raises(DownloadError, match="DLWP_STALL_SECONDS must be a number"):
        http.stall_limits()
    monkeypatch.setenv("DLWP_MAX_DOWNLOAD_BYTES", "-1")
    with pytest.raises(DownloadError, match="DLWP_MAX_DOWNLOAD_BYTES"):
        http.max_download_bytes()


def test_stopwatch_measures_any_window():
    watch = http.Stopwatch(rate=1000, window=0.3)
    for _ in range(3):  # fast enough: no stall
        watch.add(1000)
        time.sleep(0.1)
    with pytest.raises(http.StallError):
        for _ in range(20):  # then a drip
            watch.add(1)
            time.sleep(0.05)
    with pytest.raises(http.StallError, match="deadline"):
        deadline = http.Stopwatch(deadline=0.05)
        time.sleep(0.1)
        deadline.add(1)


@pytest.mark.parametrize(
    "status,headers",
    [
        (206, {"Content-Range": "bytes 0-9/10"}),
        (416, {"Content-Range": "bytes */10"}),
        (204, {}),
        (300, {}),
    ],
)
def test_odd_status_of_a_mirror_falls_through_to_the_manifest_url(
    make_manifest, weight_server, monkeypatch, status, headers
):
    name = f"odd-{status}.pth"
    weight_server.serve(name, PAYLOAD)
    make_manifest(
        [entry({"state_dict": {"filename": name, "sha256": sha256_of(PAYLOAD), "urls": [weight_server.url(name)]}})]
    )
    weight_server.inject(name, Fault("status", status, headers=headers))
    monkeypatch.setenv("DLWP_MIRROR", f"{weight_server.base}/files")
    assert fetch().read_bytes() == PAYLOAD
    assert [h.status for h in weight_server.hits_for(name)] == [status, 200]


def test_mixed_redirect_chain_is_refused_before_the_plain_request(
    make_manifest, https_server, weight_server, trust_https
):
    https_server.serve("chain.pth", PAYLOAD)
    weight_server.serve("chain-hop.pth", PAYLOAD)
    # https -> http (the attacker's hop) -> back to https
    weight_server.inject("chain-hop.pth", Fault("status", 302, headers={"Location": https_server.url("chain.pth")}))
    https_server.inject("chain.pth", Fault("status", 302, headers={"Location": weight_server.url("chain-hop.pth")}))
    make_manifest(
        [
            entry(
                {
                    "state_dict": {
                        "filename": "chain.pth",
                        "sha256_prefix": sha256_of(PAYLOAD)[:8],
                        "urls": [https_server.url("chain.pth")],
                    }
                }
            )
        ]
    )
    with pytest.raises(DownloadError, match="plain http:// is refused"):
        fetch()
    assert weight_server.hits_for("chain-hop.pth") == []  # the plain request was never made


def test_redirect_loop_is_bounded(make_manifest, weight_server):
    weight_server.serve("loop.pth", PAYLOAD)
    loop = Fault("status", 302, headers={"Location": weight_server.url("loop.pth")})
    weight_server.inject("loop.pth", *[loop] * (http.MAX_REDIRECTS + 1))
    make_manifest(
        [
            entry(
                {
                    "state_dict": {
                        "filename": "loop.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "urls": [weight_server.url("loop.pth")],
                    }
                }
            )
        ]
    )
    with pytest.raises(DownloadError, match="more than 10 redirects"):
        fetch()
    weight_server.faults["loop.pth"].clear()


KILLED_SCRIPT = textwrap.dedent("""
    import dlwp_models
    dlwp_models.fetch(dlwp_models.get_weights("hostile.v1"), progress=False)
""")


def test_resume_across_runs_after_sigkill(make_manifest, weight_server, hub_home):
    weight_server.serve("resumed.pth", PAYLOAD)
    weight_server.delay_per_chunk["resumed.pth"] = 0.05  # ~2.4 s for the whole file
    make_manifest(
        [
            entry(
                {
                    "state_dict": {
                        "filename": "resumed.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "size": len(PAYLOAD),
                        "urls": [weight_server.url("resumed.pth")],
                    }
                }
            )
        ]
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT], env=env, stderr=subprocess.PIPE)
    partial = hub_home / "hub" / "checkpoints" / "dlwp" / f"sha256-{sha256_of(PAYLOAD)}" / "resumed.pth.resume"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and partial.stat().st_size >= len(PAYLOAD) // 2:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = partial.stat().st_size
    assert len(PAYLOAD) // 2 <= kept < len(PAYLOAD)
    weight_server.delay_per_chunk["resumed.pth"] = 0.0
    assert fetch().read_bytes() == PAYLOAD
    # the next run asked only for the rest and got only the rest (the killed run's request, whose
    # server thread may finish after the kill, is the one without a range)
    ranged = [(h.range, h.status, h.body_bytes) for h in weight_server.hits_for("resumed.pth") if h.range]
    assert ranged == [(f"bytes={kept}-", 206, len(PAYLOAD) - kept)]
    assert not partial.exists() and not partial.with_name(partial.name + ".json").exists()


def test_a_kept_partial_that_does_not_verify_is_fetched_again(make_manifest, weight_server, hub_home):
    from dlwp_models.weights import resume
    from dlwp_models.weights.manifest import get_weights as weights_of

    weight_server.serve("poisoned.pth", PAYLOAD)
    make_manifest(
        [
            entry(
                {
                    "state_dict": {
                        "filename": "poisoned.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "urls": [weight_server.url("poisoned.pth")],
                    }
                }
            )
        ]
    )
    spec = weights_of("hostile.v1").files["state_dict"]
    (hub_home / "hub" / "checkpoints" / "dlwp" / f"sha256-{sha256_of(PAYLOAD)}").mkdir(parents=True)
    path = resume.start_resumable(spec, weight_server.url("poisoned.pth"))
    path.write_bytes(b"evil" * 1000)  # not the file's first bytes
    assert fetch().read_bytes() == PAYLOAD
    assert [h.range for h in weight_server.hits_for("poisoned.pth")] == ["bytes=4000-", None]


# --------------------------------------------------------------------------- messages, not tracebacks


@pytest.mark.parametrize("shape", ["list", "parts"])
def test_deeply_nested_manifest_is_a_manifest_error(tmp_path, monkeypatch, shape):
    from dlwp_models import ManifestError
    from dlwp_models.weights.manifest import read_manifest

    path = tmp_path / "deep.json"
    if shape == "list":
        path.write_text("[" * 200_000 + "]" * 200_000, encoding="utf-8")
    else:  # valid JSON, parts within parts
        depth = 5000
        leaf = '{"filename": "x.pth", "sha256": "' + "0" * 64 + '", "urls": ["https://example.invalid/x"]}'
        nested = '{"filename": "x.pth", "parts": [' * depth + leaf + "]}" * depth
        path.write_text(
            '{"schema_version": 1, "weights": [{"name": "deep.v1", "model": "deep", "format": '
            '"torchvision", "files": {"state_dict": ' + nested + "}}]}",
            encoding="utf-8",
        )
    with pytest.raises(ManifestError, match="nested too deeply|parts"):
        read_manifest(path)


def test_read_only_cache_with_stale_records_is_a_clear_message(one_cached, hub_home, monkeypatch):
    from dlwp_models.weights import store

    path = one_cached
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # the record no longer describes the file
    (path.parent / (path.name + ".lock")).unlink(missing_ok=True)

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    from filelock import FileLock

    monkeypatch.setattr(FileLock, "acquire", read_only)
    assert fetch().read_bytes() == PAYLOAD  # right bytes: verified without the lock
    path.write_bytes(PAYLOAD[:-1] + b"!")
    with pytest.raises(store.CacheWriteError, match="cannot be written.*make the folder writable") as info:
        fetch()
    assert str(path.parent) in str(info.value) and "Read-only file system" in str(info.value)


def test_full_disk_names_the_file_and_what_to_do(make_manifest, weight_server, hub_home, monkeypatch):
    from dlwp_models.weights import download, store

    weight_server.serve("nospace.pth", PAYLOAD)
    weight_server.serve("nospace-2.pth", PAYLOAD)
    make_manifest(
        [
            entry(
                {
                    "state_dict": {
                        "filename": "nospace.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "urls": [weight_server.url("nospace.pth"), weight_server.url("nospace-2.pth")],
                    }
                }
            )
        ]
    )
    written = []

    def disk_full(action, spec, doing):
        if doing == "write the download":
            written.append(doing)
            if len(written) > 3:
                raise store.disk_error(
                    OSError(28, "No space left on device"), store.cached_path(spec), f"{doing} of {spec.filename}"
                )
        return action()

    monkeypatch.setattr(download, "_cache_write", disk_full)
    with pytest.raises(store.CacheWriteError, match="write the download of nospace.pth.*disk holding .* is full"):
        fetch()
    assert weight_server.hits_for("nospace-2.pth") == []  # no other source tried: it would not help


@pytest.fixture
def one_cached(make_manifest, weight_server):
    weight_server.serve("ro.pth", PAYLOAD)
    make_manifest(
        [
            entry(
                {
                    "state_dict": {
                        "filename": "ro.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "urls": [weight_server.url("ro.pth")],
                    }
                }
            )
        ]
    )
    return fetch()


def test_a_file_without_a_size_is_bounded_by_its_weight_sets_file_size_mb(make_manifest, weight_server):
    """A hostile mirror sends far more than the weight set's meta says the file is (the attack: 3.1 GB
    on disk for a 44 MB file): the download stops just past file_size_mb, not at 8 GiB."""
    import hashlib

    import dlwp_models

    data = os.urandom(3 << 20)
    weight_server.serve("bounded-by-meta.pth", data + os.urandom(8 << 20))  # 11 MiB for a 3 MiB file
    make_manifest(
        [
            {
                "name": "hostile.v1",
                "model": "hostile",
                "default": True,
                "format": "torchvision",
                "meta": {"file_size_mb": 3.0},
                "files": {
                    "state_dict": {
                        "filename": "bounded-by-meta.pth",
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "urls": [weight_server.url("bounded-by-meta.pth")],
                    }
                },
            }
        ]
    )
    with pytest.raises(dlwp_models.DownloadError, match="meta.file_size_mb bounds it") as info:
        dlwp_models.fetch("hostile.v1", progress=False)
    budget = int(3.0 * 2**20 * 1.01) + 2**20
    assert f"over the download budget of {budget}" in str(info.value) or f"budget of {budget}" in str(info.value)
    assert weight_server.bytes_sent("bounded-by-meta.pth") < (5 << 20)

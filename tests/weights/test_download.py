"""The fetcher against a loopback server: every scenario of design.md §3 and issue 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from conftest import REPO_DIR, git_blob_sha1, sha256_of
from loopback import Fault

import dlwp_models
from dlwp_models import DownloadError, OfflineError, get_weights
from dlwp_models.weights import download as _fetch
from dlwp_models.weights import http

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # a few chunks, not a round number


def entry(name: str, files: dict, model: str = "testnet") -> dict:
    return {"name": f"{model}.{name}", "model": model, "default": name == "v1", "format": "torchvision", "files": files}


@pytest.fixture
def one_file(make_manifest, file_entry, request):
    """A manifest with one weight set holding PAYLOAD under a file name of this test's own (the
    loopback server is shared by the session: two tests must not count each other's requests)."""
    fname = f"{re.sub(r'[^A-Za-z0-9_-]', '_', request.node.name)[:60]}-{uuid.uuid4().hex[:8]}.pth"
    spec = file_entry(fname, PAYLOAD)
    make_manifest([entry("v1", {"state_dict": spec})])
    return fname


def pinned_folder(hub_home: Path, data: bytes = PAYLOAD) -> Path:
    """Where the cache keeps a file pinned by the sha256 of ``data``."""
    return hub_home / "hub" / "checkpoints" / "dlwp" / f"sha256-{sha256_of(data)}"


def test_happy_path_downloads_verifies_and_records(one_file, weight_server, hub_home):
    paths = dlwp_models.fetch(get_weights("testnet.v1"), progress=False)
    path = paths["state_dict"]
    assert path == pinned_folder(hub_home) / one_file
    assert path.read_bytes() == PAYLOAD
    record = json.loads(path.with_name(one_file + ".verified").read_text())
    assert record["sha256"] == sha256_of(PAYLOAD)
    assert not list(path.parent.glob("*.partial"))
    assert len(weight_server.hits_for(one_file)) == 1


def test_the_fetched_file_carries_its_verified_sha256_fresh_and_from_the_cache(one_file, weight_server):
    """What derived copies (the memory-mappable copy, ONNX graphs) are keyed on."""
    spec = get_weights("testnet.v1").files["state_dict"]
    fresh = _fetch.fetch_file(spec, progress=False)
    cached = _fetch.fetch_file(spec, progress=False)
    assert fresh.sha256 == cached.sha256 == sha256_of(PAYLOAD)
    assert fresh.path == cached.path and len(weight_server.hits_for(one_file)) == 1


def test_verified_cache_hit_makes_no_request(one_file, weight_server):
    dlwp_models.fetch(get_weights("testnet.v1"), progress=False)
    before = len(weight_server.hits_for(one_file))
    dlwp_models.fetch(get_weights("TESTNET.V1"), progress=False)
    assert len(weight_server.hits_for(one_file)) == before == 1


def test_dropped_connection_resumes_with_range(one_file, weight_server):
    cut = len(PAYLOAD) // 2 + 7
    weight_server.inject(one_file, Fault("drop", after=cut))
    path = dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["state_dict"]
    assert path.read_bytes() == PAYLOAD
    hits = weight_server.hits_for(one_file)
    assert [h.status for h in hits] == [200, 206]
    resumed_at = int(hits[1].range.removeprefix("bytes=").rstrip("-"))
    assert cut - http.READ_SIZE < resumed_at <= cut  # at most one read's bytes are lost
    assert hits[1].body_bytes == len(PAYLOAD) - resumed_at < len(PAYLOAD)


def test_503_twice_then_200_retries(one_file, weight_server):
    weight_server.inject(
        one_file, Fault("status", 503, headers={"Retry-After": "0"}), Fault("status", 503, headers={"Retry-After": "0"})
    )
    path = dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["state_dict"]
    assert path.read_bytes() == PAYLOAD
    assert [h.status for h in weight_server.hits_for(one_file)] == [503, 503, 200]


def test_429_without_retry_after_backs_off_then_succeeds(one_file, weight_server, monkeypatch):
    monkeypatch.setattr(_fetch, "BACKOFF", 0.01)
    weight_server.inject(one_file, Fault("status", 429))
    assert dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["state_dict"].read_bytes() == PAYLOAD


def test_too_long_retry_after_gives_up_on_that_source(make_manifest, weight_server):
    weight_server.serve("slowdown.pth", PAYLOAD)
    weight_server.inject("slowdown.pth", Fault("status", 503, headers={"Retry-After": "86400"}))
    make_manifest(
        [
            entry(
                "v1",
                {
                    "state_dict": {
                        "filename": "slowdown.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "urls": [weight_server.url("slowdown.pth")],
                    }
                },
            )
        ]
    )
    with pytest.raises(DownloadError, match="Retry-After"):
        dlwp_models.fetch(get_weights("testnet.v1"), progress=False)


def test_404_on_first_url_then_second_url(make_manifest, weight_server):
    weight_server.serve("second.pth", PAYLOAD)
    make_manifest(
        [
            entry(
                "v1",
                {
                    "state_dict": {
                        "filename": "second.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "urls": [f"{weight_server.base}/files/missing-second.pth", weight_server.url("second.pth")],
                    }
                },
            )
        ]
    )
    assert dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["state_dict"].read_bytes() == PAYLOAD


def test_release_redirect_is_followed_and_resume_asks_original_url(make_manifest, weight_server):
    weight_server.serve("released.pth", PAYLOAD)
    weight_server.inject("released.pth", Fault("drop", after=100_000))
    make_manifest(
        [
            entry(
                "v1",
                {
                    "state_dict": {
                        "filename": "released.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "urls": [weight_server.release_url("released.pth")],
                    }
                },
            )
        ]
    )
    assert dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["state_dict"].read_bytes() == PAYLOAD
    paths = [h.path.split("?")[0] for h in weight_server.hits_for("released.pth")]
    assert paths == ["/release/released.pth", "/files/released.pth"] * 2


def test_wrong_bytes_fail_and_leave_nothing_in_cache(make_manifest, weight_server, hub_home):
    weight_server.serve("tampered.pth", PAYLOAD[:-1] + b"!")
    make_manifest(
        [
            entry(
                "v1",
                {
                    "state_dict": {
                        "filename": "tampered.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "urls": [weight_server.url("tampered.pth")],
                    }
                },
            )
        ]
    )
    with pytest.raises(DownloadError) as info:
        dlwp_models.fetch(get_weights("testnet.v1"), progress=False)
    assert "sha256 mismatch" in str(info.value) and weight_server.url("tampered.pth") in str(info.value)
    cache = hub_home / "hub" / "checkpoints" / "dlwp"
    assert sorted(p.name for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")) == []


def test_every_failed_url_is_listed_with_its_reason(make_manifest, weight_server):
    weight_server.serve("bad-size.pth", PAYLOAD)
    make_manifest(
        [
            entry(
                "v1",
                {
                    "state_dict": {
                        "filename": "bad-size.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "size": len(PAYLOAD) + 1,
                        "urls": [f"{weight_server.base}/files/gone.pth", weight_server.url("bad-size.pth")],
                    }
                },
            )
        ]
    )
    with pytest.raises(DownloadError) as info:
        dlwp_models.fetch(get_weights("testnet.v1"), progress=False)
    message = str(info.value)
    assert "gone.pth: HTTP 404 Not Found\n  - " in message  # one line per source
    # the size the server announced is refused before its body is read (not the size found after)
    assert f"bad-size.pth: size mismatch: server announces {len(PAYLOAD)} bytes, expected {len(PAYLOAD) + 1}" in message


def test_truncated_cached_file_is_fetched_again(one_file, weight_server):
    path = dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["state_dict"]
    path.write_bytes(PAYLOAD[:1000])
    again = dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["state_dict"]
    assert again.read_bytes() == PAYLOAD
    assert len(weight_server.hits_for(one_file)) == 2


@pytest.mark.parametrize("layout", ["pinned", "before pins"])
def test_cached_file_without_record_is_verified_locally(one_file, weight_server, hub_home, layout):
    folder = pinned_folder(hub_home) if layout == "pinned" else hub_home / "hub" / "checkpoints" / "dlwp"
    folder.mkdir(parents=True)
    (folder / one_file).write_bytes(PAYLOAD)  # e.g. copied from another machine
    path = dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["state_dict"]
    assert weight_server.hits_for(one_file) == []
    assert path == pinned_folder(hub_home) / one_file and path.read_bytes() == PAYLOAD


def test_offline_with_cached_file_makes_no_request(one_file, weight_server, monkeypatch):
    dlwp_models.fetch(get_weights("testnet.v1"), progress=False)
    monkeypatch.setenv("DLWP_OFFLINE", "1")
    path = dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["state_dict"]
    assert path.read_bytes() == PAYLOAD
    assert len(weight_server.hits_for(one_file)) == 1


def test_offline_without_cached_file_fails_without_request(one_file, weight_server, monkeypatch):
    monkeypatch.setenv("DLWP_OFFLINE", "1")
    with pytest.raises(OfflineError, match="python -m dlwp_models fetch"):
        dlwp_models.fetch(get_weights("testnet.v1"), progress=False)
    assert weight_server.hits_for(one_file) == []


def test_mirror_is_tried_first(make_manifest, weight_server, monkeypatch):
    weight_server.serve("mirrored.pth", PAYLOAD)
    make_manifest(
        [
            entry(
                "v1",
                {
                    "state_dict": {
                        "filename": "mirrored.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "urls": [weight_server.release_url("mirrored.pth")],
                    }
                },
            )
        ]
    )
    monkeypatch.setenv("DLWP_MIRROR", f"{weight_server.base}/nowhere, {weight_server.base}/files/")
    dlwp_models.fetch(get_weights("testnet.v1"), progress=False)
    hits = weight_server.hits_for("mirrored.pth")
    assert [(h.path, h.status) for h in hits] == [("/nowhere/mirrored.pth", 404), ("/files/mirrored.pth", 200)]


@pytest.mark.parametrize("answer", ["sized", "unsized"])
def test_git_blob_sha1_pin_is_checked(make_manifest, weight_server, answer):
    # unsized: neither the manifest nor the server says the size, so the blob's "blob <size>\0"
    # header cannot be hashed while streaming: the downloaded file is hashed after the download
    ok, bad = f"blob-{answer}-ok.pth", f"blob-{answer}-bad.pth"
    weight_server.serve(ok, PAYLOAD)
    weight_server.serve(bad, PAYLOAD + b"x")
    if answer == "unsized":
        for name in (ok, bad):
            weight_server.inject(name, Fault("unsized"))
    make_manifest(
        [
            entry(
                "v1",
                {
                    "state_dict": {
                        "filename": ok,
                        "git_blob_sha1": git_blob_sha1(PAYLOAD),
                        "urls": [weight_server.url(ok)],
                    }
                },
            ),
            entry(
                "v2",
                {
                    "state_dict": {
                        "filename": bad,
                        "git_blob_sha1": git_blob_sha1(PAYLOAD),
                        "urls": [weight_server.url(bad)],
                    }
                },
            ),
        ]
    )
    assert dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["state_dict"].read_bytes() == PAYLOAD
    assert not weight_server.faults.get(ok)  # the answer without a length was the one taken
    with pytest.raises(
        DownloadError,
        match=f"git blob sha1 mismatch: expected {git_blob_sha1(PAYLOAD)}, got {git_blob_sha1(PAYLOAD + b'x')}",
    ):
        dlwp_models.fetch(get_weights("testnet.v2"), progress=False)
    assert [h.status for h in weight_server.hits_for(bad)] == [200]


def test_sha256_prefix_pin_is_checked_over_https(make_manifest, https_server, trust_https):
    https_server.serve("prefix-ok.pth", PAYLOAD)
    https_server.serve("prefix-bad.pth", PAYLOAD + b"x")
    prefix = sha256_of(PAYLOAD)[:8]
    make_manifest(
        [
            entry(
                "v1",
                {
                    "state_dict": {
                        "filename": "prefix-ok.pth",
                        "sha256_prefix": prefix,
                        "urls": [https_server.url("prefix-ok.pth")],
                    }
                },
            ),
            entry(
                "v2",
                {
                    "state_dict": {
                        "filename": "prefix-bad.pth",
                        "sha256_prefix": prefix,
                        "urls": [https_server.url("prefix-bad.pth")],
                    }
                },
            ),
        ]
    )
    assert dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["state_dict"].read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="expected prefix " + prefix):
        dlwp_models.fetch(get_weights("testnet.v2"), progress=False)


def test_plain_http_without_strong_pin_is_refused(make_manifest, weight_server):
    weight_server.serve("weak.pth", PAYLOAD)
    make_manifest(
        [
            entry(
                "v1",
                {
                    "state_dict": {
                        "filename": "weak.pth",
                        "sha256_prefix": sha256_of(PAYLOAD)[:8],
                        "urls": [weight_server.url("weak.pth")],
                    }
                },
            )
        ]
    )
    with pytest.raises(DownloadError, match="plain http:// is refused"):
        dlwp_models.fetch(get_weights("testnet.v1"), progress=False)
    assert weight_server.hits_for("weak.pth") == []


def test_multi_part_file_is_joined_and_checked(make_manifest, file_entry, weight_server, hub_home):
    a, b = PAYLOAD[:1_000_001], PAYLOAD[1_000_001:]
    make_manifest(
        [
            entry(
                "v1",
                {
                    "encoder": {
                        "filename": "joined.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "parts": [file_entry("part-a.pth", a), file_entry("part-b.pth", b)],
                    }
                },
            )
        ]
    )
    path = dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["encoder"]
    assert path.read_bytes() == PAYLOAD
    assert not (path.parent / "part-a.pth").exists()  # the joined file is kept, not the bytes twice


def test_parts_only_file_is_pinned_by_its_parts(make_manifest, weight_server):
    a, b = PAYLOAD[:10], PAYLOAD[10:]
    weight_server.serve("only-a.pth", a)
    weight_server.serve("only-b.pth", b)
    make_manifest(
        [
            entry(
                "v1",
                {
                    "encoder": {
                        "filename": "only-joined.pth",
                        "parts": [
                            {
                                "filename": "only-a.pth",
                                "urls": [weight_server.url("only-a.pth")],
                                "git_blob_sha1": git_blob_sha1(a),
                            },
                            {
                                "filename": "only-b.pth",
                                "urls": [weight_server.url("only-b.pth")],
                                "git_blob_sha1": git_blob_sha1(b),
                            },
                        ],
                    }
                },
            )
        ]
    )
    path = dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["encoder"]
    assert path.read_bytes() == PAYLOAD
    path.with_name(path.name + ".verified").unlink()  # an unrecorded join is not trusted
    path.write_bytes(b"not the join")
    assert dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["encoder"].read_bytes() == PAYLOAD


def test_joined_file_url_is_tried_before_parts(make_manifest, file_entry, weight_server):
    a, b = PAYLOAD[:5], PAYLOAD[5:]
    weight_server.serve("rehosted.pth", PAYLOAD)
    make_manifest(
        [
            entry(
                "v1",
                {
                    "encoder": {
                        "filename": "rehosted.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "urls": [weight_server.url("rehosted.pth")],
                        "parts": [file_entry("unused-a.pth", a), file_entry("unused-b.pth", b)],
                    }
                },
            )
        ]
    )
    dlwp_models.fetch(get_weights("testnet.v1"), progress=False)
    assert weight_server.hits_for("unused-a.pth") == []


FETCH_SCRIPT = textwrap.dedent("""
    import sys, time, dlwp_models
    time.sleep(max(0.0, float(sys.argv[1]) - time.time()))   # all four start together
    began = time.time()
    path = dlwp_models.fetch(dlwp_models.get_weights("testnet.v1"), progress=False)["state_dict"]
    ended = time.time()
    sys.stdout.write(str(path) + " " + __import__("hashlib").sha256(path.read_bytes()).hexdigest()
                     + f" {began} {ended}")
""")


def test_four_processes_download_once_and_all_succeed(one_file, weight_server):
    weight_server.delay_per_chunk[one_file] = 0.05  # ~2.4 s per download: the processes overlap
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}
    start = str(time.time() + 8)  # after every interpreter has imported torch
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FETCH_SCRIPT, start],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in results]
    fields = [out.split() for out, _ in results]
    assert {tuple(f[:2]) for f in fields} == {(fields[0][0], sha256_of(PAYLOAD))}
    began, ended = [float(f[2]) for f in fields], [float(f[3]) for f in fields]
    # the lock was tested: every process asked for the file before the first one had it
    assert max(began) < min(ended), f"the processes ran one after another: began {began}, ended {ended}"
    assert [h.status for h in weight_server.hits_for(one_file)] == [200]


def test_retry_after_seconds_are_waited(one_file, weight_server):
    weight_server.inject(one_file, Fault("status", 503, headers={"Retry-After": "1"}))
    started = time.monotonic()
    dlwp_models.fetch(get_weights("testnet.v1"), progress=False)
    assert time.monotonic() - started >= 1.0


def test_malformed_retry_after_falls_back_to_backoff(one_file, weight_server, monkeypatch):
    monkeypatch.setattr(_fetch, "BACKOFF", 0.01)
    weight_server.inject(one_file, Fault("status", 503, headers={"Retry-After": "soon"}))
    assert dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["state_dict"].read_bytes() == PAYLOAD


def test_parts_only_file_is_never_taken_whole_from_a_mirror(
    make_manifest, file_entry, https_server, trust_https, monkeypatch
):
    # over https, where nothing else would refuse the mirror: only the parts-only rule keeps it out
    a, b = PAYLOAD[:7], PAYLOAD[7:]
    https_server.serve("mirror-bait.pth", b"attacker bytes, not the join")
    make_manifest(
        [
            entry(
                "v1",
                {
                    "encoder": {
                        "filename": "mirror-bait.pth",
                        "parts": [file_entry("bait-a.pth", a), file_entry("bait-b.pth", b)],
                    }
                },
            )
        ]
    )
    monkeypatch.setenv("DLWP_MIRROR", f"{https_server.base}/files")
    assert dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["encoder"].read_bytes() == PAYLOAD
    assert https_server.hits_for("mirror-bait.pth") == []


def test_copied_cache_works_offline_even_with_new_times(
    make_manifest, file_entry, weight_server, hub_home, monkeypatch
):
    a, b = PAYLOAD[:9], PAYLOAD[9:]
    make_manifest(
        [
            entry(
                "v1",
                {
                    "encoder": {
                        "filename": "copied-join.pth",
                        "parts": [file_entry("copied-a.pth", a), file_entry("copied-b.pth", b)],
                    },
                    "state_dict": file_entry("copied-whole.pth", PAYLOAD),
                },
            )
        ]
    )
    paths = dlwp_models.fetch(get_weights("testnet.v1"), progress=False)
    for path in paths.values():
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # as a copy without -p would
    monkeypatch.setenv("DLWP_OFFLINE", "1")
    names = ("copied-a.pth", "copied-b.pth", "copied-whole.pth")
    before = [len(weight_server.hits_for(name)) for name in names]
    again = dlwp_models.fetch(get_weights("testnet.v1"), progress=False)
    assert again == paths and again["encoder"].read_bytes() == PAYLOAD
    assert [len(weight_server.hits_for(name)) for name in names] == before


def test_offline_join_without_its_record_is_kept_and_explained(make_manifest, file_entry, hub_home, monkeypatch):
    a, b = PAYLOAD[:9], PAYLOAD[9:]
    make_manifest(
        [
            entry(
                "v1",
                {
                    "encoder": {
                        "filename": "norecord-join.pth",
                        "parts": [file_entry("norecord-a.pth", a), file_entry("norecord-b.pth", b)],
                    }
                },
            )
        ]
    )
    path = dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["encoder"]
    path.with_name(path.name + ".verified").unlink()
    monkeypatch.setenv("DLWP_OFFLINE", "1")
    with pytest.raises(
        OfflineError,
        match=r"record is missing\. Copy the \.verified files along with the cache "
        r"folder, or unset DLWP_OFFLINE to join the parts again\.$",
    ):
        dlwp_models.fetch(get_weights("testnet.v1"), progress=False)
    assert path.read_bytes() == PAYLOAD  # nothing deleted


def test_same_size_damage_to_a_cached_file_is_caught(one_file, weight_server):
    path = dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["state_dict"]
    with open(path, "r+b") as fh:
        fh.seek(len(PAYLOAD) // 2)
        fh.write(b"\0" * 4096)
    assert dlwp_models.fetch(get_weights("testnet.v1"), progress=False)["state_dict"].read_bytes() == PAYLOAD
    assert len(weight_server.hits_for(one_file)) == 2


def test_partial_files_of_dead_processes_are_removed(one_file, hub_home):
    cache = pinned_folder(hub_home)
    cache.mkdir(parents=True)
    stale = cache / f"{one_file}.deadbeef.partial"
    stale.write_bytes(b"half a download")
    dlwp_models.fetch(get_weights("testnet.v1"), progress=False)
    assert not stale.exists()


def test_bad_lock_timeout_setting_is_a_clear_error(one_file, monkeypatch):
    monkeypatch.setenv("DLWP_LOCK_TIMEOUT", "abc")
    with pytest.raises(DownloadError, match="DLWP_LOCK_TIMEOUT must be a number"):
        dlwp_models.fetch(get_weights("testnet.v1"), progress=False)

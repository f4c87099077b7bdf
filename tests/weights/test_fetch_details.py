"""The fetcher's smaller rules, each checked on its own: how long a Retry-After makes it wait, a
join of good parts that does not match the file's own pin, disk failures while joining, the
progress bar, what a stalled source leaves to resume, hashes of files, and hosts in messages."""

from __future__ import annotations

import email.utils
import hashlib
import os
import time

import pytest

import dlwp_models
from dlwp_models import DownloadError, get_weights
from dlwp_models.weights import download, http, integrity, store
from dlwp_models.weights.manifest import FileSpec
from conftest import git_blob_sha1, sha256_of
from loopback import Fault

PAYLOAD = os.urandom(2 * (1 << 20) + 777)


class Answer:
    """What _retry_after reads of a response (headers case-insensitive, as requests has them)."""

    def __init__(self, status: int = 503, **headers: str) -> None:
        from requests.structures import CaseInsensitiveDict

        self.status_code, self.headers = status, CaseInsensitiveDict(headers)


def entry(files: dict) -> dict:
    return {"name": "details.v1", "model": "details", "default": True, "format": "torchvision", "files": files}


def fetch(**kwargs):
    return dlwp_models.fetch(get_weights("details.v1"), **kwargs)


# --------------------------------------------------------------------------- Retry-After


def test_retry_after_in_seconds_is_waited_as_given_up_to_the_limit():
    assert download._retry_after(Answer(**{"Retry-After": "7"}), 0) == 7.0
    assert download._retry_after(Answer(**{"Retry-After": "60"}), 0) == 60.0     # the limit itself
    with pytest.raises(download._SourceFailed) as info:
        download._retry_after(Answer(429, **{"Retry-After": "61"}), 0)
    assert str(info.value) == "HTTP 429 with Retry-After '61' (longer than 60s)"


def test_retry_after_as_a_date_waits_until_then_and_never_a_past_one():
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= download._retry_after(Answer(**{"Retry-After": soon}), 0) <= 30
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert download._retry_after(Answer(**{"Retry-After": past}), 0) == 0.0


@pytest.mark.parametrize("headers", [{}, {"Retry-After": "whenever"}])
def test_without_a_usable_retry_after_the_wait_doubles(headers):
    waits = [download._retry_after(Answer(**headers), attempt) for attempt in range(4)]
    assert waits == [download.BACKOFF * 2 ** attempt for attempt in range(4)] == [0.5, 1.0, 2.0, 4.0]


# --------------------------------------------------------------------------- joining parts


def test_good_parts_whose_join_fails_the_files_own_pin_are_refused(make_manifest, file_entry, hub_home):
    a, b = PAYLOAD[:1000], PAYLOAD[1000:]
    make_manifest([entry({"encoder": {"filename": "misjoined.pth", "sha256": sha256_of(b + a),
                                      "parts": [file_entry("mis-a.pth", a), file_entry("mis-b.pth", b)]}})])
    with pytest.raises(DownloadError) as info:
        fetch(progress=False)
    assert (f"2 parts: joined parts: sha256 mismatch: expected {sha256_of(b + a)}, got {sha256_of(PAYLOAD)}"
            in str(info.value))
    folder = hub_home / "hub" / "checkpoints" / "dlwp" / f"sha256-{sha256_of(b + a)}"
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) == []


def test_a_join_pinned_by_git_blob_sha1_is_checked_by_it(make_manifest, file_entry):
    a, b = PAYLOAD[:5000], PAYLOAD[5000:]
    make_manifest([entry({"encoder": {"filename": "blob-joined.pth", "git_blob_sha1": git_blob_sha1(PAYLOAD),
                                      "size": len(PAYLOAD),
                                      "parts": [file_entry("blob-a.pth", a), file_entry("blob-b.pth", b)]}})])
    assert fetch(progress=False)["encoder"].read_bytes() == PAYLOAD


@pytest.mark.parametrize(("doing", "flush"), [("create the joined file", False), ("write the joined file", False),
                                              ("write the joined file", True)])
def test_a_full_disk_while_joining_names_the_step_and_the_file(make_manifest, file_entry, monkeypatch, doing,
                                                               flush):
    a, b = PAYLOAD[:1000], PAYLOAD[1000:]
    make_manifest([entry({"encoder": {"filename": "full.pth", "sha256": sha256_of(PAYLOAD),
                                      "parts": [file_entry("full-a.pth", a), file_entry("full-b.pth", b)]}})])
    real = download._cache_write

    def disk_full(action, spec, what):
        if what == doing and (getattr(action, "__name__", "") == "flush") == flush:
            raise store.disk_error(OSError(28, "No space left on device"), store.cached_path(spec),
                                   f"{what} of {spec.filename}")
        return real(action, spec, what)

    monkeypatch.setattr(download, "_cache_write", disk_full)
    with pytest.raises(store.CacheWriteError, match=f"^could not {doing} of full.pth "):
        fetch(progress=False)


# --------------------------------------------------------------------------- progress


def test_a_progress_bar_is_shown_by_default_and_never_when_turned_off(make_manifest, file_entry, capsys):
    a, b = PAYLOAD[:1000], PAYLOAD[1000:]
    make_manifest([entry({"encoder": {"filename": "bar.pth", "sha256": sha256_of(PAYLOAD),
                                      "parts": [file_entry("bar-a.pth", a), file_entry("bar-b.pth", b)]}})])
    fetch(progress=False)
    assert capsys.readouterr().err == ""
    for path in (store.cache_dir()).rglob("*"):       # fetch again, now with the default
        if path.is_file():
            path.unlink()
    fetch()
    err = capsys.readouterr().err
    assert "bar-a.pth" in err and "bar-b.pth" in err


# --------------------------------------------------------------------------- a stalled source


def test_a_stalled_source_leaves_its_bytes_for_the_next_run(make_manifest, weight_server, hub_home, monkeypatch):
    monkeypatch.setattr(http, "STALL_SECONDS", 0.5)
    weight_server.serve("stalled.pth", PAYLOAD)
    weight_server.inject("stalled.pth", Fault("drip", seconds=0.1, after=40))
    make_manifest([entry({"state_dict": {"filename": "stalled.pth", "sha256": sha256_of(PAYLOAD),
                                         "urls": [weight_server.url("stalled.pth")]}})])
    with pytest.raises(DownloadError, match="stalled"):
        fetch(progress=False)
    kept = hub_home / "hub" / "checkpoints" / "dlwp" / f"sha256-{sha256_of(PAYLOAD)}" / "stalled.pth.resume"
    assert 0 < kept.stat().st_size <= 40 and PAYLOAD.startswith(kept.read_bytes())


# --------------------------------------------------------------------------- hashes and hosts


def test_file_hashes_are_sha256_and_gits_blob_sha1(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(PAYLOAD)
    assert integrity.hash_file(path, want_blob=True) == (sha256_of(PAYLOAD), git_blob_sha1(PAYLOAD))
    assert integrity.hash_file(path, want_blob=False) == (sha256_of(PAYLOAD), None)
    assert integrity.sha256_file(path) == hashlib.sha256(PAYLOAD).hexdigest()


def test_a_stream_of_unknown_length_gets_its_blob_sha1_from_the_file(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(PAYLOAD)
    digests = integrity.Digests(FileSpec("w.bin", git_blob_sha1=git_blob_sha1(PAYLOAD)), None)
    digests.update(PAYLOAD)
    assert digests.count == len(PAYLOAD) and digests.sha256.hexdigest() == sha256_of(PAYLOAD)
    assert digests.blob_hexdigest(path) == git_blob_sha1(PAYLOAD)


def test_messages_name_a_host_without_credentials_path_or_query():
    assert http.url_host("https://user:secret@example.org/a/b.pth?token=x") == "https://example.org"
    assert http.url_host("http://127.0.0.1:8080/files/x") == "http://127.0.0.1:8080"
    assert http.url_host("file:///tmp/w.pth") == "file://"


def test_a_download_budget_of_one_byte_is_allowed(monkeypatch):
    monkeypatch.setenv("DLWP_MAX_DOWNLOAD_BYTES", "1")
    assert http.max_download_bytes() == 1

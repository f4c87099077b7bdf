"""The fetcher's smaller rules, each checked on its own: how long a Retry-After makes it wait, a
join of good parts that does not match the file's own pin, disk failures while joining, the
progress bar, what a stalled source leaves to resume, hashes of files, and hosts in messages."""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import time

import pytest
from conftest import git_blob_sha1, kept_partial, one_file_spec, sha256_of
from loopback import Fault

import dlwp_models
from dlwp_models import DownloadError, get_weights
from dlwp_models.weights import download, http, integrity, store
from dlwp_models.weights.manifest import FileSpec

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
    assert download._retry_after(Answer(**{"Retry-After": "60"}), 0) == 60.0  # the limit itself
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
    assert waits == [download.BACKOFF * 2**attempt for attempt in range(4)] == [0.5, 1.0, 2.0, 4.0]


# --------------------------------------------------------------------------- joining parts


def test_good_parts_whose_join_fails_the_files_own_pin_are_refused(make_manifest, file_entry, hub_home):
    a, b = PAYLOAD[:1000], PAYLOAD[1000:]
    make_manifest(
        [
            entry(
                {
                    "encoder": {
                        "filename": "misjoined.pth",
                        "sha256": sha256_of(b + a),
                        "parts": [file_entry("mis-a.pth", a), file_entry("mis-b.pth", b)],
                    }
                }
            )
        ]
    )
    with pytest.raises(DownloadError) as info:
        fetch(progress=False)
    assert f"2 parts: joined parts: sha256 mismatch: expected {sha256_of(b + a)}, got {sha256_of(PAYLOAD)}" in str(
        info.value
    )
    folder = hub_home / "hub" / "checkpoints" / "dlwp" / f"sha256-{sha256_of(b + a)}"
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) == []


def test_a_join_pinned_by_git_blob_sha1_is_checked_by_it(make_manifest, file_entry):
    a, b = PAYLOAD[:5000], PAYLOAD[5000:]
    make_manifest(
        [
            entry(
                {
                    "encoder": {
                        "filename": "blob-joined.pth",
                        "git_blob_sha1": git_blob_sha1(PAYLOAD),
                        "size": len(PAYLOAD),
                        "parts": [file_entry("blob-a.pth", a), file_entry("blob-b.pth", b)],
                    }
                }
            )
        ]
    )
    assert fetch(progress=False)["encoder"].read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    ("doing", "flush"),
    [("create the joined file", False), ("write the joined file", False), ("write the joined file", True)],
)
def test_a_full_disk_while_joining_names_the_step_and_the_file(make_manifest, file_entry, monkeypatch, doing, flush):
    a, b = PAYLOAD[:1000], PAYLOAD[1000:]
    make_manifest(
        [
            entry(
                {
                    "encoder": {
                        "filename": "full.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "parts": [file_entry("full-a.pth", a), file_entry("full-b.pth", b)],
                    }
                }
            )
        ]
    )
    real = download._cache_write

    def disk_full(action, spec, what):
        if what == doing and (getattr(action, "__name__", "") == "flush") == flush:
            raise store.disk_error(
                OSError(28, "No space left on device"), store.cached_path(spec), f"{what} of {spec.filename}"
            )
        return real(action, spec, what)

    monkeypatch.setattr(download, "_cache_write", disk_full)
    with pytest.raises(store.CacheWriteError, match=f"^could not {doing} of full.pth "):
        fetch(progress=False)


# --------------------------------------------------------------------------- progress


def test_a_progress_bar_is_shown_by_default_and_never_when_turned_off(make_manifest, file_entry, capsys):
    a, b = PAYLOAD[:1000], PAYLOAD[1000:]
    make_manifest(
        [
            entry(
                {
                    "encoder": {
                        "filename": "bar.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "parts": [file_entry("bar-a.pth", a), file_entry("bar-b.pth", b)],
                    }
                }
            )
        ]
    )
    fetch(progress=False)
    assert capsys.readouterr().err == ""
    for path in (store.cache_dir()).rglob("*"):  # fetch again, now with the default
        if path.is_file():
            path.unlink()
    fetch()
    err = capsys.readouterr().err
    assert "bar-a.pth" in err and "bar-b.pth" in err


def test_fetch_file_and_fetch_files_show_the_bar_by_default_too(make_manifest, file_entry, capsys):
    # the library's own callers always say; a direct caller of the weights layer gets the bar
    make_manifest(
        [
            entry(
                {
                    "state_dict": file_entry("default-bar.pth", PAYLOAD[:5000]),
                    "encoder": file_entry("default-bar-2.pth", PAYLOAD[5000:9000]),
                }
            )
        ]
    )
    weights = get_weights("details.v1")
    download.fetch_file(weights.files["state_dict"])
    assert "default-bar.pth" in capsys.readouterr().err
    download.fetch_files(weights)  # the first is cached now: only the second's bar
    err = capsys.readouterr().err
    assert "default-bar-2.pth" in err and "default-bar.pth:" not in err


def test_a_file_spec_without_any_source_says_so(hub_home):
    # the manifest refuses such a file; a FileSpec made in Python can still have no URL and no parts
    spec = FileSpec("nowhere.pth", sha256=sha256_of(b"x"))
    with pytest.raises(DownloadError) as info:
        download.fetch_file(spec, progress=False)
    assert str(info.value).startswith(
        "could not fetch nowhere.pth; every source failed:\n  (no sources listed)\nCheck the network (or DLWP_MIRROR)"
    )


def test_the_progress_bar_counts_bytes_in_binary_units_and_is_cleared_when_done(make_manifest, file_entry, capsys):
    make_manifest([entry({"state_dict": file_entry("shown.pth", PAYLOAD)})])
    fetch(progress=True)
    err = capsys.readouterr().err
    first, answered = err.split("\r")[1:3]  # drawn before the server answers, and once it has
    assert first.startswith("shown.pth:") and "0.00/2.00M [" in first and "B/s]" in first  # 2 MiB + 777, by 1024s
    assert "0.00/2.00M [" in answered  # the total the server announced
    assert err.endswith("\r") and err.split("\r")[-2].strip() == ""  # wiped at the end (leave=False)


# --------------------------------------------------------------------------- a stalled source


def test_a_stalled_source_leaves_its_bytes_for_the_next_run(make_manifest, weight_server, hub_home, monkeypatch):
    monkeypatch.setattr(http, "STALL_SECONDS", 0.5)
    weight_server.serve("stalled.pth", PAYLOAD)
    weight_server.inject("stalled.pth", Fault("drip", seconds=0.1, after=40))
    make_manifest(
        [
            entry(
                {
                    "state_dict": {
                        "filename": "stalled.pth",
                        "sha256": sha256_of(PAYLOAD),
                        "urls": [weight_server.url("stalled.pth")],
                    }
                }
            )
        ]
    )
    with pytest.raises(
        DownloadError, match=r"stalled.*\(DLWP_STALL_BYTES_PER_S and DLWP_STALL_SECONDS set the limit\)"
    ):
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


# --------------------------------------------------------------------------- sources, each on its own


def test_mirror_bases_lose_only_their_trailing_slashes(monkeypatch):
    monkeypatch.setenv("DLWP_MIRROR", " https://mirror.test/dlwp-X/ ,, https://other.test/files// ")
    assert download._mirror_bases() == ["https://mirror.test/dlwp-X", "https://other.test/files"]


def test_each_scheme_is_refused_with_its_reason_unless_the_pin_allows_it():
    weak, strong = one_file_spec(sha256_prefix="abcdef12"), one_file_spec(sha256="ab" * 32)
    download._check_scheme("https://a.test/net.pth", weak)
    download._check_scheme("HTTP://a.test/net.pth", strong)  # a full hash makes plain http safe
    with pytest.raises(download._SourceFailed) as info:
        download._check_scheme("http://user:pw@a.test:8080/net.pth?t=1", weak)
    assert str(info.value) == (
        "plain http:// is refused for a file pinned only by sha256_prefix "
        "(http://a.test:8080); serve it over https or pin it by full sha256 or git_blob_sha1"
    )
    with pytest.raises(download._SourceFailed) as info:
        download._check_scheme("ftp://a.test/net.pth", strong)
    assert str(info.value) == "unsupported URL scheme 'ftp'; only https (or http with a full hash) is fetched"


def test_the_read_timeout_never_outlasts_the_stall_window(monkeypatch):
    import requests

    monkeypatch.setenv("DLWP_STALL_SECONDS", "7")
    stream = download._Stream(requests.Session(), "https://a.test/net.pth", one_file_spec(sha256="ab" * 32), False)
    assert stream.timeout == (download.TIMEOUT[0], 7.0)
    monkeypatch.setenv("DLWP_STALL_SECONDS", "600")
    stream = download._Stream(requests.Session(), "https://a.test/net.pth", one_file_spec(sha256="ab" * 32), False)
    assert stream.timeout == download.TIMEOUT


def test_a_source_is_tried_max_attempts_times_and_no_more(make_manifest, file_entry, weight_server):
    busy = Fault("status", 503, headers={"Retry-After": "0"})
    make_manifest([entry({"state_dict": file_entry("busy.pth", PAYLOAD)})])
    weight_server.inject("busy.pth", *[busy] * (download.MAX_ATTEMPTS - 1))
    fetch(progress=False)  # the last attempt gets it
    assert [h.status for h in weight_server.hits_for("busy.pth")] == [503] * (download.MAX_ATTEMPTS - 1) + [200]
    make_manifest([entry({"state_dict": file_entry("busier.pth", PAYLOAD)})])
    weight_server.inject("busier.pth", *[busy] * download.MAX_ATTEMPTS)
    with pytest.raises(DownloadError, match=f"HTTP 503 after {download.MAX_ATTEMPTS} attempts"):
        fetch(progress=False)


@pytest.mark.parametrize("damage", ["not a dict", "other pins", "url not text", "a link", "no record", "bad json"])
def test_a_kept_partial_is_continued_only_with_its_own_sound_record(hub_home, damage):
    from dlwp_models.weights import resume

    spec = one_file_spec(sha256="ab" * 32)
    path = kept_partial(spec, "https://a.test/net.pth", b"kept bytes")
    kept = resume.resumable(spec)
    assert (kept.path, kept.url, kept.size) == (path, "https://a.test/net.pth", 10)
    record = path.with_name(path.name + ".json")
    sound = json.loads(record.read_text())
    if damage == "not a dict":
        record.write_text(json.dumps([sound]))
    elif damage == "other pins":
        record.write_text(json.dumps({**sound, "pinned": {"sha256": "cd" * 32}}))
    elif damage == "url not text":
        record.write_text(json.dumps({**sound, "url": ["https://a.test/net.pth"]}))
    elif damage == "a link":
        elsewhere = path.with_name("elsewhere")
        path.rename(elsewhere)
        path.symlink_to(elsewhere)
    elif damage == "no record":
        record.unlink()
    else:
        record.write_text("{not json")
    assert resume.resumable(spec) is None


@pytest.mark.parametrize(("kept", "first_range"), [(1, "bytes=1-"), (len(PAYLOAD), f"bytes={len(PAYLOAD)}-")])
def test_kept_bytes_from_one_to_the_whole_file_are_continued(
    make_manifest, file_entry, weight_server, kept, first_range
):
    """One kept byte is asked on from byte 1; a whole file kept (a run killed before its check) is
    asked on from its end (the server's 416 then restarts it), never thrown away unasked."""
    name = f"kept-{kept}.pth"
    spec_entry = file_entry(name, PAYLOAD)
    make_manifest([entry({"state_dict": spec_entry})])
    spec = get_weights("details.v1").files["state_dict"]
    kept_partial(spec, spec_entry["urls"][0], PAYLOAD[:kept])
    fetch(progress=False)
    hits = weight_server.hits_for(name)
    assert hits[0].range == first_range
    if kept == len(PAYLOAD):  # nothing left to send: 416, then the whole file afresh
        assert [(h.status, h.range) for h in hits] == [(416, first_range), (200, None)]
    assert store.verified(spec) is not None


def test_a_disk_that_fails_as_a_download_starts_names_that_step(make_manifest, file_entry, monkeypatch):
    from dlwp_models.weights import resume

    def full(spec, url):
        raise OSError(28, "No space left on device")

    make_manifest([entry({"state_dict": file_entry("nostart.pth", PAYLOAD)})])
    monkeypatch.setattr(resume, "start_resumable", full)
    with pytest.raises(
        store.CacheWriteError,
        match=r"could not start the download of nostart\.pth \(.*nostart\.pth\): "
        r"No space left on device; the disk holding .* is full",
    ):
        fetch(progress=False)


def test_a_partial_download_that_cannot_be_opened_names_that_step(make_manifest, file_entry, monkeypatch):
    real_open = os.open

    def refuse_reopening(path, flags, *args):
        if str(path).endswith(".resume") and not flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)

    make_manifest([entry({"state_dict": file_entry("noopen.pth", PAYLOAD)})])
    monkeypatch.setattr(download.os, "open", refuse_reopening)
    with pytest.raises(
        store.CacheWriteError,
        match=r"could not open the partial download of noopen\.pth \(.*\): "
        r"Permission denied; the cache folder .* cannot be written",
    ):
        fetch(progress=False)

"""`store.settle`, the check of a file found in the cache, on its own: a current record is
trusted without reading the file; a file without one (placed by hand, copied without times) is
hashed against every pin the spec has, then recorded so the next look needs no hashing; a file
pinned only through its parts is accepted only with the record of its verified join."""

from __future__ import annotations

import json
import os

import pytest
from conftest import git_blob_sha1, sha256_of
from conftest import one_file_spec as spec

from dlwp_models.weights import store

DATA = b"weights " * 1000


def placed(file_spec, data: bytes = DATA):
    path = store.cached_path(file_spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "pins",
    [
        {"sha256": sha256_of(DATA)},
        {"git_blob_sha1": git_blob_sha1(DATA)},
        {"sha256": sha256_of(DATA), "git_blob_sha1": git_blob_sha1(DATA)},
    ],
)
def test_a_file_placed_by_hand_is_checked_by_every_pin_then_recorded(hub_home, monkeypatch, pins):
    file_spec = spec(**pins)
    path = placed(file_spec)
    cached = store.settle(file_spec)
    assert cached == store.CachedFile(path, sha256_of(DATA))
    record = json.loads(path.with_name("net.pth.verified").read_text())
    assert record["sha256"] == sha256_of(DATA) and record["pinned"] == file_spec.integrity()
    monkeypatch.setattr(store, "hash_file", lambda *a, **k: pytest.fail("a recorded file was hashed again"))
    assert store.settle(file_spec) == cached  # the record now answers


def test_a_file_failing_its_blob_pin_is_removed(hub_home):
    file_spec = spec(sha256=sha256_of(DATA), git_blob_sha1=git_blob_sha1(DATA[:-1] + b"!"))
    path = placed(file_spec)
    assert store.settle(file_spec) is None and not path.exists()


def copied_without_times(path, **record) -> None:
    """A record as the join wrote it, on a file whose times changed since (``cp`` without -p):
    the record no longer vouches for the file, which is hashed and compared with it."""
    store.write_record(path, **record)
    os.utime(path, ns=(10**18, 10**18))


def test_a_joined_file_is_accepted_only_with_the_record_of_its_verified_join(hub_home):
    part = {"filename": "net.pth.0", "sha256": sha256_of(DATA), "urls": ["https://a.test/net.pth.0"]}
    file_spec = spec(parts=[part])
    path = placed(file_spec)
    assert store.settle(file_spec) is None and path.exists()  # cannot be checked: left for a new join
    copied_without_times(path, sha256=sha256_of(b"other bytes"), pinned=file_spec.integrity())
    assert store.settle(file_spec) is None  # recorded for other bytes
    copied_without_times(path, sha256=sha256_of(DATA), pinned={"sha256": "ab" * 32})
    assert store.settle(file_spec) is None  # recorded for other pins
    copied_without_times(path, sha256=sha256_of(DATA), pinned=file_spec.integrity())
    assert store.settle(file_spec) == store.CachedFile(path, sha256_of(DATA))


def test_an_unreadable_or_foreign_record_is_no_record(hub_home):
    file_spec = spec(sha256=sha256_of(DATA))
    path = placed(file_spec)
    for text in ("[1, 2]", "{not json", '"a string"'):
        path.with_name("net.pth.verified").write_text(text)
        assert store._read_record(path) is None
    assert store.settle(file_spec) == store.CachedFile(path, sha256_of(DATA))  # hashed instead


def test_a_file_pinned_by_its_parts_has_a_folder_named_by_them(hub_home):
    part = {"filename": "net.pth.0", "sha256": sha256_of(DATA), "urls": ["https://a.test/net.pth.0"]}
    key = store.pin_key(spec(parts=[part]))
    assert key.startswith("parts-") and len(key) == len("parts-") + 32 and int(key[6:], 16) >= 0

"""Derived copies of verified cache files beyond the mappable copy: ONNX graphs named by
:func:`store.onnx_suffix`, a caller's ``validate`` check that makes a damaged copy again, and
:func:`store.discard` removing every copy with the file."""

from __future__ import annotations

import hashlib

import pytest

from dlwp_models.weights import store


@pytest.fixture
def cached(tmp_path) -> store.CachedFile:
    """A file with a current cache record, as if verified."""
    path = tmp_path / "sha256-x" / "net.pth"
    path.parent.mkdir()
    path.write_bytes(b"weights")
    sha256 = hashlib.sha256(b"weights").hexdigest()
    store._write_record(path, sha256=sha256, pinned={"sha256": sha256})
    return store.CachedFile(path, sha256)


def test_onnx_suffix_names_every_part_and_keeps_to_safe_characters():
    suffix = store.onnx_suffix("torch2.14.1+cu130", "ort1.32.0", "224x224")
    assert suffix == ".torch2.14.1_cu130.ort1.32.0.224x224.onnx"
    assert store.onnx_suffix("a/../b") == ".a_.._b.onnx" and "/" not in store.onnx_suffix("a/b")


def test_a_copy_failing_validate_is_made_again_and_one_passing_is_reused(cached):
    made: list[bytes] = []

    def make(tmp):
        data = b"graph %d" % len(made)
        tmp.write_bytes(data)
        made.append(data)
        return {"digest": hashlib.sha256(data).hexdigest()}

    def intact(copy, record):
        return hashlib.sha256(copy.read_bytes()).hexdigest() == record["digest"]

    suffix = store.onnx_suffix("v1")
    copy, record = store.derived_copy(cached, suffix, make, lock_timeout=5, validate=intact)
    assert copy.read_bytes() == b"graph 0" and record["source_sha256"] == cached.sha256
    assert store.derived_copy(cached, suffix, make, lock_timeout=5, validate=intact)[0] == copy
    assert len(made) == 1                                        # reused
    assert store.derived_copy(cached, suffix, make, lock_timeout=5, validate=lambda c, r: False) is not None
    assert len(made) == 2 and copy.read_bytes() == b"graph 1"     # failed the check: made again
    assert store.derived_copy(cached, ".evil/../x.onnx", make, lock_timeout=5) is None   # not a derived name


def test_discard_removes_the_file_and_every_derived_copy(cached):
    for suffix in (store.onnx_suffix("a"), store.onnx_suffix("b", "224x224")):
        store.derived_copy(cached, suffix, lambda tmp: tmp.write_bytes(b"g") and {}, lock_timeout=5)
    neighbour = cached.path.with_name("other.pth.a.onnx")
    neighbour.write_bytes(b"not ours")
    folder = cached.path.parent
    assert len(list(folder.glob("net.pth.*.onnx"))) == len(list(folder.glob("net.pth.*.onnx.verified"))) == 2
    store.discard(cached.path)
    assert not cached.path.exists()
    assert list(folder.glob("net.pth.*.onnx")) == list(folder.glob("net.pth.*.onnx.verified")) == []
    assert neighbour.exists()

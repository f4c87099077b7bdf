"""Derived copies of verified cache files beyond the mappable copy: ONNX graphs named by
:func:`store.onnx_suffix`, a caller's ``validate`` check that makes a damaged copy again, and
:func:`store.discard` removing every copy with the file."""

from __future__ import annotations

import contextlib
import hashlib

import pytest

from dlwp_models.weights import derived, store


@pytest.fixture
def cached(tmp_path) -> store.CachedFile:
    """A file with a current cache record, as if verified."""
    path = tmp_path / "sha256-x" / "net.pth"
    path.parent.mkdir()
    path.write_bytes(b"weights")
    sha256 = hashlib.sha256(b"weights").hexdigest()
    store.write_record(path, sha256=sha256, pinned={"sha256": sha256})
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
    copy, record = derived.derived_copy(cached, suffix, make, lock_timeout=5, validate=intact)
    assert copy.read_bytes() == b"graph 0" and record["source_sha256"] == cached.sha256
    assert derived.derived_copy(cached, suffix, make, lock_timeout=5, validate=intact)[0] == copy
    assert len(made) == 1  # reused
    assert derived.derived_copy(cached, suffix, make, lock_timeout=5, validate=lambda c, r: False) is not None
    assert len(made) == 2 and copy.read_bytes() == b"graph 1"  # failed the check: made again
    assert derived.derived_copy(cached, ".evil/../x.onnx", make, lock_timeout=5) is None  # not a derived name


def test_discard_removes_the_file_and_every_derived_copy(cached):
    for suffix in (store.onnx_suffix("a"), store.onnx_suffix("b", "224x224")):
        derived.derived_copy(cached, suffix, lambda tmp: tmp.write_bytes(b"g") and {}, lock_timeout=5)
    neighbour = cached.path.with_name("other.pth.a.onnx")
    neighbour.write_bytes(b"not ours")
    folder = cached.path.parent
    assert len(list(folder.glob("net.pth.*.onnx"))) == len(list(folder.glob("net.pth.*.onnx.verified"))) == 2
    store.discard(cached.path)
    assert not cached.path.exists()
    assert list(folder.glob("net.pth.*.onnx")) == list(folder.glob("net.pth.*.onnx.verified")) == []
    assert neighbour.exists()


def graph_maker(data: bytes = b"graph"):
    def make(tmp):
        tmp.write_bytes(data)
        return {"digest": hashlib.sha256(data).hexdigest()}

    return make


def test_leftovers_of_a_writer_that_died_are_removed_and_nothing_else(cached):
    suffix = store.onnx_suffix("v1")
    folder = cached.path.parent
    stale = [folder / f"net.pth{suffix}.dead1.tmp", folder / f"net.pth{suffix}.dead2.verified-tmp"]
    others = [folder / f"net.pth{store.onnx_suffix('v2')}.alive.tmp", folder / "notes.tmp"]
    for path in stale + others:
        path.write_bytes(b"partial")
    copy, _ = derived.derived_copy(cached, suffix, graph_maker(), lock_timeout=5)
    assert copy.read_bytes() == b"graph"
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in others)


@pytest.mark.parametrize("meanwhile", ["re-fetched", "record removed", "rewritten in place", "make gives up"])
def test_a_copy_of_a_source_changed_while_copying_is_not_kept(cached, meanwhile):
    """A source replaced (re-fetched, its record gone, rewritten) while its copy is made leaves no
    copy, record or temporary file: the copy is made next time from the new source."""

    def make(tmp):
        tmp.write_bytes(b"graph of the old source")
        if meanwhile == "re-fetched":
            cached.path.write_bytes(b"new weights")
            store.write_record(cached.path, sha256=hashlib.sha256(b"new weights").hexdigest())
        elif meanwhile == "record removed":
            store.record_path(cached.path).unlink()
        elif meanwhile == "rewritten in place":
            cached.path.write_bytes(b"weights, longer now")
        return None if meanwhile == "make gives up" else {}

    suffix = store.onnx_suffix("v1")
    assert derived.derived_copy(cached, suffix, make, lock_timeout=5) is None
    left = sorted(p.name for p in cached.path.parent.iterdir() if p.name.startswith(f"net.pth{suffix}"))
    assert left in ([], [f"net.pth{suffix}.lock"])


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        (
            store.MAPPABLE,
            "could not keep a memory-mappable copy of net.pth ([Errno 28] No space left on device); it is read "
            "whole on every load",
        ),
        (
            store.onnx_suffix("v1"),
            f"could not keep the derived copy net.pth{store.onnx_suffix('v1')} ([Errno 28] No space left "
            "on device); it is made again when next needed",
        ),
    ],
)
def test_a_copy_that_cannot_be_written_is_reported_and_leaves_nothing(cached, caplog, suffix, message):
    copy, _ = derived.derived_copy(cached, suffix, graph_maker(b"old graph"), lock_timeout=5)
    assert copy.exists() and store.record_path(copy).exists()

    def full_disk(tmp):
        tmp.write_bytes(b"half a gra")
        raise OSError(28, "No space left on device")

    with caplog.at_level("WARNING", logger="dlwp_models.weights.store"):
        assert derived.derived_copy(cached, suffix, full_disk, lock_timeout=5, validate=lambda c, r: False) is None
    assert message in caplog.text
    assert not copy.exists() and not store.record_path(copy).exists()  # the stale copy goes too
    assert not list(cached.path.parent.glob(f"net.pth{suffix}.*tmp"))
    assert cached.path.read_bytes() == b"weights"  # the source is untouched


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OSError(), "OSError"),
        (PermissionError("  "), "PermissionError"),
        (OSError("disk gone\nsee dmesg"), "disk gone"),
    ],
)
def test_the_reason_given_is_the_errors_first_line_or_its_kind(cached, caplog, error, reason):
    def fail(tmp):
        raise error

    with caplog.at_level("WARNING", logger="dlwp_models.weights.store"):
        assert derived.derived_copy(cached, store.MAPPABLE, fail, lock_timeout=5) is None
    assert f"could not keep a memory-mappable copy of net.pth ({reason}); it is read whole" in caplog.text


def test_a_copy_held_by_a_writer_that_hangs_is_given_up_with_a_warning(cached, caplog):
    from filelock import FileLock

    suffix = store.onnx_suffix("v1")
    other = FileLock(str(cached.path.with_name(f"net.pth{suffix}.lock")))
    other.acquire()  # another writer holds the copy's lock
    try:
        with caplog.at_level("WARNING", logger="dlwp_models.weights.store"):
            assert derived.derived_copy(cached, suffix, graph_maker(), lock_timeout=0.2) is None
    finally:
        other.release()
    assert (
        f"could not keep the derived copy net.pth{suffix} (gave up after 0s waiting for another process to "
        f"finish writing net.pth{suffix}"
    ) in caplog.text
    assert not cached.path.with_name(f"net.pth{suffix}").exists()


def test_a_copy_another_process_made_while_this_one_waited_is_used_not_made_again(cached, monkeypatch):
    """The check is made again once the lock is held: the writer that held it has made the copy."""
    suffix = store.onnx_suffix("v1")
    real_lock = store.file_lock

    @contextlib.contextmanager
    def lock_after_another_writer(path, timeout=None):
        with real_lock(path, timeout):  # the other process, first in
            derived._make_derived(cached, path, graph_maker(b"theirs"))
        with real_lock(path, timeout):
            yield

    monkeypatch.setattr(derived, "file_lock", lock_after_another_writer)
    copy, record = derived.derived_copy(cached, suffix, graph_maker(b"ours"), lock_timeout=5)
    assert copy.read_bytes() == b"theirs" and record["digest"] == hashlib.sha256(b"theirs").hexdigest()


def test_a_copy_of_an_older_source_is_not_used_for_the_new_one(cached):
    suffix = store.onnx_suffix("v1")
    old_copy, _ = derived.derived_copy(cached, suffix, graph_maker(b"old graph"), lock_timeout=5)
    cached.path.write_bytes(b"new weights")  # re-fetched: another file, another sha256
    sha256 = hashlib.sha256(b"new weights").hexdigest()
    store.write_record(cached.path, sha256=sha256, pinned={"sha256": sha256})
    copy, record = derived.derived_copy(
        store.CachedFile(cached.path, sha256), suffix, graph_maker(b"new graph"), lock_timeout=5
    )
    assert copy == old_copy and copy.read_bytes() == b"new graph" and record["source_sha256"] == sha256

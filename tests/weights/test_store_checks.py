"""The cache's own checks, one at a time: the messages of disk failures, verifying a cached file
without writing (a read-only cache), discarding what is not there, the characters of a derived
copy's name, and the wait for another process's derived copy."""

from __future__ import annotations

import errno
import hashlib
import time

import pytest
from conftest import git_blob_sha1
from filelock import FileLock

from dlwp_models.weights import derived, store
from dlwp_models.weights.manifest import FileSpec

DATA = b"verified weights " * 1000
WHERE = "/cache/sha256-x/net.pth"


def message(code: int, strerror: str | None = "Some failure") -> tuple[str, bool]:
    exc = OSError(code, strerror) if strerror else OSError(f"[Errno {code}] raw failure")
    if not strerror:
        exc.errno = code
    error = store.disk_error(exc, store.Path(WHERE), "write the download of net.pth")
    return str(error), error.read_only


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_or_quota_says_to_free_space_or_move_the_cache(code):
    assert message(code) == (
        f"could not write the download of net.pth ({WHERE}): Some failure; the disk holding /cache/sha256-x "
        "is full. Free some space there, or set TORCH_HOME to a folder on a disk with room, and run again "
        "(a download resumes where it stopped).",
        False,
    )


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.EPERM])
def test_a_cache_that_cannot_be_written_says_how_to_copy_it(code):
    assert message(code) == (
        f"could not write the download of net.pth ({WHERE}): Some failure; the cache folder /cache/sha256-x "
        "cannot be written. A cached file whose .verified record is missing or out of date must be checked "
        "under its lock: make the folder writable, copy the cache with its .verified files keeping times "
        "(cp -p), or set TORCH_HOME to a writable folder.",
        True,
    )


def test_another_disk_failure_names_the_error_and_what_to_try():
    assert message(errno.EIO) == (
        f"could not write the download of net.pth ({WHERE}): Some failure; check the cache folder (or set "
        "TORCH_HOME to another folder) and try again.",
        False,
    )
    text, _ = message(errno.EIO, strerror=None)  # no strerror: the exception's own text
    assert f"({WHERE}): [Errno {errno.EIO}] raw failure; check the cache folder" in text


@pytest.fixture
def spec_of(hub_home):
    """A spec pinned by sha256 (or git blob sha1), with ``data`` placed at its cache path."""

    def make(data: bytes, *, pin: str = "sha256", size: int | None = None, placed: bytes | None = None) -> FileSpec:
        pins = (
            {"sha256": hashlib.sha256(data).hexdigest()} if pin == "sha256" else {"git_blob_sha1": git_blob_sha1(data)}
        )
        spec = FileSpec("net.pth", urls=("https://127.0.0.1:9/net.pth",), size=size, **pins)
        path = store.cached_path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if placed is None else placed)
        return spec

    return make


@pytest.mark.parametrize("pin", ["sha256", "git_blob_sha1"])
def test_read_only_verification_accepts_exactly_the_pinned_bytes(spec_of, pin):
    spec = spec_of(DATA, pin=pin, size=len(DATA))
    hit = store.verify_read_only(spec)
    assert hit == store.CachedFile(store.cached_path(spec), hashlib.sha256(DATA).hexdigest())
    assert not list(store.cached_path(spec).parent.glob("*.verified"))  # nothing written
    same_size = DATA[:-1] + b"!"
    assert store.verify_read_only(spec_of(DATA, pin=pin, size=len(DATA), placed=same_size)) is None
    assert store.verify_read_only(spec_of(DATA, pin=pin, placed=same_size)) is None  # no size pinned
    assert store.verify_read_only(spec_of(DATA, pin=pin, size=len(DATA), placed=DATA + b"x")) is None


def test_read_only_verification_needs_a_file_and_a_hash_of_its_own(hub_home, spec_of):
    spec = spec_of(DATA)
    store.cached_path(spec).unlink()
    assert store.verify_read_only(spec) is None  # nothing there
    part = FileSpec("part.bin", sha256=hashlib.sha256(DATA).hexdigest())
    joined = FileSpec("net.pth", parts=(part,))  # pinned only through its parts
    path = store.cached_path(joined)
    path.parent.mkdir(parents=True)
    path.write_bytes(DATA)
    assert store.verify_read_only(joined) is None


def test_discarding_a_file_that_is_not_there_is_no_error(tmp_path):
    store.discard(tmp_path / "gone.pth")
    path = tmp_path / "kept.pth"
    path.write_bytes(b"x")
    store.discard(path)  # the file, without a record
    assert not path.exists()


def test_onnx_suffix_keeps_capitals_and_digits():
    assert store.onnx_suffix("CPU", "ORT-1.32", "T4") == ".CPU.ORT_1.32.T4.onnx"


def test_a_derived_copy_waits_only_as_long_as_asked(tmp_path, monkeypatch):
    """Another process holds the copy's lock: the caller's lock_timeout, not the fetcher's hour
    (DLWP_LOCK_TIMEOUT), bounds the wait, and the load goes on without the copy."""
    path = tmp_path / "sha256-x" / "net.pth"
    path.parent.mkdir()
    path.write_bytes(DATA)
    sha256 = hashlib.sha256(DATA).hexdigest()
    store.write_record(path, sha256=sha256, pinned={"sha256": sha256})
    monkeypatch.setenv("DLWP_LOCK_TIMEOUT", "5")
    holder = FileLock(str(path.with_name(path.name + store.MAPPABLE + ".lock")))
    with holder:
        started = time.monotonic()
        got = derived.derived_copy(store.CachedFile(path, sha256), store.MAPPABLE, lambda tmp: {}, lock_timeout=0.3)
        waited = time.monotonic() - started
    assert got is None and 0.25 <= waited < 3


def test_a_sound_derived_copy_is_used_without_its_lock(tmp_path, monkeypatch):
    """A read-only cache (no lock file can be made) still serves the copy made earlier."""
    path = tmp_path / "sha256-x" / "net.pth"
    path.parent.mkdir()
    path.write_bytes(DATA)
    sha256 = hashlib.sha256(DATA).hexdigest()
    store.write_record(path, sha256=sha256, pinned={"sha256": sha256})
    file = store.CachedFile(path, sha256)
    made = derived.derived_copy(file, store.MAPPABLE, lambda tmp: tmp.write_bytes(b"copy") and {}, lock_timeout=1)
    assert made is not None and made[0].read_bytes() == b"copy"

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(FileLock, "acquire", read_only)
    assert derived.derived_copy(file, store.MAPPABLE, lambda tmp: None, lock_timeout=1) == made

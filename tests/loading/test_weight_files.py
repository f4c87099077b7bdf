"""Memory-mappable copies of legacy-format weight files in the cache (``loading.weight_files`` and the
store's derived copies): written on the first load, mapped on later ones, identical results, and
every way a copy can be stale, damaged, unwritable or not applicable falls back to the verified original."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from conftest import sha256_of
from torch import nn
from upstream_code import legacy_cuda_save

from dlwp_models import UnsafeFileError
from dlwp_models.loading import weight_files as _mappable
from dlwp_models.loading.checkpoints import load_state_dict_file
from dlwp_models.loading.weight_files import load_weight_file
from dlwp_models.weights import derived, store
from dlwp_models.weights.download import fetch_file
from dlwp_models.weights.manifest import FileSpec
from dlwp_models.weights.store import CachedFile

REPO_DIR = Path(__file__).resolve().parents[2]


def mappable_copy_path(path: Path) -> Path:
    return path.with_name(path.name + ".mmap.pt")


def record_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(8, 3, 3, 3, generator=g),
        "conv.bias": torch.randn(8, generator=g),
        "steps": torch.tensor(7),
    }


def saved(sd: dict, *, legacy: bool = True) -> bytes:
    buffer = io.BytesIO()
    torch.save(sd, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


@pytest.fixture
def cached(weight_server):
    """Serve bytes, fetch them into the test's cache like any pinned file; returns what was verified."""
    counter = iter(range(1000))

    def make(data: bytes) -> CachedFile:
        name = f"mappable-{next(counter)}-{sha256_of(data)[:8]}.pth"
        spec = FileSpec(name, (weight_server.serve(name, data),), sha256=sha256_of(data), size=len(data))
        return fetch_file(spec, progress=False)

    return make


@pytest.fixture
def loads(monkeypatch):
    """Every (path name, mmap) that load_weight_file reads, in order."""
    calls: list[tuple[str, bool | None]] = []

    def spy(path, map_location=None, *, mmap=None):
        calls.append((Path(path).name, mmap))
        return load_state_dict_file(path, map_location, mmap=mmap)

    monkeypatch.setattr(_mappable, "load_state_dict_file", spy)
    return calls


def assert_same(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_first_load_writes_a_copy_and_later_loads_map_only_the_copy(cached, loads):
    sd = state_dict()
    file = cached(saved(sd))
    path = file.path
    copy = mappable_copy_path(path)
    assert_same(load_weight_file(file, "cpu"), sd)
    assert copy.is_file() and record_path(copy).is_file()
    assert json.loads(record_path(copy).read_text())["locations"] == ["cpu"]
    loads.clear()
    for map_location in ("cpu", torch.device("cpu"), None):
        assert_same(load_weight_file(file, map_location), sd)
    assert loads == [(copy.name, True)] * 3  # the legacy original was not read again
    assert not list(path.parent.glob("*.tmp"))


def test_tensors_from_the_copy_are_private_to_the_caller(cached):
    sd = state_dict()
    file = cached(saved(sd))
    load_weight_file(file, "cpu")
    mapped = load_weight_file(file, "cpu")
    mapped["conv.weight"].add_(1.0)  # copy-on-write: the file is untouched
    assert_same(load_weight_file(file, "cpu"), sd)


@pytest.mark.parametrize("change", ["other source", "copy resized", "record garbled"])
def test_a_stale_copy_is_rebuilt_from_the_original(cached, loads, change):
    sd = state_dict()
    file = cached(saved(sd))
    path = file.path
    load_weight_file(file, "cpu")
    copy = mappable_copy_path(path)
    if change == "other source":
        record = json.loads(record_path(copy).read_text())
        record_path(copy).write_text(json.dumps({**record, "source_sha256": "0" * 64}))
    elif change == "copy resized":
        with open(copy, "ab") as fh:
            fh.write(b"\0")
    else:
        record_path(copy).write_text("{not json")
    loads.clear()
    assert_same(load_weight_file(file, "cpu"), sd)
    assert loads[0] == (path.name, None) and loads[-1] == (copy.name, True)
    assert_same(load_state_dict_file(copy, "cpu"), sd)  # the rebuilt copy is whole


def test_a_damaged_copy_with_a_matching_record_falls_back_to_the_original(cached, caplog):
    sd = state_dict()
    file = cached(saved(sd))
    path = file.path
    load_weight_file(file, "cpu")
    copy = mappable_copy_path(path)
    st = copy.stat()
    copy.write_bytes(b"\x00" * st.st_size)  # same size, same mtime: the record matches
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    with caplog.at_level(logging.WARNING, logger="dlwp_models.weights.store"):
        assert_same(load_weight_file(file, "cpu"), sd)
    assert "ignoring the mappable copy" in caplog.text
    assert not copy.exists()
    assert_same(load_weight_file(file, "cpu"), sd)  # and it is written again
    assert copy.is_file()


def test_a_file_saved_on_the_gpu(cached, loads):
    sd = {k: v for k, v in state_dict().items() if v.is_floating_point()}
    file = cached(legacy_cuda_save(sd))
    path = file.path
    copy = mappable_copy_path(path)
    assert_same(load_weight_file(file, "cpu"), sd)
    assert json.loads(record_path(copy).read_text())["locations"] == ["cuda:0"]
    loads.clear()
    assert_same(load_weight_file(file, "cpu"), sd)
    assert loads == [(copy.name, True)]
    # map_location=None means "where it was saved": only the original can say that
    loads.clear()
    if torch.cuda.is_available():
        assert load_weight_file(file, None)["conv.weight"].is_cuda
    else:
        with pytest.raises(UnsafeFileError, match="map_location"):
            load_weight_file(file, None)
    assert loads == [(path.name, None)]


def test_a_callable_map_location_reads_the_original(cached, loads):
    sd = state_dict()
    file = cached(saved(sd))
    path = file.path
    load_weight_file(file, "cpu")
    seen = []
    loads.clear()
    load_weight_file(file, lambda storage, location: seen.append(location) or storage)
    assert loads == [(path.name, None)] and seen and set(seen) == {"cpu"}


def test_zip_files_and_files_outside_the_cache_are_never_copied(cached, tmp_path, loads):
    sd = state_dict()
    zipped = cached(saved(sd, legacy=False))
    assert_same(load_weight_file(zipped, "cpu"), sd)
    assert not mappable_copy_path(zipped.path).exists()
    own = tmp_path / "my_checkpoint.pth"
    own.write_bytes(saved(sd))
    assert_same(load_weight_file(own, "cpu"), sd)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("my_")) == ["my_checkpoint.pth"]


@pytest.mark.parametrize(
    "failure",
    [
        OSError(28, "No space left on device"),
        # what torch's zip writer raises when a write fails part-way
        RuntimeError(
            "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
            "data/0: file write failed: No space left on device"
        ),
    ],
)
def test_a_copy_that_cannot_be_written_is_skipped(cached, monkeypatch, caplog, failure):
    sd = state_dict()
    file = cached(saved(sd))
    path = file.path

    def disk_full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise failure

    monkeypatch.setattr(_mappable.torch, "save", disk_full)
    with caplog.at_level(logging.WARNING, logger="dlwp_models.weights.store"):
        assert_same(load_weight_file(file, "cpu"), sd)
    assert "No space left on device" in caplog.text
    left = sorted(
        p.name for p in path.parent.iterdir() if p.name.startswith(path.name) and not p.name.endswith(".lock")
    )
    assert left == [path.name, record_path(path).name]


def test_refetching_a_damaged_original_removes_its_copy(cached, weight_server):
    data = saved(state_dict())
    file = cached(data)
    path = file.path
    load_weight_file(file, "cpu")
    copy = mappable_copy_path(path)
    assert copy.exists()
    path.write_bytes(data[:-10])  # damaged: the next fetch discards and refetches
    spec = FileSpec(path.name, (weight_server.url(path.name),), sha256=sha256_of(data), size=len(data))
    assert fetch_file(spec, progress=False).path == path
    assert path.read_bytes() == data
    assert not copy.exists() and not record_path(copy).exists()


def test_cyclegan_loads_through_the_copy_identically(weight_server, make_manifest):
    """The book's legacy-format generator file: a normal first load, then a mapped one, the same."""
    import hashlib

    from upstream_code import BookResNetGenerator

    torch.manual_seed(0)
    reference = BookResNetGenerator()
    sd = {k: v.clone() for k, v in reference.state_dict().items()}
    data = saved(sd)
    manifest = json.loads((REPO_DIR / "weights" / "manifest.json").read_text(encoding="utf-8"))
    entry = next(e for e in manifest["weights"] if e["name"] == "cyclegan.horse2zebra")
    entry["files"] = {
        "state_dict": {
            "filename": "horse2zebra-mappable.pth",
            "urls": [weight_server.serve("horse2zebra-mappable.pth", data)],
            "git_blob_sha1": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(),
        }
    }
    make_manifest([entry])
    first = torch.hub.load(str(REPO_DIR), "cyclegan", source="local", pretrained=True, progress=False)
    second = torch.hub.load(str(REPO_DIR), "cyclegan", source="local", pretrained=True, progress=False)
    for model in (first, second):
        assert_same(model.state_dict(), sd)
        assert all(type(p) is nn.Parameter and p.device.type == "cpu" for p in model.parameters())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(first(x), second(x))
    with torch.no_grad():
        next(second.parameters()).zero_()  # writable, and private to this model
    third = torch.hub.load(str(REPO_DIR), "cyclegan", source="local", pretrained=True, progress=False)
    assert_same(third.state_dict(), sd)


def test_a_copy_whose_file_cannot_be_created_is_skipped(cached, monkeypatch, caplog):
    import types

    sd = state_dict()
    file = cached(saved(sd))
    path = file.path
    monkeypatch.setattr(derived.uuid, "uuid4", lambda: types.SimpleNamespace(hex="fixed"))
    mappable_copy_path(path).with_name(mappable_copy_path(path).name + ".fixed.tmp").mkdir()  # unwritable
    with caplog.at_level(logging.WARNING, logger="dlwp_models.weights.store"):
        assert_same(load_weight_file(file, "cpu"), sd)
    assert "could not keep a memory-mappable copy" in caplog.text
    assert not mappable_copy_path(path).exists()


def test_a_cache_where_no_lock_can_be_made_still_loads(cached, monkeypatch, caplog):
    sd = state_dict()
    file = cached(saved(sd))
    path = file.path

    def read_only(target, timeout=None):
        raise PermissionError(13, "Permission denied", str(target) + ".lock")

    monkeypatch.setattr(derived, "file_lock", read_only)
    with caplog.at_level(logging.WARNING, logger="dlwp_models.weights.derived"):
        assert_same(load_weight_file(file, "cpu"), sd)
    assert "Permission denied" in caplog.text and not mappable_copy_path(path).exists()


def test_concurrent_first_loads_write_one_copy(cached, monkeypatch):
    import threading

    sd = state_dict()
    file = cached(saved(sd))
    writes = []
    real = _mappable._write_copy
    monkeypatch.setattr(_mappable, "_write_copy", lambda *a: writes.append(a) or real(*a))
    results, errors = [], []

    def load():
        try:
            results.append(load_weight_file(file, "cpu"))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 4 and len(writes) == 1
    for result in results:
        assert_same(result, sd)


def test_a_file_without_tensors_is_mapped_too(cached, loads):
    file = cached(saved({"epoch": 3, "note": "no tensors"}))
    path = file.path
    assert load_weight_file(file, None) == {"epoch": 3, "note": "no tensors"}
    loads.clear()
    assert load_weight_file(file, None) == {"epoch": 3, "note": "no tensors"}
    assert loads == [(mappable_copy_path(path).name, True)]


def test_leftovers_of_a_writer_that_died_are_removed(cached):
    sd = state_dict()
    file = cached(saved(sd))
    path = file.path
    copy = mappable_copy_path(path)
    for leftover in (f"{copy.name}.dead1.tmp", f"{copy.name}.dead2.verified-tmp"):
        (path.parent / leftover).write_bytes(b"half a file")
    assert_same(load_weight_file(file, "cpu"), sd)
    assert not list(path.parent.glob(f"{copy.name}.*tmp"))


def test_an_original_replaced_while_it_is_copied_gets_no_copy(cached, monkeypatch):
    sd = state_dict()
    file = cached(saved(sd))
    path = file.path
    real = _mappable.load_state_dict_file

    def load_then_touch(p, map_location=None, *, mmap=None):
        result = real(p, map_location, mmap=mmap)
        if Path(p) == path:
            os.utime(path, ns=(0, 0))  # a re-fetch replaced it meanwhile
        return result

    monkeypatch.setattr(_mappable, "load_state_dict_file", load_then_touch)
    load_weight_file(file, "cpu")
    assert not mappable_copy_path(path).exists()


def test_a_warm_load_reads_each_cache_record_once(cached, monkeypatch):
    """fetch → load: the original's record is read once (by the fetcher, which returns the sha256
    it vouches for) and the copy's once; nobody re-derives whether the file was verified."""
    from dlwp_models.weights.download import fetch_file

    data = saved(state_dict())
    file = cached(data)
    load_weight_file(file, "cpu")  # the first load writes the copy
    spec = FileSpec(file.name, ("https://127.0.0.1:9/unused",), sha256=sha256_of(data), size=len(data))
    reads = []
    real = store._read_record
    monkeypatch.setattr(store, "_read_record", lambda path: reads.append(path.name) or real(path))
    again = fetch_file(spec, progress=False)
    assert_same(load_weight_file(again, "cpu"), state_dict())
    assert sorted(reads) == sorted([file.name, mappable_copy_path(file.path).name])

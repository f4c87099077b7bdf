"""A manifest entry whose file lies beside the manifest (no URL, no parts, a full sha256): a
fine-tuning run writes ``runs/NAME/manifest.json`` and its weights file, and DLWP_MANIFEST makes
them loadable. The file is copied into the cache and verified like a download, offline too; the
cached copy is what later loads use."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import pytest
import torch
from conftest import sha256_of

from dlwp_models import DownloadError, ManifestError, get_weights
from dlwp_models.weights import download, store
from dlwp_models.weights.manifest import parse_manifest, read_manifest


def state_dict_bytes() -> tuple[dict, bytes]:
    state = {"fc.weight": torch.arange(6.0).reshape(2, 3), "fc.bias": torch.tensor([0.5, -0.5])}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return state, buffer.getvalue()


def write_run(folder: Path, data: bytes, filename: str = "resnet50-ft.pth", **pins) -> Path:
    """A fine-tuning run's output: ``manifest.json`` naming ``filename`` (no URL), and the file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / filename).write_bytes(data)
    file = {"filename": filename, **(pins or {"sha256": sha256_of(data), "size": len(data)})}
    entry = {
        "name": "resnet50.ft",
        "model": "resnet50",
        "default": False,
        "format": "torchvision",
        "files": {"state_dict": file},
    }
    path = folder / "manifest.json"
    path.write_text(json.dumps({"schema_version": 1, "weights": [entry]}), encoding="utf-8")
    return path


@pytest.fixture
def run(tmp_path):
    """The run folder's manifest, the file spec it gives, and the file's bytes."""
    state, data = state_dict_bytes()
    manifest = write_run(tmp_path / "runs" / "ft", data)
    (ws,) = read_manifest(manifest)
    return manifest, ws.files["state_dict"], data, state


def cache_folder(hub_home: Path, data: bytes) -> Path:
    return hub_home / "hub" / "checkpoints" / "dlwp" / f"sha256-{sha256_of(data)}"


def test_the_parser_puts_a_file_without_urls_beside_its_manifest(run):
    manifest, spec, data, _ = run
    assert spec.beside == manifest.parent / "resnet50-ft.pth" and spec.beside.is_absolute()
    assert spec.urls == () and spec.parts == ()
    assert "beside" not in spec.integrity()  # not a pin: the cache record does not name the folder


def test_the_spec_is_relative_to_the_manifest_folder_not_the_working_folder(tmp_path, monkeypatch):
    _, data = state_dict_bytes()
    write_run(tmp_path / "runs" / "ft", data)
    monkeypatch.chdir(tmp_path)
    (ws,) = read_manifest("runs/ft/manifest.json")
    assert ws.files["state_dict"].beside == tmp_path / "runs" / "ft" / "resnet50-ft.pth"


def test_a_spec_with_a_url_is_not_beside_its_manifest():
    entry = {
        "name": "t.v1",
        "model": "t",
        "default": True,
        "format": "torchvision",
        "files": {"state_dict": {"filename": "n.pth", "urls": ["https://a.test/n.pth"], "sha256": "ab" * 32}},
    }
    (ws,) = parse_manifest({"schema_version": 1, "weights": [entry]}, "/some/where/m.json")
    assert ws.files["state_dict"].beside is None


def test_fetch_file_copies_the_file_into_the_cache_and_verifies_it(run, hub_home):
    _, spec, data, state = run
    cached = download.fetch_file(spec, progress=False)
    assert cached.path == cache_folder(hub_home, data) / "resnet50-ft.pth"
    assert cached.path.read_bytes() == data and cached.sha256 == sha256_of(data)
    assert cached.path != spec.beside and spec.beside.read_bytes() == data  # copied, not moved
    record = json.loads(store.record_path(cached.path).read_text(encoding="utf-8"))
    assert record["sha256"] == sha256_of(data) and record["pinned"] == {"sha256": sha256_of(data), "size": len(data)}
    loaded = torch.load(cached.path, weights_only=True)
    assert torch.equal(loaded["fc.weight"], state["fc.weight"]) and torch.equal(loaded["fc.bias"], state["fc.bias"])
    assert list(cached.path.parent.glob("*.partial")) == []


def test_a_second_fetch_uses_the_cached_copy_not_the_file_beside_the_manifest(run, monkeypatch):
    _, spec, data, _ = run
    first = download.fetch_file(spec, progress=False)
    spec.beside.unlink()  # the run folder was cleaned up: this machine has the file already

    def no_copy(*args, **kwargs):
        raise AssertionError("copied again")

    monkeypatch.setattr(download.local, "copy_checked", no_copy)
    again = download.fetch_file(spec, progress=False)
    assert again == first and again.path.read_bytes() == data


def test_a_changed_file_beside_the_manifest_is_refused_and_nothing_is_cached(run, hub_home):
    _, spec, data, _ = run
    tampered = bytes([data[0] ^ 0xFF]) + data[1:]  # same size, other bytes
    spec.beside.write_bytes(tampered)
    with pytest.raises(DownloadError) as info:
        download.fetch_file(spec, progress=False)
    message = str(info.value)
    assert (
        f"  - beside the manifest: {spec.beside}: sha256 mismatch: expected {sha256_of(data)}, "
        f"got {sha256_of(tampered)}\n" in message
    )
    assert "changed or removed" in message and "re-run the command that wrote them" in message
    assert "Check the network" not in message
    folder = cache_folder(hub_home, data)
    assert not (folder / "resnet50-ft.pth").exists()
    assert not store.record_path(folder / "resnet50-ft.pth").exists()
    assert list(folder.glob("*.partial")) == []
    assert store.verified(spec) is None


def test_a_file_of_another_size_is_refused_by_its_size_pin(run):
    _, spec, data, _ = run
    spec.beside.write_bytes(data + b"x")
    with pytest.raises(DownloadError, match=f"size mismatch: expected {len(data)} bytes, got {len(data) + 1}"):
        download.fetch_file(spec, progress=False)


def test_a_missing_file_beside_the_manifest_is_named(run):
    _, spec, _, _ = run
    spec.beside.unlink()
    with pytest.raises(DownloadError) as info:
        download.fetch_file(spec, progress=False)
    assert str(info.value).startswith(
        f"could not fetch resnet50-ft.pth; every source failed:\n  - beside the manifest: {spec.beside}: missing\n"
    )


@pytest.mark.parametrize(
    "pins",
    [{"sha256_prefix": "0123abcd"}, {"git_blob_sha1": "ab" * 20}, {"size": 3}],
    ids=["sha256_prefix", "git_blob_sha1", "size only"],
)
def test_a_file_without_urls_needs_a_full_sha256(tmp_path, pins):
    manifest = write_run(tmp_path / "run", b"abc", **pins)
    with pytest.raises(ManifestError) as info:
        read_manifest(manifest)
    message = str(info.value)
    assert "weight set 'resnet50.ft'.files.state_dict.urls" in message
    assert "a file needs at least one URL, a list of parts, or a full sha256 with the file beside the manifest" in (
        message
    )


def test_offline_still_copies_a_file_beside_the_manifest(run, monkeypatch):
    _, spec, data, _ = run
    monkeypatch.setenv("DLWP_OFFLINE", "1")
    assert download.fetch_file(spec, progress=False).path.read_bytes() == data


def test_offline_with_the_file_missing_says_why_rather_than_blaming_offline(run, monkeypatch):
    _, spec, _, _ = run
    monkeypatch.setenv("DLWP_OFFLINE", "1")
    spec.beside.unlink()
    with pytest.raises(DownloadError) as info:
        download.fetch_file(spec, progress=False)
    assert f"beside the manifest: {spec.beside}: missing" in str(info.value)
    assert "DLWP_OFFLINE=1 forbids" not in str(info.value)


def test_a_full_disk_while_copying_is_a_cache_write_error(run, monkeypatch):
    _, spec, _, _ = run
    real = download._cache_write

    def disk_full(action, spec, doing):
        if doing == "write the copy of the file beside the manifest":
            raise store.disk_error(OSError(28, "No space left on device"), store.cached_path(spec), doing)
        return real(action, spec, doing)

    monkeypatch.setattr(download, "_cache_write", disk_full)
    with pytest.raises(store.CacheWriteError, match="disk holding .* is full"):
        download.fetch_file(spec, progress=False)
    assert list(store.cached_path(spec).parent.glob("*.partial")) == []


def test_dlwp_manifest_makes_the_run_loadable_by_name(tmp_path, monkeypatch, hub_home):
    state, data = state_dict_bytes()
    write_run(tmp_path / "runs" / "ft", data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLWP_MANIFEST", "runs/ft/manifest.json")  # relative, as a user would write it
    ws = get_weights("resnet50.ft")
    assert ws.source == "runs/ft/manifest.json"
    monkeypatch.chdir(hub_home)  # the file stays where the manifest is, whatever the working folder
    files = download.fetch_files(ws, progress=False)
    assert list(files) == ["state_dict"]
    assert files["state_dict"].path == cache_folder(hub_home, data) / "resnet50-ft.pth"
    assert files["state_dict"].path.read_bytes() == data
    loaded = torch.load(files["state_dict"].path, weights_only=True)
    assert torch.equal(loaded["fc.weight"], state["fc.weight"])


def test_a_weight_set_with_a_file_beside_its_manifest_pickles(run):
    manifest, spec, _, _ = run
    (ws,) = read_manifest(manifest)
    copy = pickle.loads(pickle.dumps(ws))
    assert copy.files["state_dict"].beside == spec.beside and copy.files["state_dict"] == spec

"""The cache keyed by what pins each file: two manifests that pin one file name differently keep
both files side by side, and a cache written by the layout before pins is used without a download."""

from __future__ import annotations

import json
import os

import pytest
from conftest import sha256_of

import dlwp_models
from dlwp_models import OfflineError
from dlwp_models.weights import store
from dlwp_models.weights.manifest import FileSpec


def entry(name: str, file_spec: dict) -> dict:
    return {
        "name": name,
        "model": "teamnet",
        "default": name.endswith(".v1"),
        "format": "torchvision",
        "files": {"state_dict": file_spec},
    }


def test_one_file_name_pinned_twice_keeps_both_files(weight_server, tmp_path, monkeypatch, hub_home):
    ours, theirs = os.urandom(5000), os.urandom(6000)
    name = "resnet50-mine.pth"  # the same name, republished with other bytes
    specs = []
    for i, data in enumerate((ours, theirs)):
        served = weight_server.serve(f"team{i}-{name}", data)
        specs.append({"filename": name, "urls": [served], "sha256": sha256_of(data), "size": len(data)})
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_text(json.dumps({"schema_version": 1, "weights": [entry("teamnet.v1", specs[0])]}))
    second.write_text(json.dumps({"schema_version": 1, "weights": [entry("teamnet.v1", specs[1])]}))

    monkeypatch.setenv("DLWP_MANIFEST", str(first))
    path_ours = dlwp_models.fetch("teamnet.v1", progress=False)["state_dict"]
    monkeypatch.setenv("DLWP_MANIFEST", str(second))
    path_theirs = dlwp_models.fetch("teamnet.v1", progress=False)["state_dict"]
    assert path_ours != path_theirs and path_ours.name == path_theirs.name == name

    monkeypatch.setenv("DLWP_OFFLINE", "1")  # neither evicted the other: both load offline
    for manifest, data in ((first, ours), (second, theirs), (first, ours)):
        monkeypatch.setenv("DLWP_MANIFEST", str(manifest))
        assert dlwp_models.fetch("teamnet.v1", progress=False)["state_dict"].read_bytes() == data
    assert len(weight_server.hits_for(f"team0-{name}")) == len(weight_server.hits_for(f"team1-{name}")) == 1


def write_old_layout(hub_home, spec: FileSpec, data: bytes, *, copy: bytes | None = None):
    """A file cached by the layout before pins: checkpoints/dlwp/<filename> with its record."""
    folder = hub_home / "hub" / "checkpoints" / "dlwp"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / spec.filename
    path.write_bytes(data)
    st = path.stat()
    record = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_of(data), "pinned": spec.integrity()}
    (folder / f"{spec.filename}.verified").write_text(json.dumps(record))
    if copy is not None:
        mapped = folder / f"{spec.filename}.mmap.pt"
        mapped.write_bytes(copy)
        st = mapped.stat()
        (folder / f"{mapped.name}.verified").write_text(
            json.dumps(
                {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "source_sha256": sha256_of(data), "locations": ["cpu"]}
            )
        )
    return path


def test_a_cache_of_the_old_layout_is_moved_once_without_a_download(weight_server, hub_home, monkeypatch):
    data = os.urandom(4096)
    spec = FileSpec(
        "old-layout.pth", (weight_server.url("old-layout-not-served.pth"),), sha256=sha256_of(data), size=len(data)
    )
    old = write_old_layout(hub_home, spec, data, copy=b"a mappable copy")
    monkeypatch.setenv("DLWP_OFFLINE", "1")  # no network could be used even if it were tried
    cached = store_fetch(spec)
    assert cached.path == store.cached_path(spec) and cached.path.read_bytes() == data
    assert cached.sha256 == sha256_of(data)
    assert not old.exists() and not old.with_name(old.name + ".verified").exists()
    moved_copy = cached.path.with_name(cached.path.name + ".mmap.pt")
    assert moved_copy.read_bytes() == b"a mappable copy"
    assert json.loads(moved_copy.with_name(moved_copy.name + ".verified").read_text())["locations"] == ["cpu"]
    assert store.verified(spec) == cached  # its record moved with it and is still current
    assert weight_server.hits_for("old-layout-not-served.pth") == []


def test_an_old_layout_file_verified_against_other_pins_stays_put(hub_home, monkeypatch):
    data, other = os.urandom(1000), os.urandom(1000)
    theirs = FileSpec("shared-name.pth", ("https://127.0.0.1:9/x",), sha256=sha256_of(other))
    old = write_old_layout(hub_home, theirs, other)
    ours = FileSpec("shared-name.pth", ("https://127.0.0.1:9/x",), sha256=sha256_of(data))
    monkeypatch.setenv("DLWP_OFFLINE", "1")
    with pytest.raises(OfflineError, match=str(store.cached_path(ours).parent)):
        store_fetch(ours)  # the error names where to put the file by hand
    assert old.read_bytes() == other  # the other manifest's file is left alone


def store_fetch(spec: FileSpec):
    from dlwp_models.weights.download import fetch_file

    return fetch_file(spec, progress=False)


def test_pins_name_the_folder():
    assert store.pin_key(FileSpec("a.pth", ("u",), sha256="ab" * 32)) == "sha256-" + "ab" * 32
    assert store.pin_key(FileSpec("a.pth", ("u",), git_blob_sha1="cd" * 20)) == "gitblob-" + "cd" * 20
    assert store.pin_key(FileSpec("a.pth", ("u",), sha256_prefix="0123abcd")) == "sha256prefix-0123abcd"
    part = FileSpec("p.pth", ("u",), sha256="ef" * 32)
    joined = store.pin_key(FileSpec("a.pth", parts=(part,)))
    assert joined.startswith("parts-") and joined != store.pin_key(FileSpec("a.pth", parts=(part, part)))

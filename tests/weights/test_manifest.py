"""Manifest validation, layering through DLWP_MANIFEST, and weight-set look-up."""

from __future__ import annotations

import copy
import json

import pytest

from dlwp_models import ManifestError, WeightsNotFoundError, get_weights, list_weights
from dlwp_models.weights.manifest import bundled_manifest_path, parse_manifest, read_manifest

GOOD_FILE = {
    "filename": "net-0123abcd.pth",
    "urls": ["https://example.invalid/net-0123abcd.pth"],
    "sha256_prefix": "0123abcd",
}


def manifest(*entries: dict) -> dict:
    return {"schema_version": 1, "weights": list(entries)}


def good_entry(**changes) -> dict:
    entry = {
        "name": "testnet.v1",
        "model": "testnet",
        "default": True,
        "format": "torchvision",
        "files": {"state_dict": copy.deepcopy(GOOD_FILE)},
        "transforms": {},
        "meta": {},
    }
    entry.update(changes)
    return entry


def test_bundled_manifest_is_valid_and_every_model_has_one_default():
    sets = read_manifest(bundled_manifest_path())
    models = {ws.model for ws in sets}
    for model in models:
        assert sum(ws.default for ws in sets if ws.model == model) == 1, model
    for ws in sets:
        for spec in ws.files.values():
            assert spec.has_own_hash or (spec.parts and all(p.strongly_pinned for p in spec.parts)), ws.name


@pytest.mark.parametrize("filename", ["../evil.pth", "a/b.pth", "a\\\\b.pth", "..", ".hidden", ""])
def test_file_name_that_is_not_a_plain_base_name_is_refused(filename):
    bad = good_entry(files={"state_dict": {**GOOD_FILE, "filename": filename}})
    with pytest.raises(ManifestError) as info:
        parse_manifest(manifest(bad), "m.json")
    assert "'testnet.v1'" in str(info.value) and "files.state_dict.filename" in str(info.value)


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("sha256", "abc", "files.state_dict.sha256"),
        ("sha256_prefix", "0123", "files.state_dict.sha256_prefix"),
        ("git_blob_sha1", "z" * 40, "files.state_dict.git_blob_sha1"),
        ("size", -1, "files.state_dict.size"),
        ("urls", "https://x", "files.state_dict.urls"),
        ("colour", "red", "files.state_dict.colour"),
    ],
)
def test_bad_file_field_names_entry_and_field(field, value, fragment):
    bad = good_entry(files={"state_dict": {**GOOD_FILE, field: value}})
    with pytest.raises(ManifestError, match=fragment.replace(".", r"\.")) as info:
        parse_manifest(manifest(bad), "m.json")
    assert "testnet.v1" in str(info.value)


def test_file_without_integrity_is_refused():
    spec = {k: v for k, v in GOOD_FILE.items() if k != "sha256_prefix"}
    with pytest.raises(ManifestError, match="no integrity field"):
        parse_manifest(manifest(good_entry(files={"state_dict": spec})), "m.json")


@pytest.mark.parametrize(
    "field, value", [("format", "onnx"), ("default", "yes"), ("model", "9net"), ("name", "othernet.v1"), ("files", {})]
)
def test_bad_entry_field_is_named(field, value):
    with pytest.raises(ManifestError, match=rf"\.{field}\b"):
        parse_manifest(manifest(good_entry(**{field: value})), "m.json")


def test_wrong_schema_version_is_refused():
    with pytest.raises(ManifestError, match="schema_version"):
        parse_manifest({"schema_version": 2, "weights": []}, "m.json")


def test_layered_manifest_replaces_same_name_and_adds(tmp_path, monkeypatch):
    extra = tmp_path / "extra.json"
    replaced = good_entry(name="cyclegan.horse2zebra", model="cyclegan", format="cyclegan", meta={"note": "mine"})
    added = good_entry(name="cyclegan.mine", model="cyclegan", default=False, format="cyclegan")
    extra.write_text(json.dumps(manifest(replaced, added)))
    monkeypatch.setenv("DLWP_MANIFEST", str(extra))
    assert get_weights("DEFAULT", "cyclegan").meta["note"] == "mine"
    assert get_weights("MINE", model="cyclegan").name == "cyclegan.mine"
    assert [ws.name for ws in list_weights("cyclegan")] == ["cyclegan.horse2zebra", "cyclegan.mine"]


def test_two_defaults_for_one_model_across_manifests_is_an_error(tmp_path, monkeypatch):
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps(manifest(good_entry(name="cyclegan.other", model="cyclegan", format="cyclegan"))))
    monkeypatch.setenv("DLWP_MANIFEST", str(extra))
    with pytest.raises(ManifestError, match="exactly one weight set"):
        list_weights()


def test_missing_layered_manifest_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DLWP_MANIFEST", str(tmp_path / "nope.json"))
    with pytest.raises(ManifestError, match="cannot read manifest"):
        list_weights()


def test_get_weights_accepts_full_name_tag_default_and_any_case(tmp_path, monkeypatch):
    assert get_weights("CycleGAN.Horse2Zebra").name == "cyclegan.horse2zebra"
    assert get_weights("horse2zebra", model="cyclegan").name == "cyclegan.horse2zebra"
    assert get_weights("default", model="CYCLEGAN").name == "cyclegan.horse2zebra"
    assert get_weights("cyclegan.horse2zebra").tag == "HORSE2ZEBRA"


def test_unknown_tag_lists_the_valid_ones():
    with pytest.raises(WeightsNotFoundError) as info:
        get_weights("zebra2horse", model="cyclegan")
    assert "DEFAULT" in str(info.value) and "HORSE2ZEBRA" in str(info.value)
    assert isinstance(info.value, LookupError)


def test_weights_of_another_model_are_refused():
    with pytest.raises(ValueError, match="belong to model 'cyclegan'"):
        get_weights("cyclegan.horse2zebra", model="neuraltalk2")


def test_readme_lists_every_bundled_weight_set():
    readme = (bundled_manifest_path().parents[1] / "README.md").read_text(encoding="utf-8")
    missing = [ws.name for ws in read_manifest(bundled_manifest_path()) if f"`{ws.name}`" not in readme]
    assert missing == [], f"README.md's weight-set table lacks {missing}"

"""The classifier entries of the bundled manifest: schema, integrity, and agreement with
torchvision's own weight enums (so drift between the two is caught)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models import get_model_weights

import hubconf
from dlwp_models import WeightSet, list_weights
from dlwp_models.loading.modules import build_on_meta
from dlwp_models.models.classifiers import CLASSIFIERS, categories_of
from dlwp_models.weights.manifest import bundled_manifest_path, read_manifest

REPO_DIR = Path(__file__).resolve().parents[2]
BUNDLED_SETS = [ws for ws in read_manifest(bundled_manifest_path()) if ws.format == "torchvision"]
BY_NAME = {ws.name: ws for ws in BUNDLED_SETS}
MODELS = sorted({ws.model for ws in BUNDLED_SETS})
# the book's family (design.md §4), written out here rather than read from the code under test
BOOK_FAMILY = {
    "alexnet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "squeezenet1_0",
    "squeezenet1_1",
    "inception_v3",
}
# design.md §3: full hashes (and sizes) pinned for these
PINNED = {
    "resnet101.imagenet1k_v1": ("63fe2227b86e8f1f2063f43a75c84d195911b6a0eace650907dd3dc62dd49a0a", None),
    "resnet101.imagenet1k_v2": ("cd907fc2a0de2292b2ba2b27d2216bc672d84632d1cf20058d01c0c03b5e020e", None),
    "alexnet.imagenet1k_v1": ("7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02", 244408911),
    "resnet18.imagenet1k_v1": ("f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec", 46830571),
    "resnet50.imagenet1k_v1": ("0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a", 102530333),
    "resnet50.imagenet1k_v2": ("11ad3fa62ca79e40addfd354a8ec4b7c75143b3038b8d2a807fbc68deab379ca", 102540417),
}
META_KEYS = {
    "categories",
    "acc@1",
    "acc@5",
    "num_params",
    "gflops",
    "file_size_mb",
    "min_size",
    "license",
    "provenance",
    "notes",
    "torchvision_weights",
}


def enum_of(ws: WeightSet):
    return torchvision.models.get_weight(ws.meta["torchvision_weights"])


def test_the_books_family_and_nothing_else_has_torchvision_weights():
    assert set(MODELS) == BOOK_FAMILY
    assert set(CLASSIFIERS) == BOOK_FAMILY


@pytest.mark.parametrize("model", sorted(BOOK_FAMILY))
def test_every_classifier_has_exactly_one_default_the_books_v1(model):
    sets = [ws for ws in BUNDLED_SETS if ws.model == model]
    defaults = [ws.name for ws in sets if ws.default]
    assert defaults == [f"{model}.imagenet1k_v1"]


@pytest.mark.parametrize("model", sorted(BOOK_FAMILY))
def test_weight_sets_are_torchvisions_v1_and_v2_where_published(model):
    published = {w.name for w in get_model_weights(model) if w.name in ("IMAGENET1K_V1", "IMAGENET1K_V2")}
    assert {ws.tag for ws in BUNDLED_SETS if ws.model == model} == published
    assert "IMAGENET1K_V1" in published


@pytest.mark.parametrize("ws", BUNDLED_SETS, ids=lambda ws: ws.name)
def test_file_is_torchvisions_url_pinned_by_hash(ws):
    theirs = enum_of(ws)
    assert str(theirs).split(".")[1] == ws.tag
    assert list(ws.files) == ["state_dict"]
    spec = ws.files["state_dict"]
    assert spec.urls[-1] == theirs.url  # a release mirror may come first, upstream stays last
    assert all(url.startswith("https://") for url in spec.urls)
    assert spec.filename == theirs.url.rsplit("/", 1)[1]
    tag = re.search(r"-([0-9a-f]{8})\.pth\Z", spec.filename)
    assert tag, f"{spec.filename} does not end in -<8 hex>.pth"
    if ws.name in PINNED:
        sha256, size = PINNED[ws.name]
        assert spec.sha256 == sha256 and spec.size == size
    else:
        assert spec.sha256 is None and spec.sha256_prefix == tag.group(1)
    assert (spec.sha256 or spec.sha256_prefix).startswith(tag.group(1))
    if spec.size is not None:
        assert spec.size / 2**20 == pytest.approx(theirs.meta["_file_size"], abs=1e-3)


@pytest.mark.parametrize("ws", BUNDLED_SETS, ids=lambda ws: ws.name)
def test_transforms_and_meta_agree_with_torchvision(ws):
    theirs = enum_of(ws)
    preset = theirs.transforms()
    assert dict(ws.transforms) == {
        "resize": preset.resize_size[0],
        "crop": preset.crop_size[0],
        "interpolation": preset.interpolation.value,
        "mean": preset.mean,
        "std": preset.std,
    }
    metrics = theirs.meta["_metrics"]["ImageNet-1K"]
    assert set(ws.meta) == META_KEYS
    assert ws.meta["categories"] == "imagenet1k"
    assert (ws.meta["acc@1"], ws.meta["acc@5"]) == (metrics["acc@1"], metrics["acc@5"])
    assert ws.meta["num_params"] == theirs.meta["num_params"]
    assert ws.meta["gflops"] == theirs.meta["_ops"]
    assert ws.meta["file_size_mb"] == theirs.meta["_file_size"]
    assert ws.meta["min_size"] == list(theirs.meta["min_size"])
    assert ws.meta["provenance"] == theirs.meta["recipe"]
    assert ws.meta["license"].startswith("BSD-3-Clause")


@pytest.mark.parametrize("ws", BUNDLED_SETS, ids=lambda ws: ws.name)
def test_categories_fit_the_classifier_width_and_parameter_count(ws):
    categories = categories_of(ws)
    assert categories == list(enum_of(ws).meta["categories"]) and len(categories) == 1000
    assert all(isinstance(label, str) and label for label in categories)
    kwargs = {"init_weights": False} if ws.model.startswith("vgg") or ws.model == "inception_v3" else {}
    net = build_on_meta(lambda: getattr(torchvision.models, ws.model)(weights=None, **kwargs)).eval()
    crop = ws.transforms["crop"]
    assert net(torch.empty(1, 3, crop, crop, device="meta")).shape == (1, len(categories))
    assert sum(p.numel() for p in net.parameters()) == ws.meta["num_params"]


@pytest.mark.parametrize("model", sorted(BOOK_FAMILY))
def test_entrypoint_docstring_lists_its_weight_sets_with_accuracy(model):
    entry = getattr(hubconf, model)
    assert entry.__name__ == model and entry.__module__ == "dlwp_models.hub"
    doc = entry.__doc__
    for ws in (w for w in BUNDLED_SETS if w.model == model):
        line = next(line for line in doc.splitlines() if line.strip().startswith(ws.tag))
        assert f"acc@1 {ws.meta['acc@1']:.3f}" in line and f"acc@5 {ws.meta['acc@5']:.3f}" in line
        assert ("(default)" in line) == ws.default
    for word in ("pretrained", "weights", "progress", "map_location", "Example", f'"{model}"'):
        assert word in doc


def test_importing_the_classifiers_does_not_import_torchvision():
    code = (
        "import sys, hubconf as c; c.resnet101.__doc__; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_DIR, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_bundled_manifest_keeps_every_entry_once():
    names = [entry["name"] for entry in json.loads(bundled_manifest_path().read_text())["weights"]]
    assert len(names) == len(set(names))
    assert {ws.name for ws in list_weights() if ws.format == "torchvision"} == set(BY_NAME)

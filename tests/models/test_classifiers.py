"""The ImageNet classifiers through PyTorch Hub: every entrypoint with and without weights (files
generated in torchvision's upstream formats with random values, served from 127.0.0.1), logits and
percentages against plain torchvision and the book's pipeline, the carried transforms and labels,
argument contradictions, and ``predict``'s result type and bounds."""

from __future__ import annotations

import copy
import hashlib
import json
import mmap
import pickle
import re
import subprocess
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from random_weights import randomise_batchnorm
from torch import nn
from torchvision import transforms as T

from dlwp_models import IncompatibleWeightsError, Prediction, WeightsNotFoundError, list_weights
from dlwp_models.inputs.transforms import ClassifierTransform
from dlwp_models.models.classifiers import CLASSIFIERS
from dlwp_models.weights.manifest import bundled_manifest_path

REPO_DIR = Path(__file__).resolve().parents[2]
BUNDLED = {entry["name"]: entry for entry in json.loads(bundled_manifest_path().read_text())["weights"]}
# the classifier models, from the registry (the bundled manifest's torchvision-format entries)
MODELS = sorted({ws.model for ws in list_weights() if ws.format == "torchvision"})
DEFAULT_SET = {ws.model: ws.name for ws in list_weights() if ws.format == "torchvision" and ws.default}
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# what torchvision's own builders set when they load ImageNet weights (read from its source)
TORCHVISION_WEIGHT_KWARGS = {
    **{name: {"init_weights": False} for name in MODELS if name.startswith("vgg")},
    "inception_v3": {"transform_input": True, "aux_logits": True, "init_weights": False},
}
OLD_DENSENET_KEY = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.")


def hub_load(name: str, **kwargs) -> nn.Module:
    return torch.hub.load(str(REPO_DIR), name, source="local", **kwargs)


# --------------------------------------------------------------------------- generated weight files


def generate_state_dict(name: str, seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """A torchvision state dict of ``name`` with random values everywhere, batch-norm statistics
    included (so a buffer that is not loaded shows)."""
    torch.manual_seed(seed)
    kwargs = {"init_weights": True} if name == "inception_v3" else {}
    net = getattr(torchvision.models, name)(weights=None, **kwargs)
    randomise_batchnorm(net, batches_tracked=True)
    return net.state_dict()


def to_old_densenet_layout(state_dict: dict) -> OrderedDict[str, torch.Tensor]:
    """What torchvision's real DenseNet files hold: pre-0.4 key names (``norm.1`` for ``norm1``)
    and no ``num_batches_tracked``."""
    return OrderedDict(
        (OLD_DENSENET_KEY.sub(r"\1.\2.", key), value)
        for key, value in state_dict.items()
        if not key.endswith("num_batches_tracked")
    )


def as_loaded(name: str, state_dict: dict) -> OrderedDict[str, torch.Tensor]:
    """What a model holds after loading the upstream file: DenseNet's files have no batch
    counters, which become 0 (as torch fills them for pre-0.4.1 files)."""
    if not name.startswith("densenet"):
        return OrderedDict(state_dict)
    return OrderedDict(
        (key, torch.zeros_like(value) if key.endswith("num_batches_tracked") else value)
        for key, value in state_dict.items()
    )


def write_upstream_file(name: str, state_dict: dict, path: Path) -> None:
    """Save like the published file: DenseNet's 2017 files are legacy (non-zip) pickles with old
    key names; the others are current torch.save files."""
    if name.startswith("densenet"):
        torch.save(to_old_densenet_layout(state_dict), path, _use_new_zipfile_serialization=False)
    else:
        torch.save(state_dict, path)


@pytest.fixture
def serve_file(weight_server, tmp_path) -> Callable[[Path], dict]:
    """Serve a file from disk (memory-mapped, so a 550 MB VGG file is not copied into memory) and
    return its spec; afterwards stop serving it and delete it."""
    served: list[tuple[Path, object, mmap.mmap, memoryview]] = []

    def serve(path: Path) -> dict:
        handle = open(path, "rb")
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mapped)
        served.append((path, handle, mapped, view))
        url = weight_server.serve(path.name, view)
        return {"filename": path.name, "urls": [url], "sha256": hashlib.sha256(view).hexdigest(), "size": len(view)}

    yield serve
    for path, handle, mapped, view in served:
        weight_server.files.pop(path.name, None)
        try:
            view.release()
            mapped.close()
        except BufferError:  # a server thread still holds a slice; unmapped when it lets go
            pass
        handle.close()
        path.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def drop_downloads(hub_home):
    """The generated files add up to gigabytes: do not leave the downloaded copies behind."""
    yield
    for path in (hub_home / "hub" / "checkpoints").rglob("*"):
        if path.is_file():
            path.unlink()


@pytest.fixture
def serve_weights(serve_file, make_manifest, tmp_path) -> Callable[..., dict]:
    """Generate weights for a bundled weight set, write them in its upstream format, serve them and
    layer a manifest that copies the bundled entry with only its file replaced. Returns the
    generated (torchvision-layout) state dict."""
    entries: list[dict] = []

    def serve(set_name: str, state_dict: dict | None = None, *, writer=write_upstream_file) -> dict:
        entry = copy.deepcopy(BUNDLED[set_name])
        model = entry["model"]
        if state_dict is None:
            state_dict = generate_state_dict(model)
        path = tmp_path / entry["files"]["state_dict"]["filename"]
        writer(model, state_dict, path)
        entry["files"] = {"state_dict": serve_file(path)}
        entries.append(entry)
        make_manifest(entries)
        return state_dict

    return serve


@pytest.fixture
def offline(monkeypatch):
    """For tests that must fail before any download: a fetch would stop at once, not try the net."""
    monkeypatch.setenv("DLWP_OFFLINE", "1")


def photo(width: int = 400, height: int = 300, seed: int = 0) -> Image.Image:
    """A deterministic picture with structure (gradients) and texture (noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 200
    noise = rng.normal(0, 25, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def book_pipeline(resize: int = 256, crop: int = 224) -> T.Compose:
    """The book's preprocessing (chapter 2), with the crop and resize of the weight set."""
    return T.Compose(
        [T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    )


def reference_model(name: str, state_dict: dict, **kwargs) -> nn.Module:
    """Plain torchvision, built as its builder builds for ImageNet weights, given the state dict."""
    net = getattr(torchvision.models, name)(weights=None, **{**TORCHVISION_WEIGHT_KWARGS.get(name, {}), **kwargs})
    net.load_state_dict(state_dict)
    return net.eval()


def imagenet_categories() -> list[str]:
    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


# --------------------------------------------------------------------------- every entrypoint


def test_registry_lists_the_books_classifiers():
    assert MODELS == sorted(CLASSIFIERS) and len(MODELS) == 21
    assert set(DEFAULT_SET) == set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_entrypoint_without_weights_is_random_with_default_transforms_and_labels(name, monkeypatch):
    import dlwp_models.hub

    def no_download(*args, **kwargs):
        raise AssertionError("a model without weights fetched a file")

    # nothing may be fetched (counting the loopback server's hits instead would also count a request
    # of another test that its server thread records late)
    monkeypatch.setattr(dlwp_models.hub, "fetch_file", no_download)
    monkeypatch.setattr(dlwp_models.hub, "fetch_files", no_download)
    model = hub_load(name)
    default = next(ws for ws in list_weights(name) if ws.default)
    tv_class = getattr(torchvision.models, type(model).__name__)
    assert isinstance(model, tv_class) and type(model) is not tv_class
    assert model.weights is None and model.training
    assert model.transforms == ClassifierTransform.from_weights(default)
    assert model.categories == imagenet_categories()
    params = list(model.parameters())
    assert params and not any(p.is_meta for p in params)
    assert sum(p.numel() for p in params) == default.meta["num_params"]


@pytest.mark.parametrize("set_name", [*sorted(DEFAULT_SET.values()), "resnet50.imagenet1k_v2"])
def test_entrypoint_loads_generated_weights_strictly(set_name, serve_weights, hub_home):
    state_dict = serve_weights(set_name)
    name, tag = set_name.split(".")
    kwargs = {"pretrained": True} if BUNDLED[set_name]["default"] else {"weights": tag.upper()}
    model = hub_load(name, progress=False, **kwargs)

    assert model.weights.name == set_name and not model.training
    assert isinstance(model, getattr(torchvision.models, type(model).__name__))
    loaded, expected = model.state_dict(), as_loaded(name, state_dict)
    assert list(loaded) == list(expected)  # torchvision's keys, nothing added
    mismatched = [key for key, value in expected.items() if not torch.equal(loaded[key], value)]
    assert not mismatched, f"tensors differ from the file: {mismatched[:5]}"
    settings = BUNDLED[set_name]["transforms"]
    assert (model.transforms.resize, model.transforms.crop) == (settings["resize"], settings["crop"])
    assert model.categories == imagenet_categories()
    filename = BUNDLED[set_name]["files"]["state_dict"]["filename"]
    assert len(list((hub_home / "hub" / "checkpoints" / "dlwp").glob(f"*/{filename}"))) == 1  # fetched into the cache


# the small architectures carry the forward checks, plus resnet101 (the book's) and a V2 set
FORWARD_CASES = [
    "alexnet.imagenet1k_v1",
    "resnet18.imagenet1k_v1",
    "squeezenet1_0.imagenet1k_v1",
    "squeezenet1_1.imagenet1k_v1",
    "densenet121.imagenet1k_v1",
    "inception_v3.imagenet1k_v1",
    "resnet101.imagenet1k_v1",
    "resnet50.imagenet1k_v2",
]


@pytest.mark.parametrize("set_name", FORWARD_CASES)
def test_logits_and_percentages_match_torchvision_with_the_books_pipeline(set_name, serve_weights):
    state_dict = serve_weights(set_name)
    name, tag = set_name.split(".")
    model = hub_load(name, weights=tag.upper(), progress=False)
    settings = BUNDLED[set_name]["transforms"]
    image = photo(500, 375)

    book_input = book_pipeline(settings["resize"], settings["crop"])(image)
    torch.testing.assert_close(model.transforms(image), book_input, rtol=0, atol=0)
    reference = reference_model(name, state_dict)
    with torch.no_grad():
        expected = reference(book_input.unsqueeze(0))
        got = model(model.transforms(image).unsqueeze(0))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

    percent = torch.softmax(expected, dim=1)[0] * 100
    top = torch.topk(percent, 5)
    labels = imagenet_categories()
    result = model.predict(image, topk=5)
    assert isinstance(result, Prediction)
    assert result.labels == [labels[i] for i in top.indices.tolist()]
    np.testing.assert_allclose(result.percents, top.values.tolist(), rtol=1e-4, atol=1e-5)


def test_inception_without_aux_logits_drops_the_head_after_loading(serve_weights):
    state_dict = serve_weights("inception_v3.imagenet1k_v1")
    model = hub_load("inception_v3", pretrained=True, aux_logits=False, progress=False)
    assert model.AuxLogits is None and not model.aux_logits
    assert not any(key.startswith("AuxLogits.") for key in model.state_dict())
    image = book_pipeline(342, 299)(photo()).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(model(image), reference_model("inception_v3", state_dict)(image), rtol=0, atol=1e-5)


def test_inception_transform_input_can_be_turned_off(serve_weights):
    state_dict = serve_weights("inception_v3.imagenet1k_v1")
    model = hub_load("inception_v3", pretrained=True, transform_input=False, progress=False)
    image = book_pipeline(342, 299)(photo()).unsqueeze(0)
    reference = reference_model("inception_v3", state_dict, transform_input=False)
    with torch.no_grad():
        torch.testing.assert_close(model(image), reference(image), rtol=0, atol=1e-5)
        assert not torch.allclose(model(image), reference_model("inception_v3", state_dict)(image), atol=1e-3)


def test_weights_are_loaded_without_a_wasted_random_initialisation(serve_weights, monkeypatch):
    serve_weights("resnet18.imagenet1k_v1")
    initialised: list[bool] = []
    real = nn.init.kaiming_normal_

    def spy(tensor, *args, **kwargs):
        initialised.append(tensor.is_meta)
        return real(tensor, *args, **kwargs)

    monkeypatch.setattr(nn.init, "kaiming_normal_", spy)
    model = hub_load("resnet18", pretrained=True, progress=False)
    assert initialised and all(initialised)  # only ever on the meta device
    assert not any(t.is_meta for t in model.state_dict().values())


# --------------------------------------------------------------------------- densenet's key names


def test_densenet_file_with_current_key_names_loads_too(serve_weights):
    state_dict = serve_weights("densenet121.imagenet1k_v1", writer=lambda name, sd, path: torch.save(sd, path))
    model = hub_load("densenet121", pretrained=True, progress=False)
    assert all(torch.equal(model.state_dict()[key], value) for key, value in state_dict.items())


def test_densenet_file_in_torchvisions_old_layout_loads_with_zero_batch_counters(serve_weights):
    """torchvision's DenseNet files are legacy (non-zip) pickles with pre-0.4 key names (``norm.1``)
    and no batch counters: the hub model takes every value from such a file, counters 0."""
    served = []

    def writer(name, state_dict, path):
        write_upstream_file(name, state_dict, path)
        served.append((zipfile.is_zipfile(path), list(torch.load(path, weights_only=True))))

    state_dict = serve_weights("densenet121.imagenet1k_v1", writer=writer)
    ((is_zip, keys),) = served  # the file is what the test says it is
    assert not is_zip and "features.denseblock1.denselayer1.norm.1.weight" in keys
    assert "features.denseblock1.denselayer1.norm1.weight" not in keys
    assert not any(key.endswith("num_batches_tracked") for key in keys)
    model = hub_load("densenet121", pretrained=True, progress=False)
    loaded = model.state_dict()
    assert list(loaded) == list(state_dict)
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            assert int(loaded[key]) == 0 and int(value) > 0, key
        else:
            assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))],
)
@pytest.mark.parametrize("set_name", ["resnet18.imagenet1k_v1", "densenet121.imagenet1k_v1"])
def test_map_location_puts_every_tensor_on_the_device_and_predict_follows(set_name, device, serve_weights):
    state_dict = serve_weights(set_name)
    name = set_name.split(".")[0]
    model = hub_load(name, pretrained=True, map_location=device, progress=False)
    assert {t.device.type for t in model.state_dict().values()} == {device}
    image = photo()
    result = model.predict(image, topk=3)
    reference = reference_model(name, as_loaded(name, state_dict))
    with torch.no_grad():
        expected = torch.softmax(reference(book_pipeline()(image).unsqueeze(0)), dim=1)[0] * 100
    top = torch.topk(expected, 3)
    assert result.labels == [imagenet_categories()[i] for i in top.indices.tolist()]
    np.testing.assert_allclose(result.percents, top.values.tolist(), rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- weight selection


def test_weights_by_tag_full_name_default_or_torchvision_enum(serve_weights):
    serve_weights("resnet18.imagenet1k_v1")
    for weights in (
        "IMAGENET1K_V1",
        "imagenet1k_v1",
        "resnet18.imagenet1k_v1",
        "DEFAULT",
        torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    ):
        assert hub_load("resnet18", weights=weights, progress=False).weights.name == "resnet18.imagenet1k_v1"
    model = hub_load("resnet18", pretrained=True, weights="IMAGENET1K_V1", progress=False)
    assert model.weights.name == "resnet18.imagenet1k_v1"


def test_unknown_weight_tag_lists_the_valid_ones(offline):
    with pytest.raises(WeightsNotFoundError) as info:
        hub_load("resnet50", weights="IMAGENET1K_V3")
    message = str(info.value)
    assert "'IMAGENET1K_V3'" in message
    assert "DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2" in message


def test_pretrained_with_another_weight_set_is_an_error(offline):
    with pytest.raises(ValueError, match=r"resnet101.imagenet1k_v1.*resnet101.imagenet1k_v2"):
        hub_load("resnet101", pretrained=True, weights="IMAGENET1K_V2")


def test_torchvision_enum_of_another_model_is_an_error(offline):
    with pytest.raises(ValueError, match=r"expected ResNet18_Weights.IMAGENET1K_V1"):
        hub_load("resnet18", weights=torchvision.models.ResNet50_Weights.IMAGENET1K_V1)


@pytest.mark.parametrize(
    ("name", "kwargs", "expected", "received"),
    [
        ("vgg11", {"init_weights": True}, "init_weights=False", "init_weights=True"),
        ("inception_v3", {"init_weights": True}, "init_weights=False", "init_weights=True"),
    ],
)
def test_arguments_that_contradict_the_weights_are_refused_before_downloading(
    name, kwargs, expected, received, offline
):
    with pytest.raises(ValueError) as info:
        hub_load(name, pretrained=True, **kwargs)
    assert expected in str(info.value) and received in str(info.value)


def test_unknown_architecture_argument_lists_the_accepted_ones(offline):
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'num_class'.*num_classes"):
        hub_load("resnet18", num_class=10)


def test_pretrained_must_be_a_bool(offline):
    with pytest.raises(TypeError, match="pretrained must be True or False"):
        hub_load("resnet18", pretrained="yes")


def test_random_model_with_another_head_has_no_labels_until_given():
    model = hub_load("squeezenet1_1", num_classes=10)
    assert model.categories is None
    assert model(torch.rand(1, 3, 224, 224)).shape == (1, 10)
    with pytest.raises(ValueError, match="model.categories"):
        model.predict(photo())
    model.categories = [f"class {i}" for i in range(10)]
    assert len(model.predict(photo(), topk=10)) == 10


def test_file_that_does_not_fit_is_refused_naming_the_first_bad_key(serve_weights):
    state_dict = generate_state_dict("resnet18")
    del state_dict["fc.bias"]
    serve_weights("resnet18.imagenet1k_v1", state_dict)
    with pytest.raises(IncompatibleWeightsError, match=r"missing key 'fc.bias'"):
        hub_load("resnet18", pretrained=True, progress=False)


def test_file_with_an_extra_key_is_refused(serve_weights):
    state_dict = generate_state_dict("squeezenet1_1")
    state_dict["classifier.9.weight"] = torch.zeros(3)
    serve_weights("squeezenet1_1.imagenet1k_v1", state_dict)
    with pytest.raises(IncompatibleWeightsError, match=r"unexpected key 'classifier.9.weight'"):
        hub_load("squeezenet1_1", pretrained=True, progress=False)


# --------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("set_name", sorted(n for n, e in BUNDLED.items() if e["format"] == "torchvision"))
def test_transforms_equal_torchvisions_for_every_weight_set(set_name):
    from dlwp_models import get_weights

    ws = get_weights(set_name)
    ours = ClassifierTransform.from_weights(ws)
    theirs = torchvision.models.get_weight(ws.meta["torchvision_weights"]).transforms()
    image = photo(333, 251, seed=3)
    torch.testing.assert_close(ours(image), theirs(image), rtol=0, atol=0)
    tensor = T.functional.to_tensor(image)
    torch.testing.assert_close(ours(tensor), theirs(tensor), rtol=0, atol=0)


def test_transforms_take_grey_images_uint8_tensors_and_batches():
    transform = ClassifierTransform(256, 224, tuple(IMAGENET_MEAN), tuple(IMAGENET_STD))
    image = photo()
    assert transform(image.convert("L")).shape == (3, 224, 224)
    uint8 = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    torch.testing.assert_close(transform(uint8), transform(uint8.float() / 255), rtol=0, atol=0)
    batch = torch.rand(2, 3, 240, 320)
    assert transform(batch).shape == (2, 3, 224, 224)


# --------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def small_model() -> nn.Module:
    torch.manual_seed(0)
    return hub_load("squeezenet1_1")


def test_one_image_gives_one_result_and_a_list_gives_a_list(small_model):
    one = small_model.predict(photo(), topk=3)
    assert isinstance(one, Prediction) and len(one) == 3
    many = small_model.predict([photo(), photo(seed=1), photo(seed=2)], topk=2)
    assert isinstance(many, list) and len(many) == 3 and all(isinstance(p, Prediction) for p in many)
    batch = torch.rand(2, 3, 200, 260)
    assert len(small_model.predict(batch)) == 2
    assert isinstance(small_model.predict(batch[0]), Prediction)


def test_batches_agree_with_one_at_a_time(small_model):
    images = [photo(seed=s) for s in range(5)]
    together = small_model.predict(images, topk=4, batch_size=2)
    for image, result in zip(images, together):
        alone = small_model.predict(image, topk=4)
        assert result.labels == alone.labels
        np.testing.assert_allclose(result.percents, alone.percents, rtol=1e-4, atol=1e-4)


def test_prediction_is_a_list_of_pairs_that_prints_as_a_table(small_model):
    result = small_model.predict(photo(), topk=5)
    plain = [(label, percent) for label, percent in result]
    assert result == plain and repr(result) == repr(plain)
    assert all(isinstance(label, str) and isinstance(percent, float) for label, percent in result)
    assert result.percents == sorted(result.percents, reverse=True)
    lines = str(result).splitlines()
    assert lines[0].split() == ["rank", "label", "percent"] and len(lines) == 6
    for rank, (line, (label, percent)) in enumerate(zip(lines[1:], result), start=1):
        assert line.lstrip().startswith(f"{rank}  {label}") and line.endswith(f"{percent:.2f} %")
    assert pickle.loads(pickle.dumps(result)) == result


def test_all_1000_percentages_sum_to_100(small_model):
    result = small_model.predict(photo(), topk=1000)
    assert len(result) == 1000 and len(set(result.labels)) == 1000
    assert sum(result.percents) == pytest.approx(100, abs=1e-3)


@pytest.mark.parametrize("topk", [0, -1, 1001])
def test_topk_out_of_range_names_the_valid_range(small_model, topk):
    with pytest.raises(ValueError, match=r"topk must be between 1 and 1000.*got " + str(topk)):
        small_model.predict(photo(), topk=topk)


@pytest.mark.parametrize("topk", [2.0, True, "5"])
def test_topk_must_be_an_int(small_model, topk):
    with pytest.raises(TypeError, match="topk must be an int"):
        small_model.predict(photo(), topk=topk)


def test_predict_runs_in_eval_mode_and_restores_training(small_model):
    small_model.train()
    image = photo()
    first = small_model.predict(image)
    assert small_model.training and all(m.training for m in small_model.modules())
    assert small_model.predict(image) == first  # dropout was off: deterministic
    small_model.eval()
    assert small_model.predict(image) == first
    assert not small_model.training


def test_predict_crops_equals_predict_on_the_original_images(small_model):
    images = [photo(), photo(300, 200, seed=1), photo(180, 260, seed=2)]
    crops = [small_model.transforms.crop_pixels(image) for image in images]  # what Ray's decoding tasks make
    assert {tuple(c.shape) for c in crops} == {(224, 224, 3)}
    expected = small_model.predict(images, topk=4)
    got = small_model.predict_crops(crops, topk=4)
    assert [list(p) for p in got] == [list(p) for p in expected]
    assert [p.indices for p in got] == [p.indices for p in expected]
    with pytest.raises(ValueError, match="topk must be between 1 and 1000"):
        small_model.predict_crops(crops, topk=0)
    model = copy.deepcopy(small_model)
    model.transforms = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    with pytest.raises(TypeError, match="needs model.transforms to be dlwp's ClassifierTransform"):
        model.predict_crops(crops)


def test_model_pickles_and_loads_in_a_fresh_process(small_model, tmp_path):
    path, image_path = tmp_path / "model.pt", tmp_path / "photo.png"
    torch.save(small_model, path)
    photo().save(image_path)
    expected = small_model.predict(image_path, topk=3)
    script = (
        "import sys, torch, json; sys.path.insert(0, sys.argv[3])\n"
        "m = torch.load(sys.argv[1], weights_only=False)\n"
        "print(json.dumps([type(m).__module__, type(m).__name__, m.predict(sys.argv[2], topk=3)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path), str(image_path), str(REPO_DIR)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    module, cls, result = json.loads(out.stdout)
    assert (module, cls) == ("dlwp_models.models.classifiers", "SqueezeNet")
    assert [tuple(pair) for pair in result] == [(label, pytest.approx(p, rel=1e-5)) for label, p in expected]


def test_loaded_model_deep_copies_with_its_weight_set(serve_weights):
    serve_weights("squeezenet1_1.imagenet1k_v1")
    model = hub_load("squeezenet1_1", pretrained=True, progress=False)
    clone = copy.deepcopy(model)
    assert clone.weights == model.weights and clone.weights.files["state_dict"].sha256
    assert clone.predict(photo()) == model.predict(photo())


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16"])
def test_other_image_modes_are_classified_like_their_rgb_conversion(small_model, tmp_path, mode):
    rgb = photo(120, 90)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
        expected_rgb = rgb.convert("L").convert("RGB")
    else:
        image = rgb.convert(mode)
        expected_rgb = image.convert("RGB") if mode != "RGBA" else rgb
    path = tmp_path / f"picture.{'jpg' if mode == 'CMYK' else 'png'}"
    image.save(path)
    if mode == "CMYK":
        expected_rgb = Image.open(path).convert("RGB")
    result = small_model.predict(str(path), topk=3)
    assert result == small_model.predict(expected_rgb, topk=3)

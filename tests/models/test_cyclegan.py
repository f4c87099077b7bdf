"""The CycleGAN horse→zebra generator through PyTorch Hub: strict loading of the book's and
junyanz's file layouts (generated with random values, served from 127.0.0.1), faithfulness to the
book's pipeline, sizes, batches, determinism and refusals."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms as T
from upstream_code import BookResNetGenerator

from dlwp_models import ImageInputError, IncompatibleWeightsError, UnsafeFileError, WeightsNotFoundError

REPO_DIR = Path(__file__).resolve().parents[2]
TOL = 1 / 255 + 1e-6  # one 8-bit level

# --------------------------------------------------------------------------- the documented layout
# design.md §4: 48 tensors, model.1.weight … model.26.bias, 11,378,179 parameters. Written out here
# from the design (not read from the module under test).
EXPECTED_SHAPES: list[tuple[str, tuple[int, ...]]] = [
    ("model.1.weight", (64, 3, 7, 7)),
    ("model.1.bias", (64,)),
    ("model.4.weight", (128, 64, 3, 3)),
    ("model.4.bias", (128,)),
    ("model.7.weight", (256, 128, 3, 3)),
    ("model.7.bias", (256,)),
    *[
        (f"model.{block}.conv_block.{conv}.{kind}", (256, 256, 3, 3) if kind == "weight" else (256,))
        for block in range(10, 19)
        for conv in (1, 5)
        for kind in ("weight", "bias")
    ],
    ("model.19.weight", (256, 128, 3, 3)),
    ("model.19.bias", (128,)),
    ("model.22.weight", (128, 64, 3, 3)),
    ("model.22.bias", (64,)),
    ("model.26.weight", (3, 64, 7, 7)),
    ("model.26.bias", (3,)),
]
NUM_PARAMS = 11_378_179
# the InstanceNorm layers (and their channels) whose running statistics junyanz's 2018 files carry
INSTANCE_NORMS: list[tuple[str, int]] = [
    ("model.2", 64),
    ("model.5", 128),
    ("model.8", 256),
    *[(f"model.{block}.conv_block.{norm}", 256) for block in range(10, 19) for norm in (2, 6)],
    ("model.20", 128),
    ("model.23", 64),
]


# --------------------------------------------------------------------------- the book's code
# The generator exactly as the book's notebook defines it (tests/upstream_code.py) is the
# reference the hub model is compared with.


def book_pipeline(net: nn.Module, img: Image.Image, resize: int = 256) -> torch.Tensor:
    """The notebook's steps: Resize(256), ToTensor(), unsqueeze, netG, (out + 1) / 2 → (3, H, W)."""
    preprocess = T.Compose([T.Resize(resize), T.ToTensor()])
    batch_t = torch.unsqueeze(preprocess(img), 0)
    with torch.no_grad():
        batch_out = net(batch_t)
    return (batch_out.data.squeeze() + 1.0) / 2.0


def as_float(image: Image.Image) -> torch.Tensor:
    """PIL RGB → (3, H, W) float in [0, 1]."""
    assert image.mode == "RGB"
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random RGB picture (a blurred noise field, so resizing is not trivial)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
    noise = rng.integers(-20, 21, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image).astype(int) + noise, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------- generated weight files


@dataclass
class WeightFile:
    layout: str
    path: Path
    data: bytes
    state_dict: dict[str, torch.Tensor]  # the 48 generator tensors the file holds
    reference: BookResNetGenerator  # the book's generator holding those tensors


def _random_book_generator(seed: int) -> BookResNetGenerator:
    torch.manual_seed(seed)
    net = BookResNetGenerator()
    with torch.no_grad():  # junyanz's init (normal, std 0.02) with random biases
        for name, p in net.named_parameters():
            p.copy_(torch.randn_like(p) * (0.02 if name.endswith("weight") else 0.1))
    return net.eval()


@pytest.fixture(scope="session")
def weight_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, WeightFile]:
    """A book-layout file (48 keys, legacy torch.save format like the book's 0.4.0-era file) and a
    junyanz-2018-layout file (zip format, plus InstanceNorm running statistics), different values."""
    folder = tmp_path_factory.mktemp("cyclegan_weights")
    files = {}
    for layout, seed in (("book", 0), ("junyanz", 1)):
        reference = _random_book_generator(seed)
        state_dict = {k: v.clone() for k, v in reference.state_dict().items()}
        saved = dict(state_dict)
        if layout == "junyanz":
            for name, channels in INSTANCE_NORMS:
                saved[f"{name}.running_mean"] = torch.zeros(channels)
                saved[f"{name}.running_var"] = torch.ones(channels)
                saved[f"{name}.num_batches_tracked"] = torch.tensor(0)
        buffer = io.BytesIO()
        torch.save(saved, buffer, _use_new_zipfile_serialization=(layout == "junyanz"))
        path = folder / f"{layout}_net_G.pth"
        path.write_bytes(buffer.getvalue())
        files[layout] = WeightFile(layout, path, buffer.getvalue(), state_dict, reference)
    return files


def bundled_entry() -> dict:
    manifest = json.loads((REPO_DIR / "weights" / "manifest.json").read_text(encoding="utf-8"))
    return next(e for e in manifest["weights"] if e["name"] == "cyclegan.horse2zebra")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def served_entry(server, name: str, data: bytes) -> dict:
    """The bundled horse2zebra entry (format, transforms, meta), its file served from 127.0.0.1
    and pinned by git blob SHA-1 like the real one."""
    entry = bundled_entry()
    entry["files"] = {
        "state_dict": {"filename": name, "urls": [server.serve(name, data)], "git_blob_sha1": git_blob_sha1(data)}
    }
    return entry


def hub_load(**kwargs) -> nn.Module:
    return torch.hub.load(str(REPO_DIR), "cyclegan", source="local", **kwargs)


def assert_holds(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert list(got) == list(state_dict)
    for key, value in state_dict.items():
        assert torch.equal(got[key], value), key


@pytest.fixture(scope="module")
def book_model(weight_server, weight_files, tmp_path_factory) -> nn.Module:
    """One hub-loaded model (book layout, served) shared by the tests that only run it."""
    folder = tmp_path_factory.mktemp("cyclegan_module")
    manifest = folder / "manifest.json"
    entry = served_entry(weight_server, "horse2zebra-module.pth", weight_files["book"].data)
    manifest.write_text(json.dumps({"schema_version": 1, "weights": [entry]}), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(folder / "torch_home"))
        mp.setenv("DLWP_MANIFEST", str(manifest))
        for var in ("DLWP_MIRROR", "DLWP_OFFLINE"):
            mp.delenv(var, raising=False)
        return hub_load(pretrained=True, progress=False)


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("layout", ["book", "junyanz"])
def test_hub_load_pretrained_reads_served_file_strictly(layout, weight_server, weight_files, make_manifest):
    wf = weight_files[layout]
    name = f"horse2zebra-{layout}.pth"
    make_manifest([served_entry(weight_server, name, wf.data)])
    before = len(weight_server.hits_for(name))

    model = hub_load(pretrained=True, progress=False)

    assert type(model).__name__ == "ResNetGenerator"
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == EXPECTED_SHAPES
    assert sum(p.numel() for p in model.parameters()) == NUM_PARAMS
    assert_holds(model, wf.state_dict)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert not model.training
    assert model.weights.name == "cyclegan.horse2zebra"
    assert model.weights.meta["num_params"] == NUM_PARAMS
    assert len(weight_server.hits_for(name)) > before


def test_weight_set_can_be_named_by_tag_full_name_or_default(weight_server, weight_files, make_manifest):
    make_manifest([served_entry(weight_server, "horse2zebra-names.pth", weight_files["book"].data)])
    for weights in ("horse2zebra", "cyclegan.horse2zebra", "DEFAULT"):
        model = hub_load(weights=weights, progress=False)
        assert model.weights.name == "cyclegan.horse2zebra"
        assert_holds(model, weight_files["book"].state_dict)


def no_download(monkeypatch) -> None:
    """Make any fetch fail the test (counting the loopback server's hits would also count a request
    of another test that its server thread records late)."""
    import dlwp_models.hub

    def fail(*args, **kwargs):
        raise AssertionError("a file was fetched")

    monkeypatch.setattr(dlwp_models.hub, "fetch_file", fail)
    monkeypatch.setattr(dlwp_models.hub, "fetch_files", fail)


def test_not_pretrained_is_random_and_downloads_nothing(monkeypatch):
    no_download(monkeypatch)
    model = hub_load()
    assert model.weights is None
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == EXPECTED_SHAPES
    assert not model.training
    assert model.translate(photo(40, 32), size=None).size == (40, 32)
    assert model.to(torch.float64).translate(photo(40, 32), size=None).size == (40, 32)  # follows dtype


@pytest.mark.parametrize("layout", ["book", "junyanz"])
@pytest.mark.parametrize("as_path", [False, True], ids=["str", "Path"])
def test_local_file_weights_of_either_layout(layout, as_path, weight_files, monkeypatch):
    wf = weight_files[layout]
    no_download(monkeypatch)
    model = hub_load(weights=wf.path if as_path else str(wf.path), map_location="cpu")
    assert_holds(model, wf.state_dict)
    assert model.weights is None
    assert not model.training


def test_url_weights_pinned_by_sha256_load_like_a_local_file(weight_files, weight_server):
    wf = weight_files["book"]
    url = weight_server.serve("shared-generator.pth", wf.data)
    with pytest.raises(ValueError, match="without sha256="):
        hub_load(weights=url)
    model = hub_load(weights=url, sha256=hashlib.sha256(wf.data).hexdigest(), progress=False)
    assert_holds(model, wf.state_dict)
    assert model.weights is None and len(weight_server.hits_for("shared-generator.pth")) == 1


def test_local_file_weights_translate_like_the_reference(weight_files):
    wf = weight_files["junyanz"]
    model = hub_load(weights=str(wf.path))
    img = photo(64, 48, seed=3)
    want = book_pipeline(wf.reference, img, resize=48)
    got = as_float(model.translate(img, size=48, preset="book"))
    assert got.shape == want.shape == (3, 48, 64)
    assert (got - want).abs().max() <= TOL


def _mutations(sd: dict[str, torch.Tensor]) -> dict[str, tuple[object, str]]:
    """name → (what to save, the key the error must name)."""
    missing = {k: v for k, v in sd.items() if k not in ("model.4.bias", "model.22.weight")}
    reshaped = dict(sd, **{"model.7.weight": torch.zeros(256, 128, 1, 1)})
    transposed = dict(sd, **{"model.19.weight": torch.zeros(128, 256, 3, 3)})
    extra = dict(sd, **{"model.27.weight": torch.zeros(3)})
    stats_on_conv = dict(sd, **{"model.1.running_mean": torch.zeros(64)})  # not an InstanceNorm
    prefixed = {f"module.{k}": v for k, v in sd.items()}
    return {
        "missing": (missing, "model.4.bias"),
        "wrong-shape": (reshaped, "model.7.weight"),
        "transposed-shape": (transposed, "model.19.weight"),
        "extra-key": (extra, "model.27.weight"),
        "running-stats-on-a-conv": (stats_on_conv, "model.1.running_mean"),
        "dataparallel-prefix": (prefixed, "model.1.weight"),
        "not-a-state-dict": ([sd["model.1.weight"]], "state dict"),
    }


@pytest.mark.parametrize(
    "mutation",
    [
        "missing",
        "wrong-shape",
        "transposed-shape",
        "extra-key",
        "running-stats-on-a-conv",
        "dataparallel-prefix",
        "not-a-state-dict",
    ],
)
def test_incompatible_local_file_is_refused_naming_the_first_bad_key(mutation, weight_files, tmp_path):
    content, named = _mutations(weight_files["book"].state_dict)[mutation]
    path = tmp_path / "bad.pth"
    torch.save(content, path)
    with pytest.raises(IncompatibleWeightsError) as info:
        hub_load(weights=str(path))
    assert named in str(info.value)


def test_incompatible_served_file_is_refused_naming_the_first_bad_key(weight_server, weight_files, make_manifest):
    content = dict(weight_files["junyanz"].state_dict)
    del content["model.13.conv_block.5.weight"]
    del content["model.26.bias"]
    buffer = io.BytesIO()
    torch.save(content, buffer)
    make_manifest([served_entry(weight_server, "horse2zebra-incomplete.pth", buffer.getvalue())])
    with pytest.raises(IncompatibleWeightsError, match=r"'model\.13\.conv_block\.5\.weight'"):
        hub_load(pretrained=True, progress=False)


class _Payload:
    """Not a tensor: a weights-only load must refuse to build it."""


def test_file_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "pickle.pth"
    torch.save({"model.1.weight": _Payload()}, path)
    with pytest.raises(UnsafeFileError):
        hub_load(weights=str(path))


def test_unknown_weight_names_and_missing_files_are_refused(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="(?i)horse2zebra"):
        hub_load(weights="zebra2horse")  # names the valid choices
    with pytest.raises(FileNotFoundError, match="not an existing file"):
        hub_load(weights=str(tmp_path / "latest_net_G.pth"))
    with pytest.raises(FileNotFoundError):
        hub_load(weights=tmp_path / "nothing-here")


def test_manifest_entry_with_unknown_transform_setting_fails_before_download(weight_server, make_manifest):
    entry = served_entry(weight_server, "horse2zebra-badtransform.pth", b"never fetched")
    entry["transforms"] = dict(entry["transforms"], crop=224)
    make_manifest([entry])
    with pytest.raises(ValueError, match="crop"):
        hub_load(pretrained=True, progress=False)
    assert weight_server.hits_for("horse2zebra-badtransform.pth") == []


# --------------------------------------------------------------------------- translate


@pytest.mark.parametrize(
    ("width", "height", "resize"),
    [
        (128, 128, 64),  # a square, to 64×64
        (500, 400, 256),  # downscaled to 320×256
        (80, 120, 64),  # portrait, 64×96
    ],
)
def test_book_preset_equals_the_books_pipeline(book_model, weight_files, width, height, resize):
    img = photo(width, height, seed=width)
    want = book_pipeline(weight_files["book"].reference, img, resize=resize)
    assert want.shape[1] % 4 == 0 and want.shape[2] % 4 == 0  # where the book keeps the size
    assert want.std() > 0.05  # a non-trivial picture

    got = book_model.translate(img, size=resize, preset="book")

    assert isinstance(got, Image.Image) and got.mode == "RGB"
    assert (got.height, got.width) == tuple(want.shape[1:])
    assert (as_float(got) - want).abs().max() <= TOL


def test_trained_preset_feeds_minus_one_to_one(book_model, weight_files):
    img = photo(96, 64, seed=7)
    x = T.Compose([T.Resize(64), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])(img)
    with torch.no_grad():
        want = (weight_files["book"].reference(x[None])[0] + 1) / 2

    seen = []
    hook = book_model.model[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        trained = as_float(book_model.translate(img, size=64))
        book_model.translate(img, size=64, preset="book")
    finally:
        hook.remove()

    assert (trained - want).abs().max() <= TOL
    assert torch.allclose(seen[0], x[None], atol=1e-6)  # [-1, 1], as trained
    assert torch.allclose(seen[1], (x[None] + 1) / 2, atol=1e-6)  # [0, 1], as the book feeds it
    assert seen[0].min() < -0.5 and seen[1].min() >= 0


def test_bundled_transforms_are_the_trained_preprocessing(book_model):
    img = photo(100, 75, seed=11)
    want = T.Compose([T.Resize(256), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])(img)
    got = book_model.transforms(img)
    assert got.dtype == torch.float32 and got.shape == want.shape == (3, 256, 341)
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize(
    ("width", "height", "size", "expected"),
    [
        (61, 47, None, (61, 47)),
        (50, 33, None, (50, 33)),
        (9, 13, None, (9, 13)),
        (314, 256, None, (314, 256)),  # the book's example: its pipeline returns 316×256
        (100, 70, 37, (52, 37)),  # resized to an odd shorter side
        (70, 101, 45, (45, 64)),
    ],
)
def test_odd_sizes_come_back_the_size_they_went_in(book_model, weight_files, width, height, size, expected):
    img = photo(width, height, seed=height)
    out = book_model.translate(img, size=size)
    assert out.size == expected

    # the documented method: reflection-pad right/bottom to a multiple of 4, run, crop back
    x = T.ToTensor()(img.resize(expected, Image.BILINEAR) if size else img) * 2 - 1
    pad_w, pad_h = -expected[0] % 4, -expected[1] % 4
    padded = F.pad(x[None], (0, pad_w, 0, pad_h), mode="reflect")
    with torch.no_grad():
        want = (weight_files["book"].reference(padded)[0, :, : expected[1], : expected[0]] + 1) / 2
    assert (as_float(out) - want).abs().max() <= TOL


def test_batches_of_mixed_sizes_and_kinds(book_model):
    a, b = photo(64, 48, seed=1), photo(40, 56, seed=2)
    c = np.asarray(photo(50, 50, seed=3))  # numpy HWC uint8
    d = as_float(photo(36, 44, seed=4))  # float CHW tensor in [0, 1]
    inputs = [a, b, c, d, a]

    outs = book_model.translate(inputs, size=None)

    assert isinstance(outs, list) and [o.size for o in outs] == [(64, 48), (40, 56), (50, 50), (36, 44), (64, 48)]
    singles = [book_model.translate(x, size=None) for x in inputs]
    for out, single in zip(outs, singles):
        assert (as_float(out) - as_float(single)).abs().max() <= TOL
    assert np.array_equal(np.asarray(outs[0]), np.asarray(outs[4]))
    assert book_model.translate([a], size=None)[0].size == (64, 48)  # a list of one gives a list


def test_nchw_tensor_is_a_batch(book_model):
    batch = torch.stack([as_float(photo(40, 32, seed=s)) for s in (5, 6)])
    outs = book_model.translate(batch, size=None)
    assert isinstance(outs, list) and [o.size for o in outs] == [(40, 32), (40, 32)]
    assert not np.array_equal(np.asarray(outs[0]), np.asarray(outs[1]))


def test_translate_from_a_file_path(book_model, tmp_path):
    path = tmp_path / "horse.png"
    photo(72, 52, seed=9).save(path)
    assert book_model.translate(str(path), size=None).size == (72, 52)
    assert book_model.translate(path, size=40).size == (55, 40)


def test_translate_is_deterministic_and_leaves_the_model_alone(book_model):
    img = photo(70, 50, seed=12)
    before = {k: v.clone() for k, v in book_model.state_dict().items()}
    first = book_model.translate(img, size=None)
    second = book_model.translate(img, size=None)
    assert np.array_equal(np.asarray(first), np.asarray(second))
    assert not book_model.training
    assert all(torch.equal(v, before[k]) for k, v in book_model.state_dict().items())


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"preset": "paper"}, ValueError, "preset"),
        ({"size": 0}, ValueError, "size"),
        ({"size": 4}, ValueError, "at least 8"),
        ({"size": True}, ValueError, "size"),
        ({"size": "256"}, ValueError, "size"),
        ({"max_pixels": 0}, ValueError, "max_pixels"),
    ],
)
def test_bad_translate_arguments(book_model, kwargs, error, message):
    with pytest.raises(error, match=message):
        book_model.translate(photo(32, 32), **kwargs)


def test_too_small_image_is_refused(book_model):
    with pytest.raises(ImageInputError, match="at least 8 pixels"):
        book_model.translate(photo(20, 6), size=None)
    assert book_model.translate(photo(20, 6), size=8).size == (26, 8)  # resizing up works


def test_memory_guard_refuses_huge_images_before_running(book_model):
    huge = Image.new("RGB", (4200, 2100))  # 8.8 MP kept at size=None
    with pytest.raises(ImageInputError, match="memory guard") as info:
        book_model.translate(huge, size=None)
    assert "size=" in str(info.value) and "max_pixels=" in str(info.value)
    with pytest.raises(ImageInputError, match="memory guard"):  # a large size= on a wide image
        book_model.translate(photo(100, 20), size=1500)
    with pytest.raises(ImageInputError, match=r"image 1 .*memory guard"):
        book_model.translate([photo(30, 30), photo(60, 60)], size=None, max_pixels=2000)
    assert book_model.translate(photo(60, 60), size=None, max_pixels=None).size == (60, 60)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (torch.rand(4, 32, 32), ImageInputError),  # 4 channels
        (torch.rand(32, 32), ImageInputError),  # no channel dimension
        (torch.rand(3, 32, 32) * 2, ImageInputError),  # float outside [0, 1]
        (np.zeros((32, 32, 3), dtype=np.float32), ImageInputError),
        ("no/such/horse.jpg", FileNotFoundError),
        (42, TypeError),
        ([], ImageInputError),
    ],
)
def test_bad_images_are_refused(book_model, bad, error):
    with pytest.raises(error):
        book_model.translate(bad)


def test_cuda_runs_ask_cudnn_for_determinism_and_restore_the_settings(monkeypatch):
    from dlwp_models.models.cyclegan.network import _deterministic_cudnn

    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "deterministic", False)
    monkeypatch.setattr(cudnn, "benchmark", True)
    with _deterministic_cudnn(torch.device("cuda")):
        assert cudnn.deterministic and not cudnn.benchmark
    assert not cudnn.deterministic and cudnn.benchmark
    with _deterministic_cudnn(torch.device("cpu")):
        assert not cudnn.deterministic and cudnn.benchmark


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_translate_on_cuda_is_deterministic(weight_files):
    model = hub_load(weights=str(weight_files["book"].path), map_location="cuda")
    assert all(p.is_cuda for p in model.parameters())
    img = photo(130, 97, seed=13)
    first, second = model.translate(img), model.translate(img)
    assert first.size == (343, 256)
    assert np.array_equal(np.asarray(first), np.asarray(second))


def test_tensor_inputs_are_downscaled_with_antialiasing_like_torchvision():
    """A 500×400 tensor shrunk to a shorter side of 256 (320×256): torchvision's antialiased
    Resize to the bit, and visibly not the aliased one (they differ by far more than rounding)."""
    from torchvision.transforms import functional as TF

    from dlwp_models.inputs.transforms import CycleGANTransform

    x = torch.rand(3, 400, 500, generator=torch.Generator().manual_seed(5))
    for transform in (CycleGANTransform(), CycleGANTransform().configured(size=256, preset="book")):
        got = transform(x)
        want = TF.resize(x.unsqueeze(0), [256, 320], antialias=True).clamp(0, 1)[0]
        aliased = TF.resize(x.unsqueeze(0), [256, 320], antialias=False).clamp(0, 1)[0]
        if transform.mean is not None:
            want, aliased = (want - 0.5) / 0.5, (aliased - 0.5) / 0.5
        assert got.shape == (3, 256, 320)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        assert (got - aliased).abs().max() > 0.1

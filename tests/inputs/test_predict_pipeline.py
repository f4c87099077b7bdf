"""How ``predict`` prepares images: resize and crop against torchvision's two steps, the
per-batch scaling and normalising against the per-image transform, the worker threads (order,
bounded look-ahead, errors, no thread left behind, warning filters untouched), and files that
need care when decoded (EXIF orientation, decompression bombs) on that path."""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from dlwp_models import ImageInputError
from dlwp_models.errors import ImageNotFoundError
from dlwp_models.inputs.pipeline import ordered_map
from dlwp_models.inputs.transforms import ClassifierTransform

REPO_DIR = Path(__file__).resolve().parents[2]
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth structure plus noise, so every resampling weight matters."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8))
    smooth = np.asarray(base.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    noisy = smooth + rng.integers(-20, 21, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def two_steps(transform: ClassifierTransform, image: Image.Image) -> np.ndarray:
    resized = F.resize(image, [transform.resize], interpolation=InterpolationMode(transform.interpolation))
    return np.asarray(F.center_crop(resized, [transform.crop, transform.crop]), dtype=np.int16)


@pytest.fixture(scope="module")
def small_model() -> nn.Module:
    torch.manual_seed(0)
    return torch.hub.load(str(REPO_DIR), "squeezenet1_1", source="local")


# --------------------------------------------------------------------------- crop_pixels / collate


@pytest.mark.parametrize("size", [(1280, 720), (720, 1280), (500, 375), (333, 999), (200, 150), (256, 300), (100, 80)])
@pytest.mark.parametrize(
    "settings",
    [
        (256, 224, "bilinear"),
        (232, 224, "bilinear"),
        (342, 299, "bilinear"),
        (256, 224, "bicubic"),
        (256, 224, "nearest"),
    ],
)
def test_crop_pixels_are_torchvisions_resize_then_crop_exactly(size, settings):
    resize, crop, interpolation = settings
    transform = ClassifierTransform(resize, crop, **IMAGENET, interpolation=interpolation)
    image = picture(*size)
    pixels = transform.crop_pixels(image)
    assert pixels.dtype == torch.uint8 and tuple(pixels.shape) == (crop, crop, 3)
    assert np.array_equal(pixels.numpy(), two_steps(transform, image))


def test_crop_pixels_of_a_float_tensor_is_torchvisions_resize_and_crop():
    transform = ClassifierTransform(256, 224, **IMAGENET)
    tensor = torch.rand(3, 300, 400)
    expected = F.center_crop(F.resize(tensor, [256], antialias=True), [224, 224])
    assert torch.equal(transform.crop_pixels(tensor), expected)


def test_collate_equals_the_per_image_transform_bit_for_bit():
    transform = ClassifierTransform(256, 224, **IMAGENET)
    images = [picture(*size, seed=s) for s, size in enumerate([(640, 480), (256, 320), (150, 200)])]
    tensor = torch.rand(3, 256, 256)
    batch = transform.collate([transform.crop_pixels(i) for i in [*images, tensor]], torch.device("cpu"), torch.float32)
    expected = torch.stack([transform(i) for i in [*images, tensor]])
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch, expected)
    uint8_only = transform.collate([transform.crop_pixels(i) for i in images], torch.device("cpu"), torch.float32)
    assert torch.equal(uint8_only, expected[:3])


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_collate_gives_the_dtype_asked_for(dtype):
    """The forward pass's dtype: a half-precision model gets half-precision inputs, the same
    numbers as the float32 batch rounded once."""
    transform = ClassifierTransform(64, 56, **IMAGENET)
    uint8 = [transform.crop_pixels(picture(90, 70, seed=s)) for s in range(2)]
    floats = [transform.crop_pixels(torch.rand(3, 60, 80))]
    for pixels in (uint8, uint8 + floats):
        scaled = [p.permute(2, 0, 1).float().div(255) if p.dtype == torch.uint8 else p for p in pixels]
        want = torch.stack([F.normalize(x, IMAGENET["mean"], IMAGENET["std"]) for x in scaled])
        batch = transform.collate(pixels, torch.device("cpu"), dtype)
        assert batch.dtype == dtype and batch.shape == (len(pixels), 3, 56, 56)
        assert torch.equal(batch, want.to(dtype))


# --------------------------------------------------------------------------- ordered_map


def test_ordered_map_keeps_the_order_and_bounds_what_is_in_flight():
    running, most = 0, 0
    lock = threading.Lock()

    def slow_square(x: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01 * (x % 3))
        with lock:
            running -= 1
        return x * x

    submitted = []

    def items():
        for i in range(20):
            submitted.append(i)
            yield i

    results = []
    for value in ordered_map(slow_square, items(), workers=3, ahead=4):
        results.append(value)
        assert len(submitted) <= len(results) + 4  # never more than `ahead` beyond the consumer
    assert results == [i * i for i in range(20)]
    assert 1 < most <= 3


def test_without_overlap_the_next_window_starts_only_when_the_last_is_taken():
    started: list[int] = []
    lock = threading.Lock()

    def record(x: int) -> int:
        with lock:
            started.append(x)
        return x

    taken = []
    for value in ordered_map(record, range(10), workers=2, ahead=4, overlap=False):
        time.sleep(0.01)  # the consumer's work: workers must stay idle
        with lock:
            assert max(started) < (len(taken) // 4 + 1) * 4  # nothing beyond the current window
        taken.append(value)
    assert taken == list(range(10)) and sorted(started) == list(range(10))


def test_ordered_map_raises_where_the_failure_is_and_leaves_no_thread():
    before = threading.active_count()
    started = []

    def fn(x: int) -> int:
        started.append(x)
        if x == 3:
            raise ValueError("bad item 3")
        return x

    got = []
    with pytest.raises(ValueError, match="bad item 3"):
        for value in ordered_map(fn, range(1000), workers=2, ahead=4):
            got.append(value)
    assert got == [0, 1, 2]
    assert len(started) < 20  # the rest was never started
    assert threading.active_count() == before


def test_leaving_ordered_map_early_stops_its_threads():
    before = threading.active_count()
    results = ordered_map(lambda x: x, range(100), workers=2, ahead=8)
    assert next(results) == 0
    results.close()
    assert threading.active_count() == before


# --------------------------------------------------------------------------- predict on files


def save_jpegs(folder: Path, count: int, size: tuple[int, int] = (320, 240)) -> list[Path]:
    paths = []
    for i in range(count):
        path = folder / f"photo{i}.jpg"
        picture(*size, seed=i).save(path, quality=90)
        paths.append(path)
    return paths


def test_predict_on_files_in_threads_equals_one_at_a_time(small_model, tmp_path):
    paths = save_jpegs(tmp_path, 7)
    together = small_model.predict(paths, topk=3, batch_size=3)
    for path, result in zip(paths, together):
        alone = small_model.predict(str(path), topk=3)
        assert result.labels == alone.labels
        np.testing.assert_allclose(result.percents, alone.percents, rtol=1e-4, atol=1e-4)


def test_a_missing_file_fails_before_any_decoding(small_model, tmp_path, monkeypatch):
    from dlwp_models.inputs import images as _images

    paths = save_jpegs(tmp_path, 3)
    decoded = []
    real = _images._decode
    monkeypatch.setattr(_images, "_decode", lambda *a: decoded.append(a) or real(*a))
    with pytest.raises(ImageNotFoundError, match="missing.jpg"):
        small_model.predict([*paths, tmp_path / "missing.jpg"])
    assert decoded == []


def test_a_damaged_file_in_the_middle_is_a_clear_error_and_no_thread_is_left(small_model, tmp_path):
    paths = save_jpegs(tmp_path, 12)
    paths[5].write_bytes(paths[5].read_bytes()[:300])  # truncated JPEG
    before = threading.active_count()
    with pytest.raises(ImageInputError, match="photo5.jpg.*damaged or truncated"):
        small_model.predict(paths, batch_size=4)
    assert threading.active_count() == before
    assert small_model.training  # the mode was restored after the failure


def test_decoding_in_threads_leaves_the_warning_filters_as_they_were(small_model, tmp_path, monkeypatch):
    paths = save_jpegs(tmp_path, 10, size=(90, 80))
    filters = list(warnings.filters)
    small_model.predict(paths, batch_size=2)
    assert warnings.filters == filters
    Image.new("RGB", (400, 400)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # 160,000 px is over the limit
    with pytest.raises(ImageInputError, match="big.png.*too large to decode safely"):
        small_model.predict([*paths[:3], tmp_path / "big.png", *paths[3:]], batch_size=2)
    assert warnings.filters == filters


def test_exif_orientation_is_applied_on_the_threaded_path(small_model, tmp_path):
    upright = picture(240, 320)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turns it 90° clockwise
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif.tobytes())
    with Image.open(path) as decoded:  # the same JPEG pixels, turned by hand, no EXIF
        turned = Image.fromarray(np.asarray(decoded.transpose(Image.Transpose.ROTATE_270)))
    expected = small_model.predict(turned, topk=5)
    got = small_model.predict([path, path], topk=5)
    for result in got:  # batch of 2 vs 1: float rounding only
        assert result.labels == expected.labels
        np.testing.assert_allclose(result.percents, expected.percents, rtol=1e-4)


def test_predict_with_the_callers_own_transform(small_model, tmp_path):
    from torchvision.models import SqueezeNet1_1_Weights

    paths = save_jpegs(tmp_path, 3)
    ours = small_model.predict(paths, topk=3)
    original = small_model.transforms
    try:
        preset = SqueezeNet1_1_Weights.IMAGENET1K_V1.transforms()  # same settings as ours
        small_model.transforms = lambda image: preset(image)
        theirs = small_model.predict(paths, topk=3)
        for wrong in (
            lambda image: image,  # a PIL image
            lambda image: preset(image).permute(1, 2, 0),  # HWC
            lambda image: (preset(image) * 255).to(torch.uint8),
        ):  # not normalised floats
            small_model.transforms = wrong
            with pytest.raises(TypeError, match=r"model.transforms returned .*float \(3, H, W\) tensor"):
                small_model.predict(paths)
    finally:
        small_model.transforms = original
    for a, b in zip(ours, theirs):
        assert a.labels == b.labels
        np.testing.assert_allclose(a.percents, b.percents, rtol=1e-3, atol=1e-4)


def test_a_lazily_opened_image_passed_twice(small_model, tmp_path):
    path = save_jpegs(tmp_path, 1)[0]
    lazy = Image.open(path)  # not decoded yet
    twice = small_model.predict([lazy, lazy], topk=3)
    assert twice[0] == twice[1]
    assert twice[0].labels == small_model.predict(path, topk=3).labels


@pytest.mark.filterwarnings("ignore:IM image format is deprecated:DeprecationWarning")
def test_decoding_many_files_leaves_no_file_open(tmp_path):
    import os

    from dlwp_models.inputs.images import load_images

    paths = []
    # IM and multi-frame MPO files keep their file open after load() until closed
    for i, fmt in enumerate(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "IM", "MPO"] * 3):
        path = tmp_path / f"image{i}.{fmt.lower()}"
        extra = {"save_all": True, "append_images": [picture(40, 30, seed=99)]} if fmt == "MPO" else {}
        picture(40, 30, seed=i).save(path, format=fmt, **extra)
        paths.append(path)
    before = len(os.listdir("/proc/self/fd"))
    images, _ = load_images(paths)
    assert len(os.listdir("/proc/self/fd")) == before
    assert all(image.mode == "RGB" and image.size == (40, 30) for image in images)
    assert all(np.asarray(image).shape == (30, 40, 3) for image in images)  # still usable


def test_a_closed_pil_image_is_a_clear_error(small_model):
    image = picture(64, 48)
    image.close()
    with pytest.raises(ImageInputError, match="was closed before it was passed"):
        small_model.predict(image)


@pytest.mark.parametrize("size", [(40000, 1), (1, 40000)])
def test_extreme_aspect_ratio_is_refused_fast_with_bounded_memory(small_model, tmp_path, size):
    import resource

    path = tmp_path / "sliver.png"
    Image.new("RGB", size, (200, 10, 10)).save(path)  # a few hundred bytes
    assert path.stat().st_size < 1000
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(ImageInputError, match="DLWP_MAX_RESIZED_PIXELS") as info:
        small_model.predict(str(path))
    assert time.monotonic() - started < 3
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 300  # the resize would have taken ~10 GB
    assert "limit of 16,777,216" in str(info.value)


def test_resized_pixel_limit_can_be_raised(monkeypatch):
    transform = ClassifierTransform(256, 224, **IMAGENET)
    wide = Image.new("RGB", (4000, 10))  # resized to 102400x256
    with pytest.raises(ImageInputError, match="would be resized to 102400x256"):
        transform.crop_pixels(wide)
    monkeypatch.setenv("DLWP_MAX_RESIZED_PIXELS", str(102400 * 256))
    assert tuple(transform.crop_pixels(wide).shape) == (224, 224, 3)
    monkeypatch.delenv("DLWP_MAX_RESIZED_PIXELS")
    with pytest.raises(ImageInputError, match="would be resized"):  # tensors are checked too
        transform.crop_pixels(torch.rand(3, 10, 4000))


def test_the_limit_is_checked_on_the_images_own_height_and_width(monkeypatch):
    """A tall (3, 200, 20) tensor and the same PIL image are resized to 32x320 = 10,240 pixels: over
    a limit of 8,000, whichever form they come in (its channels are not its height)."""
    monkeypatch.setenv("DLWP_MAX_RESIZED_PIXELS", "8000")
    transform = ClassifierTransform(32, 32, **IMAGENET)
    message = (
        "an image of 20x200 pixels (width x height) would be resized to 32x320 = 10,240 pixels before the "
        "center crop, over the classifiers' limit of 8,000 resized pixels (memory guard). Crop it to a "
        "less extreme aspect ratio first, or raise the limit with DLWP_MAX_RESIZED_PIXELS if this machine "
        "has the memory."
    )
    for item in (torch.rand(3, 200, 20), Image.new("RGB", (20, 200))):
        with pytest.raises(ImageInputError) as info:
            transform.crop_pixels(item)
        assert str(info.value) == message
    monkeypatch.setenv("DLWP_MAX_RESIZED_PIXELS", " 10240 ")  # exactly enough, spaces allowed
    assert tuple(transform.crop_pixels(torch.rand(3, 200, 20)).shape) == (3, 32, 32)


@pytest.mark.parametrize("value", ["0", "-5", "1e6", "lots"])
def test_a_limit_that_is_not_a_positive_number_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv("DLWP_MAX_RESIZED_PIXELS", value)
    with pytest.raises(ImageInputError) as info:
        ClassifierTransform(32, 32, **IMAGENET).crop_pixels(torch.rand(3, 40, 40))
    assert str(info.value) == (
        f"DLWP_MAX_RESIZED_PIXELS must be a positive number of pixels, got {value!r}; fix or unset it."
    )


def test_a_limit_of_one_pixel_is_a_limit_not_an_error(monkeypatch):
    monkeypatch.setenv("DLWP_MAX_RESIZED_PIXELS", "1")
    with pytest.raises(ImageInputError, match="over the classifiers' limit of 1 resized pixels"):
        ClassifierTransform(32, 32, **IMAGENET).crop_pixels(torch.rand(3, 40, 40))

"""The transforms' tensor operations and inputs against torchvision, case by case: portrait,
landscape and square images, each interpolation mode, uint8 and float input, batches, a grey
image, the [0, 1] range after resizing, and the manifest settings a transform is read from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import one_weight_set
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from dlwp_models import ManifestError
from dlwp_models.inputs.caption_transform import CaptionTransform
from dlwp_models.inputs.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClassifierTransform,
    CycleGANTransform,
    resize_and_crop,
    resize_shorter_side,
)

MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
    "nearest-exact": InterpolationMode.NEAREST_EXACT,
}


def pixels(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A float (3, H, W) picture in [0, 1]."""
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(("height", "width"), [(90, 140), (150, 70), (80, 80)])
def test_tensor_resize_and_crop_are_torchvisions(height, width, mode):
    x = pixels(height, width)[None]
    want = TF.resize(x, [48], interpolation=MODES[mode], antialias=True)
    got = resize_shorter_side(x, 48, mode)
    assert got.shape == want.shape and min(got.shape[-2:]) == 48
    assert torch.equal(got, want)
    assert torch.equal(resize_and_crop(x, 48, 40, mode), TF.center_crop(want, [40, 40]))


def test_resizing_is_bilinear_and_antialiased_unless_told_otherwise():
    x = pixels(150, 70)[None]
    want = TF.resize(x, [48], interpolation=InterpolationMode.BILINEAR, antialias=True)
    assert torch.equal(resize_shorter_side(x, 48), want)
    assert torch.equal(resize_and_crop(x, 48, 40), TF.center_crop(want, [40, 40]))


def classifier_reference(image) -> torch.Tensor:
    return T.Compose([T.Resize(64), T.CenterCrop(56), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(image)


TRANSFORM = ClassifierTransform(64, 56, IMAGENET_MEAN, IMAGENET_STD)


def test_classifier_transform_of_a_grey_image_is_that_of_its_rgb_conversion():
    grey = Image.fromarray(np.random.default_rng(1).integers(0, 256, (70, 90), dtype=np.uint8), "L")
    assert torch.equal(TRANSFORM(grey), classifier_reference(grey.convert("RGB")))


def test_classifier_transform_of_float_tensors_and_batches_is_torchvisions_tensor_pipeline():
    x = pixels(70, 90)
    want = TF.normalize(TF.center_crop(TF.resize(x, [64], antialias=True), [56, 56]), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(TRANSFORM(x), want, atol=1e-6)
    batch = torch.stack([x, pixels(70, 90, seed=1)])
    got = TRANSFORM(batch)
    assert got.shape == (2, 3, 56, 56) and torch.allclose(got[0], want, atol=1e-6)


def test_classifier_transform_scales_uint8_tensors_to_unit_range():
    x = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (3, 70, 90), dtype=np.uint8))
    assert torch.allclose(TRANSFORM(x), TRANSFORM(x.float() / 255), atol=1e-6)


def test_cyclegan_tensors_of_either_orientation_are_resized_like_torchvision():
    for height, width in ((120, 80), (80, 120)):
        x = pixels(height, width)
        want = TF.resize(x[None], [64], antialias=True).clamp(0, 1)[0]
        got = CycleGANTransform(resize=64).configured(size=64, preset="book")(x)
        assert got.shape == want.shape and torch.equal(got, want)


def test_cyclegan_uint8_batches_are_scaled_by_255():
    x = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (2, 3, 40, 60), dtype=np.uint8))
    module = CycleGANTransform(resize=None).tensor_module()
    assert torch.equal(module(x), (x.float() / 255.0 - 0.5) / 0.5)


def test_cyclegan_resizing_keeps_white_within_the_unit_range():
    white = torch.ones(1, 3, 400, 500)
    out = CycleGANTransform(resize=256).configured(size=256, preset="book").tensor_module()(white)
    assert out.shape == (1, 3, 256, 320) and float(out.max()) <= 1.0


def test_cyclegan_resize_to_one_pixel_is_honoured():
    assert CycleGANTransform(resize=1).configured(size=1, preset="book")(pixels(4, 6)).shape == (3, 1, 1)


def test_preprocessing_modules_carry_no_state_to_save():
    """What export embeds: the statistics are constants of the module, not entries of its state dict."""
    assert dict(CycleGANTransform().tensor_module().state_dict()) == {}
    assert dict(TRANSFORM.tensor_module().state_dict()) == {}


def test_caption_transform_without_weights_has_the_imagenet_defaults():
    assert (
        CaptionTransform.from_weights(None) == CaptionTransform() == CaptionTransform(IMAGENET_MEAN, IMAGENET_STD, 2048)
    )


def weight_set(**transforms):
    settings = {"resize": 256, "crop": 224, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), **transforms}
    return one_weight_set(settings, sha256="0" * 64)


def test_classifier_settings_are_read_from_the_manifest():
    assert ClassifierTransform.from_weights(weight_set(interpolation="bicubic")) == ClassifierTransform(
        256, 224, IMAGENET_MEAN, IMAGENET_STD, "bicubic"
    )


@pytest.mark.parametrize(("key", "value"), [("resize", True), ("resize", 0), ("crop", "224"), ("crop", -1)])
def test_a_size_that_is_not_a_positive_integer_is_a_manifest_error_naming_it(key, value):
    with pytest.raises(ManifestError) as info:
        ClassifierTransform.from_weights(weight_set(**{key: value}))
    assert str(info.value) == (
        f"test.json: weight set 't.v1'.transforms.{key}: expected a positive number of "
        f"pixels, got {value!r}. Fix that field of the manifest."
    )


@pytest.mark.parametrize("mode", list(MODES))
def test_each_interpolation_mode_is_read_from_the_manifest(mode):
    assert ClassifierTransform.from_weights(weight_set(interpolation=mode)).interpolation == mode


@pytest.mark.parametrize("value", ["Bilinear", "area", None])
def test_an_unknown_interpolation_is_a_manifest_error_listing_the_modes(value):
    with pytest.raises(ManifestError) as info:
        ClassifierTransform.from_weights(weight_set(interpolation=value))
    assert str(info.value) == (
        "test.json: weight set 't.v1'.transforms.interpolation: expected one of 'nearest', "
        f"'nearest-exact', 'bilinear', 'bicubic', got {value!r}. Fix that field of the manifest."
    )


def test_sizes_of_one_pixel_are_allowed():
    assert ClassifierTransform.from_weights(weight_set(resize=1, crop=1)).crop == 1


@pytest.mark.parametrize(
    ("key", "value", "want"),
    [
        ("mean", [0.5, 0.5], "a list of 3 numbers"),
        ("mean", "0.5", "a list of 3 numbers"),
        ("mean", [0.5, True, 0.5], "a list of 3 numbers"),
        ("std", [0.2, 0.0, 0.2], "a list of 3 numbers above 0"),
        ("std", [0.2, "x", 0.2], "a list of 3 numbers above 0"),
    ],
)
def test_statistics_that_are_not_three_numbers_are_a_manifest_error_naming_them(key, value, want):
    with pytest.raises(ManifestError) as info:
        ClassifierTransform.from_weights(weight_set(**{key: value}))
    assert str(info.value) == (
        f"test.json: weight set 't.v1'.transforms.{key}: expected {want}, got {value!r}. "
        "Fix that field of the manifest."
    )


def test_classifier_preprocess_module_is_the_transform_on_uint8_batches():
    """What export embeds: uint8 (N, 3, H, W) in, the transform's normalised crops out."""
    x = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (2, 3, 70, 90), dtype=np.uint8))
    want = torch.stack([TRANSFORM(image.float() / 255) for image in x])
    got = TRANSFORM.tensor_module()(x)
    assert got.shape == (2, 3, 56, 56) and torch.allclose(got, want, atol=1e-6)
    nearest = ClassifierTransform(64, 56, IMAGENET_MEAN, IMAGENET_STD, "nearest")
    assert torch.allclose(nearest.tensor_module()(x)[0], nearest(x[0].float() / 255), atol=1e-6)


def test_classifier_transform_describes_itself():
    assert repr(TRANSFORM) == (
        "ClassifierTransform(resize=64, crop=56, interpolation='bilinear', "
        f"mean={list(IMAGENET_MEAN)}, std={list(IMAGENET_STD)})"
    )


def test_an_unknown_cyclegan_preset_is_refused_naming_the_presets():
    with pytest.raises(ValueError) as info:
        CycleGANTransform().configured(size=64, preset="zebra")
    assert str(info.value) == "preset must be one of ['trained', 'book'], got 'zebra'"
    trained = CycleGANTransform(resize=256).configured(size=64, preset="trained")
    assert trained == CycleGANTransform(resize=64) and trained.mean == (0.5, 0.5, 0.5)


def test_cyclegan_transform_takes_what_translate_takes_as_the_same_rgb_photo(tmp_path):
    """A path, a numpy array, a grey or palette PIL image: each is the RGB photo it shows."""
    rgb = Image.fromarray(np.random.default_rng(2).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    transform = CycleGANTransform(resize=24)
    want = transform(rgb)
    assert want.shape == (3, 24, 32)
    rgb.save(tmp_path / "photo.png")
    assert torch.equal(transform(str(tmp_path / "photo.png")), want)
    assert torch.equal(transform(tmp_path / "photo.png"), want)
    assert torch.equal(transform(np.asarray(rgb)), want)
    for mode in ("L", "P"):
        other = rgb.convert(mode)
        got = transform(other)
        assert got.shape == (3, 24, 32)
        assert torch.equal(got, transform(other.convert("RGB")))


@pytest.mark.parametrize("resize", [0, -1, True, 2.5, "64"])
def test_a_cyclegan_resize_that_is_not_a_positive_integer_is_refused(resize):
    with pytest.raises(ValueError) as info:
        CycleGANTransform(resize=resize)
    assert str(info.value) == f"resize must be None or a positive integer, got {resize!r}"


def test_cyclegan_statistics_come_in_pairs_and_are_kept_as_tuples_of_floats():
    with pytest.raises(ValueError) as info:
        CycleGANTransform(mean=(0.5, 0.5, 0.5), std=None)
    assert str(info.value) == "mean and std must both be given or both be None, got mean=(0.5, 0.5, 0.5), std=None"
    listed = CycleGANTransform(resize=1, mean=[1, 0.5, 0.5], std=[0.5, 2, 0.5])
    assert listed.mean == (1.0, 0.5, 0.5) and listed.std == (0.5, 2.0, 0.5)
    assert all(type(v) is float for v in listed.mean + listed.std)
    assert CycleGANTransform(resize=None, mean=None, std=None).output_size(5, 7) == (5, 7)


def test_cyclegan_transform_of_a_tensor_is_its_preprocessing_module():
    x = torch.rand(3, 30, 40, generator=torch.Generator().manual_seed(9))
    transform = CycleGANTransform(resize=24)
    assert torch.equal(transform(x), transform.tensor_module()(x[None])[0])
    assert transform(x).shape == (3, 24, 32)

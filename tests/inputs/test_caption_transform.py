"""NeuralTalk2's preprocessing without a model: `CaptionTransform` (RGB, /255, ImageNet statistics,
no resize) and `fit_side` (the downscale `caption()` applies first), each against torchvision or
PIL computing the same thing, for PIL images, uint8 and float tensors and grey inputs."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import one_weight_set
from PIL import Image
from torchvision.transforms import functional as TF

from dlwp_models.inputs.caption_transform import CaptionTransform, fit_side
from dlwp_models.inputs.transforms import IMAGENET_MEAN, IMAGENET_STD

MEAN, STD = (0.5, 0.25, 0.125), (0.25, 0.5, 2.0)


def picture(height: int, width: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    values = torch.randint(
        0, 256, (height, width, len(mode)), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )
    return Image.fromarray(values.squeeze(-1).numpy() if mode == "L" else values.numpy(), mode)


def reference(image: Image.Image, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    return TF.normalize(TF.to_tensor(image.convert("RGB")), list(mean), list(std))


@pytest.mark.parametrize(("mean", "std"), [(IMAGENET_MEAN, IMAGENET_STD), (MEAN, STD)])
def test_a_photo_is_scaled_and_normalised_at_its_own_size(mean, std):
    image = picture(23, 31)
    got = CaptionTransform(mean, std)(image)
    assert got.dtype == torch.float32 and got.shape == (3, 23, 31)
    torch.testing.assert_close(got, reference(image, mean, std), rtol=0, atol=1e-6)


def test_a_grey_photo_becomes_three_equal_channels():
    image = picture(9, 12, "L")
    got = CaptionTransform(MEAN, STD)(image)
    torch.testing.assert_close(got, reference(image, MEAN, STD), rtol=0, atol=1e-6)
    torch.testing.assert_close(got[0] * STD[0] + MEAN[0], got[2] * STD[2] + MEAN[2], rtol=0, atol=1e-6)


def test_tensors_give_what_the_same_photo_gives():
    image = picture(11, 7, seed=3)
    transform = CaptionTransform(MEAN, STD)
    want = reference(image, MEAN, STD)
    as_uint8 = TF.pil_to_tensor(image)  # (3, H, W) uint8: divided by 255
    as_float = as_uint8.float() / 255  # (3, H, W) in [0, 1]: taken as is
    torch.testing.assert_close(transform(as_uint8), want, rtol=0, atol=1e-6)
    torch.testing.assert_close(transform(as_float), want, rtol=0, atol=1e-6)
    grey = TF.pil_to_tensor(image.convert("L"))  # (1, H, W): tiled to 3 channels
    torch.testing.assert_close(transform(grey), reference(image.convert("L"), MEAN, STD), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 5, 5), (4, 5, 5), (5, 5), (1, 3, 5, 5)])
def test_a_tensor_that_is_not_an_image_is_refused(shape):
    with pytest.raises(ValueError) as raised:
        CaptionTransform()(torch.zeros(shape, dtype=torch.uint8))
    assert str(raised.value) == f"expected a (3, H, W) or (1, H, W) image tensor, got {tuple(shape)}"


def test_max_side_must_be_none_or_a_positive_integer():
    assert CaptionTransform(max_side=None).max_side is None
    assert CaptionTransform(max_side=1).max_side == 1
    for bad in (0, -5, 2.5, "64", True):
        with pytest.raises(ValueError, match=f"max_side must be None or a positive integer, got {bad!r}"):
            CaptionTransform(max_side=bad)


@pytest.mark.parametrize("max_side", [None, 40, 41])
def test_fit_side_keeps_an_image_within_the_limit_untouched(max_side):
    image, tensor = picture(30, 40), torch.rand(3, 30, 40)
    assert fit_side(image, max_side, "x") is image
    assert fit_side(tensor, max_side, "x") is tensor


def test_fit_side_downscales_a_photo_as_pil_does_and_says_so(caplog):
    image = picture(200, 300, seed=5)
    with caplog.at_level(logging.INFO, logger="dlwp_models.inputs.caption_transform"):
        got = fit_side(image, 150, "holiday.jpg")
    assert got.size == (150, 100)
    assert got.tobytes() == image.resize((150, 100), Image.Resampling.BILINEAR).tobytes()
    assert (
        "holiday.jpg is 300x200 (width x height), more than max_side=150; captioning it downscaled to 150x100"
    ) in caplog.text


def test_fit_side_rounds_each_side_and_keeps_at_least_one_pixel():
    assert fit_side(picture(3, 2000), 1000, "x").size == (1000, 2)  # 1.5 rounds to 2
    assert fit_side(picture(1, 3000), 1000, "x").size == (1000, 1)  # 0.33 is kept at 1 pixel
    assert fit_side(picture(2000, 3), 1000, "x").size == (2, 1000)  # portrait: the height is the longer side
    assert fit_side(picture(3000, 1), 1000, "x").size == (1, 1000)
    assert fit_side(torch.rand(3, 1, 3000), 1000, "x").shape == (3, 1, 1000)


def test_fit_side_downscales_a_tensor_with_antialiasing_like_torchvision():
    tensor = torch.rand(3, 200, 300, generator=torch.Generator().manual_seed(7))
    got = fit_side(tensor, 150, "x")
    want = TF.resize(tensor, [100, 150], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    assert got.shape == (3, 100, 150)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert 0 <= float(got.min()) and float(got.max()) <= 1


def caption_weight_set(**transforms):
    return one_weight_set(transforms, sha256="0" * 64)


def test_the_settings_are_read_from_the_manifest_and_checked_there():
    from dlwp_models import ManifestError

    weights = caption_weight_set(mean=list(MEAN), std=list(STD), max_side=512)
    assert CaptionTransform.from_weights(weights) == CaptionTransform(MEAN, STD, 512)
    assert CaptionTransform.from_weights(caption_weight_set(max_side=None)) == CaptionTransform(max_side=None)
    assert CaptionTransform.from_weights(caption_weight_set()) == CaptionTransform()
    with pytest.raises(ManifestError, match="weight set 't.v1': max_side must be None or a positive integer, got 0"):
        CaptionTransform.from_weights(caption_weight_set(max_side=0))
    with pytest.raises(ManifestError, match="unknown transform setting 'crop'; expected only"):
        CaptionTransform.from_weights(caption_weight_set(crop=224))

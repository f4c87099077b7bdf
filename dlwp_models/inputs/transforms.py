"""Each family's preprocessing, one implementation serving eager use and export.

* :class:`ClassifierTransform`: resize the shorter side, center crop, ``ToTensor``, ``Normalize``
  (the book's pipeline; bit for bit torchvision's on PIL images);
* :class:`CycleGANTransform`: resize the shorter side, scale to [0, 1], optionally to [-1, 1];
* :class:`CaptionTransform`: ``/255`` and ImageNet statistics at the image's own size.

Tensor inputs go through the same scriptable operations (:func:`resize_shorter_side`,
:func:`resize_and_crop` and the ``*Preprocess`` modules) that the exported artefacts embed, so
eager tensors and exports cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ImageInputError, ImageTooLargeError, ManifestError
from ..weights.manifest import WeightSet
from .transform_settings import from_weight_set, mean_std

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

__all__ = [
    "ClassifierTransform",
    "CycleGANTransform",
    "ClassifierPreprocess",
    "CycleGANPreprocess",
    "resize_shorter_side",
    "resize_and_crop",
    "PRESETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_RESIZED_PIXELS",
    "check_resized_pixels",
]

#: CycleGAN input conventions: as the weights were trained ([-1, 1]) or as the book feeds them ([0, 1])
PRESETS = ("trained", "book")
#: classifiers refuse an image whose resized (pre-crop) size exceeds this many pixels (memory guard:
#: a 40000×1 image would become 256×10,240,000); DLWP_MAX_RESIZED_PIXELS overrides
MAX_RESIZED_PIXELS = 4096 * 4096
#: ImageNet statistics (the classifiers' default and the captioning encoder's input normalisation)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CYCLEGAN_KEYS = {"resize", "mean", "std"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _max_resized_pixels() -> int:
    import os

    value = os.environ.get("DLWP_MAX_RESIZED_PIXELS", "").strip()
    if not value:
        return MAX_RESIZED_PIXELS
    if not value.isdigit() or int(value) < 1:
        raise ImageInputError(
            f"DLWP_MAX_RESIZED_PIXELS must be a positive number of pixels, got {value!r}; fix or unset it."
        )
    return int(value)


def check_resized_pixels(height: int, width: int, short: int) -> None:
    """Refuse, before any allocation, an image whose shorter side resized to ``short`` would exceed
    the pixel limit (:data:`MAX_RESIZED_PIXELS`, or DLWP_MAX_RESIZED_PIXELS)."""
    from .images import resized_hw

    new_h, new_w = resized_hw(height, width, short)
    limit = _max_resized_pixels()
    if new_h * new_w > limit:
        raise ImageTooLargeError(
            f"an image of {width}x{height} pixels (width x height) would be resized to {new_w}x{new_h} = "
            f"{new_h * new_w:,} pixels before the center crop, over the classifiers' limit of {limit:,} "
            "resized pixels (memory guard). Crop it to a less extreme aspect ratio first, or raise the "
            "limit with DLWP_MAX_RESIZED_PIXELS if this machine has the memory."
        )


def _channels(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(3, 1, 1)


# --------------------------------------------------------------------------- tensor operations


def resize_shorter_side(x: torch.Tensor, short: int, mode: str = "bilinear") -> torch.Tensor:
    """(N, C, H, W) float → the shorter side ``short``, the longer ``int(short * long / shorter)``
    (torchvision's ``Resize(short)`` rule and arithmetic on tensors; antialiased where it is).
    Scriptable."""
    height, width = x.shape[-2], x.shape[-1]
    if height <= width:
        new_h, new_w = short, int(short * width / height)
    else:
        new_h, new_w = int(short * height / width), short
    if mode == "bilinear" or mode == "bicubic":
        return F.interpolate(x, size=[new_h, new_w], mode=mode, align_corners=False, antialias=True)
    return F.interpolate(x, size=[new_h, new_w], mode=mode)


def resize_and_crop(x: torch.Tensor, resize: int, crop: int, mode: str = "bilinear") -> torch.Tensor:
    """(N, C, H, W) float → resized shorter side, then the central ``crop`` × ``crop`` (torchvision's
    rounding of the offsets). Scriptable."""
    x = resize_shorter_side(x, resize, mode)
    height, width = x.shape[-2], x.shape[-1]
    top = int(round((height - crop) / 2.0))
    left = int(round((width - crop) / 2.0))
    return x[..., top : top + crop, left : left + crop]


def _as_unit_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images.float()


class ClassifierPreprocess(nn.Module):
    """uint8 (or float [0, 1]) images (N, 3, H, W) → the normalised (N, 3, crop, crop) batch of a
    :class:`ClassifierTransform`. Scriptable and exportable."""

    def __init__(self, transform: ClassifierTransform) -> None:
        super().__init__()
        self.resize, self.crop, self.mode = transform.resize, transform.crop, transform.interpolation
        self.register_buffer("mean", torch.tensor(transform.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(transform.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_and_crop(_as_unit_float(images), self.resize, self.crop, self.mode)
        return (x - self.mean) / self.std


class CycleGANPreprocess(nn.Module):
    """uint8 (or float [0, 1]) images (N, 3, H, W) → a :class:`CycleGANTransform`'s output: the
    shorter side resized (bilinear, antialiased, clamped to [0, 1]), then normalised when the
    transform has mean/std. Scriptable and exportable."""

    def __init__(self, transform: CycleGANTransform) -> None:
        super().__init__()
        self.resize = -1 if transform.resize is None else transform.resize
        self.normalise = transform.mean is not None
        mean = transform.mean if transform.mean is not None else (0.0, 0.0, 0.0)
        std = transform.std if transform.std is not None else (1.0, 1.0, 1.0)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = _as_unit_float(images)
        if self.resize > 0 and min(x.shape[-2], x.shape[-1]) != self.resize:
            x = resize_shorter_side(x, self.resize, "bilinear").clamp(0.0, 1.0)
        if self.normalise:
            x = (x - self.mean) / self.std
        return x


# --------------------------------------------------------------------------- classifiers


@dataclass(frozen=True)
class ClassifierTransform:
    """The evaluation transform of a weight set: resize the shorter side, center crop, scale to
    [0, 1], normalise. Takes a PIL image or a float CHW / NCHW tensor in [0, 1] (anything else
    that ``predict`` accepts is converted first); returns a normalised float tensor.

    For a PIL image this is exactly ``Resize(resize) → CenterCrop(crop) → ToTensor() →
    Normalize(mean, std)``, the book's pipeline (and torchvision's ``weights.transforms()``).
    """

    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    @classmethod
    def from_weights(cls, weights: WeightSet) -> ClassifierTransform:
        """Read and check a weight set's ``transforms`` settings."""
        settings = weights.transforms

        def bad(key: str, want: str) -> ManifestError:
            return ManifestError(
                f"{weights.source}: weight set {weights.name!r}.transforms.{key}: expected "
                f"{want}, got {settings.get(key)!r}. Fix that field of the manifest."
            )

        for key in ("resize", "crop"):
            value = settings.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(key, "a positive number of pixels")
        for key in ("mean", "std"):
            value = settings.get(key)
            if (
                not isinstance(value, list)
                or len(value) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                or (key == "std" and not all(v > 0 for v in value))
            ):
                raise bad(key, "a list of 3 numbers" + (" above 0" if key == "std" else ""))
        interpolation = settings.get("interpolation", "bilinear")
        if interpolation not in ("nearest", "nearest-exact", "bilinear", "bicubic"):
            raise bad("interpolation", "one of 'nearest', 'nearest-exact', 'bilinear', 'bicubic'")
        return cls(
            settings["resize"],
            settings["crop"],
            tuple(float(v) for v in settings["mean"]),
            tuple(float(v) for v in settings["std"]),
            interpolation,
        )

    def __call__(self, image: Image.Image | torch.Tensor | Any) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms import functional as F

        is_float_rgb = (
            isinstance(image, torch.Tensor)
            and image.is_floating_point()
            and image.dim() in (3, 4)
            and image.shape[-3] == 3
        )
        if not is_float_rgb and not (isinstance(image, Image.Image) and image.mode == "RGB"):
            from .images import load_image

            image = load_image(image)  # grey/RGBA PIL images, uint8 tensors, arrays, paths...
        return F.normalize(_scaled(self.crop_pixels(image)), mean=list(self.mean), std=list(self.std))

    def crop_pixels(self, item: Image.Image | torch.Tensor) -> torch.Tensor:
        """The first two steps (resize, center crop) of one item from ``_images``, exactly as
        :meth:`__call__` does them: an RGB PIL image becomes a uint8 (crop, crop, 3) HWC tensor, a
        float CHW tensor stays float CHW. :meth:`collate` does the rest for a whole batch.

        (Resampling only the crop's region of a PIL image would halve this step's time, but PIL
        then rounds some 8-bit values differently by 1, and on the calibrated random networks of
        ``benchmarks/`` that moved ResNet-101's percentages by up to 15 points; predictions are
        kept identical to the book's pipeline instead.)
        """
        import numpy as np
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        height, width = (
            (int(item.shape[-2]), int(item.shape[-1])) if isinstance(item, torch.Tensor) else item.size[::-1]
        )
        check_resized_pixels(height, width, self.resize)  # before any large allocation
        if isinstance(item, torch.Tensor):  # float CHW (or NCHW) in [0, 1]
            batch = item if item.dim() == 4 else item.unsqueeze(0)
            out = resize_and_crop(batch, self.resize, self.crop, self.interpolation)
            return out if item.dim() == 4 else out[0]
        image = F.resize(item, [self.resize], interpolation=InterpolationMode(self.interpolation), antialias=True)
        image = F.center_crop(image, [self.crop, self.crop])
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())

    def collate(self, pixels: Sequence[torch.Tensor], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """:meth:`crop_pixels` results → one normalised (N, 3, crop, crop) batch in channels-last
        memory, on ``device``: ``ToTensor`` (÷ 255) and ``Normalize`` done once for the batch,
        with the same float operations, so each image's numbers equal the per-image pipeline's."""
        from torchvision.transforms import functional as F

        if all(p.dtype == torch.uint8 for p in pixels):
            # (N, H, W, 3) viewed as (N, 3, H, W) is already channels-last; uint8 travels 4× lighter
            batch = torch.stack(list(pixels)).to(device).permute(0, 3, 1, 2).float().div_(255)
        else:
            batch = torch.stack([_scaled(p).to(device) for p in pixels])
        batch = F.normalize(batch, mean=list(self.mean), std=list(self.std), inplace=True)
        return batch.to(dtype).contiguous(memory_format=torch.channels_last)

    def tensor_module(self) -> ClassifierPreprocess:
        """This transform as a scriptable module on uint8 image batches (what export embeds)."""
        return ClassifierPreprocess(self)

    def __repr__(self) -> str:
        return (
            f"ClassifierTransform(resize={self.resize}, crop={self.crop}, interpolation="
            f"{self.interpolation!r}, mean={list(self.mean)}, std={list(self.std)})"
        )


def _scaled(pixels: torch.Tensor) -> torch.Tensor:
    """A :meth:`ClassifierTransform.crop_pixels` result as float CHW in [0, 1]: ``ToTensor``'s
    arithmetic (÷ 255) for uint8 HWC pixels; float tensors are already scaled."""
    if pixels.dtype == torch.uint8:
        return pixels.permute(2, 0, 1).contiguous().float().div(255)
    return pixels.float()


# --------------------------------------------------------------------------- cyclegan


@dataclass(frozen=True)
class CycleGANTransform:
    """Image → generator input, as one record (the ``transforms`` attribute of the model).

    Resize so the shorter side is ``resize`` (bilinear, antialiased, exactly as torchvision's
    ``Resize(resize)``; None keeps the size), convert to float32 in [0, 1] (``ToTensor()``), then
    normalise with ``mean``/``std`` when given. The trained convention is mean = std = 0.5, i.e.
    [-1, 1]; the book's notebook feeds [0, 1] (``configured(preset="book")``).

    Calling it on a PIL image, a CHW tensor (float in [0, 1]) or anything ``translate`` accepts
    for one image returns a float32 (3, H, W) tensor.

    The two conventions give nearly the same picture: the first layer (reflection padding, a 7×7
    convolution, instance norm) cancels an affine change of the input range, up to the norm's
    epsilon (with random test weights they agree to within one 8-bit level). The ``"book"``
    preset is there to follow the book's steps exactly.
    """

    resize: int | None = 256
    mean: tuple[float, float, float] | None = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] | None = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if self.resize is not None and (
            not isinstance(self.resize, int) or isinstance(self.resize, bool) or self.resize < 1
        ):
            raise ValueError(f"resize must be None or a positive integer, got {self.resize!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError(
                f"mean and std must both be given or both be None, got mean={self.mean!r}, std={self.std!r}"
            )
        if self.mean is not None:
            mean, std = mean_std(self.mean, self.std)
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "std", std)

    @classmethod
    def from_weights(cls, weights: WeightSet | None) -> CycleGANTransform:
        """The transform a weight set's manifest entry describes (defaults without weights)."""
        if weights is None:
            return cls()
        return from_weight_set(cls, weights, _CYCLEGAN_KEYS)

    def configured(self, *, size: int | None, preset: str) -> CycleGANTransform:
        """This transform with the shorter side set to ``size`` and the input range of ``preset``
        (``"trained"`` keeps mean/std, ``"book"`` feeds [0, 1])."""
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {list(PRESETS)}, got {preset!r}")
        if preset == "book":
            return replace(self, resize=size, mean=None, std=None)
        return replace(self, resize=size)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after resizing, by torchvision's rule for ``Resize(int)``: the shorter
        side becomes ``resize``, the longer ``int(resize * long / short)``."""
        from .images import resized_hw

        return (height, width) if self.resize is None else resized_hw(height, width, self.resize)

    def __call__(self, image: Any) -> torch.Tensor:  # PIL image or (3, H, W) -> (3, H', W') float32
        from PIL import Image
        from torchvision.transforms import functional as TF

        from .images import image_hw, load_image, to_float_tensor

        if not isinstance(image, (Image.Image, torch.Tensor)):
            image = load_image(image)  # a path, URL or numpy array, as translate accepts
        elif isinstance(image, Image.Image) and image.mode != "RGB":
            image = load_image(image)
        height, width = image_hw(image)
        new_h, new_w = self.output_size(height, width)
        if isinstance(image, torch.Tensor):
            return self.tensor_module()(image.unsqueeze(0))[0]
        if (new_h, new_w) != (height, width):
            image = TF.resize(image, [new_h, new_w])  # PIL bilinear, as Resize(256) does
        x = to_float_tensor(image)  # (3, H', W') in [0, 1]
        if self.mean is not None:
            x = (x - _channels(self.mean, x)) / _channels(self.std, x)
        return x

    def tensor_module(self) -> CycleGANPreprocess:
        """This transform as a scriptable module on image batches (uint8, or float in [0, 1]):
        what ``__call__`` does to tensors, and what export embeds."""
        return CycleGANPreprocess(self)

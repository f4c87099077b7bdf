"""The CycleGAN horse→zebra generator of chapter 2 (junyanz's ``ResnetGenerator``, the book's
``ResNetGenerator``), with its preprocessing and postprocessing bundled.

* :class:`ResNetGenerator` is the architecture, laid out so that its ``state_dict()`` keys are
  exactly those of the book's ``horse2zebra_0.4.0.pth`` (48 tensors, ``model.1.weight`` …
  ``model.26.bias``, 11,378,179 parameters).
* :func:`adapt_cyclegan_state_dict` is the ``cyclegan`` format adapter: it takes the book's
  48-key file as is, and drops exactly the InstanceNorm ``running_mean`` / ``running_var`` /
  ``num_batches_tracked`` entries that junyanz's 2018-era files add. Every other difference is an
  error naming the first offending key.
* :func:`cyclegan` is the hub entrypoint; :meth:`ResNetGenerator.translate` turns images into
  images in one call.

Sizes. The generator halves the resolution twice and doubles it twice, so it maps a side ``s`` to
``4 * ceil(s / 4)`` (the book's 314×256 input comes back 316×256). ``translate`` pads each input on
the right and bottom by reflection up to a multiple of 4 and crops the output back, so every image
comes back exactly the size it went in at (after the resize). For sides that are already multiples
of 4 nothing is padded and the result is the book's computation.

Presets. ``preset="trained"`` feeds [-1, 1] (how the weights were trained), ``preset="book"``
feeds [0, 1] as the book's notebook does; because the first convolution is followed by instance
norm, the two give nearly the same picture (see :class:`CycleGANTransform`).

Memory guard. Activations at full resolution take about 1 KiB per input pixel (a few 64-channel
float32 maps), so ``translate`` refuses an image whose resized size exceeds ``max_pixels``
(:data:`MAX_PIXELS`, 8.4 million pixels by default, e.g. 4096×2048: about 8 GiB) with an
:class:`~dlwp_models.ImageInputError` that says how to proceed (a smaller ``size=``, or a larger
``max_pixels=`` if the machine has the memory). It refuses rather than silently shrinking, so
that the output size always equals the resized input size.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ._building import fetch_for, resolve_weights, weights_file
from ._checkpoints import build_on_meta, load_into
from ._errors import ImageInputError, IncompatibleWeightsError
from ._manifest import WeightSet
from ._mappable import load_weight_file
from ._transform_settings import from_weight_set, mean_std

__all__ = [
    "ResNetGenerator", "ResNetBlock", "CycleGANTransform", "adapt_cyclegan_state_dict", "cyclegan",
    "PRESETS", "MAX_PIXELS", "MIN_SIDE",
]

log = logging.getLogger(__name__)

MODEL = "cyclegan"
FORMAT = "cyclegan"
PRESETS = ("trained", "book")
#: the largest resized input (height × width) ``translate`` accepts by default; the network
#: needs about 1 KiB of activations per input pixel (measured on CPU, float32)
MAX_PIXELS = 4096 * 2048
#: the smallest side (after resizing) the generator can take: it downsamples by 4 and its
#: residual blocks reflection-pad by 1, which needs at least 2 pixels at the lowest resolution
MIN_SIDE = 8
#: same-size images are run together in batches of at most this many pixels in all
BATCH_PIXELS = 1 << 20
_DOWNSAMPLING = 2  # stride-2 convolutions, so sides must be multiples of 2 ** _DOWNSAMPLING
_INSTANCE_NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")
_TRANSFORM_KEYS = {"resize", "mean", "std"}


# --------------------------------------------------------------------------- architecture

def _instance_norm(channels: int) -> nn.InstanceNorm2d:
    # affine=False and no running statistics: the layer has no state, hence no state-dict keys
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResNetBlock(nn.Module):
    """``x + conv_block(x)`` with two reflection-padded 3×3 convolutions (keys ``conv_block.1``
    and ``conv_block.5``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),                          # 0
            nn.Conv2d(dim, dim, kernel_size=3, bias=True),  # 1
            _instance_norm(dim),                            # 2
            nn.ReLU(inplace=True),                          # 3
            nn.ReflectionPad2d(1),                          # 4
            nn.Conv2d(dim, dim, kernel_size=3, bias=True),  # 5
            _instance_norm(dim),                            # 6
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, dim, H, W) -> (N, dim, H, W)
        return x + self.conv_block(x)


class ResNetGenerator(nn.Module):
    """The CycleGAN ResNet generator (9 residual blocks), one ``nn.Sequential`` named ``model``.

    ``forward`` is the raw network: images in [-1, 1] (as trained) of shape (N, 3, H, W) give
    (N, 3, 4⌈H/4⌉, 4⌈W/4⌉) in [-1, 1]. :meth:`translate` is the one-call image-to-image API.
    Attributes set by :func:`cyclegan`: ``weights`` (the :class:`~dlwp_models.WeightSet`, or None)
    and ``transforms`` (the bundled :class:`CycleGANTransform`).
    """

    def __init__(self, *, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9) -> None:
        super().__init__()
        for name, value in (("input_nc", input_nc), ("output_nc", output_nc), ("ngf", ngf)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(n_blocks, int) or isinstance(n_blocks, bool) or n_blocks < 0:
            raise ValueError(f"n_blocks must be a non-negative integer, got {n_blocks!r}")
        self.input_nc, self.output_nc, self.ngf, self.n_blocks = input_nc, output_nc, ngf, n_blocks

        layers: list[nn.Module] = [                                             # (N, in, H, W)
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, bias=True),                 # (N, 64, H, W)
            _instance_norm(ngf),
            nn.ReLU(inplace=True),
        ]
        for i in range(_DOWNSAMPLING):                                          # H/2, then H/4
            mult = 2 ** i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=True),
                _instance_norm(ngf * mult * 2),
                nn.ReLU(inplace=True),
            ]
        mult = 2 ** _DOWNSAMPLING
        layers += [ResNetBlock(ngf * mult) for _ in range(n_blocks)]            # (N, 256, H/4, W/4)
        for i in range(_DOWNSAMPLING):                                          # H/2, then H
            mult = 2 ** (_DOWNSAMPLING - i)
            layers += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1,
                                   output_padding=1, bias=True),
                _instance_norm(ngf * mult // 2),
                nn.ReLU(inplace=True),
            ]
        layers += [
            nn.ReflectionPad2d(3),
            nn.Conv2d(ngf, output_nc, kernel_size=7, bias=True),                # (N, out, H, W)
            nn.Tanh(),
        ]
        self.model = nn.Sequential(*layers)

        self.weights: WeightSet | None = None
        self.transforms = CycleGANTransform()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, in, H, W) -> (N, out, 4⌈H/4⌉, 4⌈W/4⌉)
        return self.model(x)

    def _forward_same_size(self, x: torch.Tensor) -> torch.Tensor:
        """Run the network so that the output has the input's size: reflection-pad the right and
        bottom up to a multiple of 4, then crop back."""
        height, width = x.shape[-2:]
        multiple = 2 ** _DOWNSAMPLING
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")   # (N, 3, 4⌈H/4⌉, 4⌈W/4⌉)
        y = self(x)
        assert y.shape[-2:] == x.shape[-2:], (y.shape, x.shape)
        return y[..., :height, :width]                           # (N, 3, H, W)

    @torch.inference_mode()
    def translate(self, inputs: Any, *, size: int | None = 256, preset: str = "trained",
                  max_pixels: int | None = MAX_PIXELS) -> Any:
        """Translate one image or a list of images (horse → zebra with the default weights).

        Args:
            inputs: a path, an http(s) URL, a PIL image, a numpy HWC uint8 array, a CHW tensor, an
                NCHW tensor, or a list of these. Images of different sizes may be mixed.
            size: the length of the shorter side after resizing (default 256, the training
                resolution); None keeps each image's own resolution.
            preset: ``"trained"`` (default) feeds the network [-1, 1], as the weights were trained;
                ``"book"`` feeds [0, 1] exactly as the book's notebook does (``Resize(256)``,
                ``ToTensor()``), which reproduces the book's figure.
            max_pixels: refuse an image whose resized height × width exceeds this (memory guard,
                see :data:`MAX_PIXELS`); None disables the guard.

        Returns:
            an RGB PIL image of the resized input's size (``(y + 1) / 2`` clamped to [0, 1] and
            rounded to 8 bits) for one input, else a list of them in input order.

        Example::

            model = torch.hub.load("org/dlwp", "cyclegan", pretrained=True)
            zebra = model.translate("horse.jpg")                  # PIL image, shorter side 256
            zebra.save("zebra.png")
        """
        from ._images import image_hw, load_images, same_size_chunks

        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {list(PRESETS)}, got {preset!r}. Use 'trained' "
                             "(the weights' own convention) or 'book' (the book's notebook).")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < MIN_SIDE):
            raise ValueError(f"size must be None or an integer of at least {MIN_SIDE} (the shorter "
                             f"side after resizing), got {size!r}. Pass e.g. size=256.")
        if max_pixels is not None and (not isinstance(max_pixels, int) or isinstance(max_pixels, bool)
                                       or max_pixels < 1):
            raise ValueError(f"max_pixels must be None or a positive integer, got {max_pixels!r}.")
        if self.input_nc != 3 or self.output_nc != 3:
            raise ValueError(f"translate works on RGB images, but this generator has input_nc="
                             f"{self.input_nc}, output_nc={self.output_nc}; call the module on tensors.")

        items, single = load_images(inputs)
        transform = self.transforms.configured(size=size, preset=preset)
        batch = []
        for index, item in enumerate(items):
            height, width = image_hw(item)
            new_h, new_w = transform.output_size(height, width)
            where = "the image" if single else f"image {index}"
            if min(new_h, new_w) < MIN_SIDE:
                raise ImageInputError(
                    f"{where} is {width}×{height} (width×height) and would be {new_w}×{new_h} after "
                    f"resizing; the generator needs at least {MIN_SIDE} pixels on each side. Pass a "
                    "larger size= or a larger image.")
            if max_pixels is not None and new_h * new_w > max_pixels:
                raise ImageInputError(
                    f"{where} would be {new_w}×{new_h} = {new_h * new_w / 1e6:.1f} megapixels at "
                    f"size={size!r}, above the memory guard of {max_pixels / 1e6:.1f} megapixels "
                    "(about 1 KiB of activations per pixel). Pass a smaller size= (e.g. size=1024), "
                    "or a larger max_pixels= if this machine has the memory.")
            batch.append(transform(item))                                   # (3, new_h, new_w)

        param = next(self.parameters())
        outputs: list[Any] = [None] * len(batch)
        with _deterministic_cudnn(param.device):
            for chunk in same_size_chunks(batch, BATCH_PIXELS):
                x = torch.stack([batch[i] for i in chunk]).to(device=param.device, dtype=param.dtype)
                y = self._forward_same_size(x)                              # (n, 3, H, W) in [-1, 1]
                for i, image in zip(chunk, _to_pil_images(y)):
                    outputs[i] = image
        return outputs[0] if single else outputs


@contextmanager
def _deterministic_cudnn(device: torch.device) -> Iterator[None]:
    """On CUDA, ask cuDNN for deterministic algorithms (the transposed convolutions may otherwise
    use atomics) and no benchmarking, restoring the caller's settings afterwards."""
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    saved = cudnn.deterministic, cudnn.benchmark
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = saved


def _to_pil_images(y: torch.Tensor) -> list[Any]:
    """(N, 3, H, W) in [-1, 1] -> N RGB PIL images: ``(y + 1) / 2``, clamped, rounded to 8 bits."""
    from PIL import Image

    pixels = ((y.float() + 1) / 2).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()                    # (N, H, W, 3)
    return [Image.fromarray(array) for array in pixels]                   # (H, W, 3) uint8 is RGB


# --------------------------------------------------------------------------- preprocessing

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
        if self.resize is not None and (not isinstance(self.resize, int) or isinstance(self.resize, bool)
                                        or self.resize < 1):
            raise ValueError(f"resize must be None or a positive integer, got {self.resize!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"mean and std must both be given or both be None, got mean={self.mean!r}, "
                             f"std={self.std!r}")
        if self.mean is not None:
            mean, std = mean_std(self.mean, self.std)
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "std", std)

    @classmethod
    def from_weights(cls, weights: WeightSet | None) -> "CycleGANTransform":
        """The transform a weight set's manifest entry describes (defaults without weights)."""
        if weights is None:
            return cls()
        return from_weight_set(cls, weights, _TRANSFORM_KEYS)

    def configured(self, *, size: int | None, preset: str) -> "CycleGANTransform":
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
        from ._images import resized_hw

        return (height, width) if self.resize is None else resized_hw(height, width, self.resize)

    def __call__(self, image: Any) -> torch.Tensor:  # PIL image or (3, H, W) -> (3, H', W') float32
        from torchvision.transforms import functional as TF

        from PIL import Image

        from ._images import image_hw, load_image, to_float_tensor

        if not isinstance(image, (Image.Image, torch.Tensor)):
            image = load_image(image)   # a path, URL or numpy array, as translate accepts
        elif isinstance(image, Image.Image) and image.mode != "RGB":
            image = load_image(image)
        height, width = image_hw(image)
        new_h, new_w = self.output_size(height, width)
        if (new_h, new_w) != (height, width):
            if isinstance(image, torch.Tensor):
                image = to_float_tensor(image)
                image = TF.resize(image, [new_h, new_w], antialias=True).clamp_(0, 1)
            else:
                image = TF.resize(image, [new_h, new_w])  # PIL bilinear, as Resize(256) does
        x = to_float_tensor(image)                                          # (3, H', W') in [0, 1]
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=x.dtype).view(3, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype).view(3, 1, 1)
            x = (x - mean) / std
        return x


# --------------------------------------------------------------------------- format adapter

def adapt_cyclegan_state_dict(raw: Any, module: nn.Module, *, source: str) -> dict[str, torch.Tensor]:
    """The ``cyclegan`` format: a plain generator state dict, either the book's 48-key layout or
    junyanz's 2018 layout, whose InstanceNorm layers also carry ``running_mean``,
    ``running_var`` and ``num_batches_tracked``. Exactly those entries (of InstanceNorm layers of
    ``module``) are dropped; everything else is passed on for a strict load."""
    if not isinstance(raw, Mapping):
        raise IncompatibleWeightsError(
            f"{source}: expected a generator state dict (a mapping of names to tensors), got "
            f"{type(raw).__name__}. Save the generator with torch.save(netG.state_dict(), path).")
    stale = {f"{name}.{stat}"
             for name, sub in module.named_modules() if isinstance(sub, nn.InstanceNorm2d)
             for stat in _INSTANCE_NORM_STATS}
    state_dict = {key: value for key, value in raw.items() if key not in stale}
    dropped = len(raw) - len(state_dict)
    if dropped:
        log.debug("%s: dropped %d InstanceNorm running-statistics entries (junyanz 2018 layout)",
                  source, dropped)
    return state_dict


# --------------------------------------------------------------------------- entrypoint

def cyclegan(*, pretrained: bool = False, weights: str | os.PathLike | None = None,
             progress: bool = True, map_location: Any = None) -> ResNetGenerator:
    """CycleGAN horse→zebra generator (Zhu et al. 2017), as run in chapter 2 of *Deep Learning
    with PyTorch*: a ResNet generator with 9 residual blocks (11.4 M parameters).

    Weight sets (``weights/manifest.json``):
        ``cyclegan.horse2zebra`` (default): the book's ``horse2zebra_0.4.0.pth`` (junyanz's
        pretrained horse2zebra generator), pinned by commit and git blob SHA-1.

    Args:
        pretrained (bool): load the default weight set (horse2zebra). Default False: random weights.
        weights (str | PathLike | None): a weight-set tag or name (``"horse2zebra"``,
            ``"cyclegan.horse2zebra"``, ``"DEFAULT"``), or the path of a local generator file in
            the book's layout or junyanz's (e.g. his zebra2horse or monet2photo
            ``latest_net_G.pth``); a local path implies pretrained. Default None.
        progress (bool): show a download progress bar. Default True.
        map_location: passed to ``torch.load`` (e.g. ``"cpu"`` or ``"cuda"``). Default None.

    Returns:
        the :class:`ResNetGenerator` in eval mode, with ``.weights``, ``.transforms`` and
        ``.translate(inputs, *, size=256, preset="trained")`` → PIL image (or a list).

    Example::

        model = torch.hub.load("org/dlwp", "cyclegan", pretrained=True)
        zebra = model.translate("horse.jpg")                 # [-1, 1] input, as trained
        book = model.translate("horse.jpg", preset="book")   # [0, 1] input, the book's figure
    """
    if not (weights is None or isinstance(weights, (str, os.PathLike, WeightSet))):
        raise TypeError(f"weights must be a weight-set name, a path or None, got {type(weights).__name__}")
    local = weights_file(weights, model=MODEL, progress=progress)
    if local is not None:
        if not isinstance(pretrained, bool):
            raise TypeError(f"pretrained must be True or False, got {pretrained!r}")
        chosen, path, source = None, local, str(local)
    else:
        chosen = resolve_weights(MODEL, pretrained=pretrained, weights=weights)
        if chosen is None:
            model = ResNetGenerator()
            model.eval()
            return model
    transforms = CycleGANTransform.from_weights(chosen)  # a bad entry fails before any download
    if chosen is not None:
        path = fetch_for(chosen, FORMAT, progress=progress)["state_dict"]
        source = f"weight set {chosen.name!r} ({path.name})"
    model = build_on_meta(ResNetGenerator)
    raw = load_weight_file(path, map_location=map_location)
    load_into(model, adapt_cyclegan_state_dict(raw, model, source=source), source=source)
    model.weights = chosen
    model.transforms = transforms
    model.eval()
    log.info("cyclegan: loaded %s", source)
    return model

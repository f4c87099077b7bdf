"""The CycleGAN horse→zebra generator of chapter 2 (junyanz's ``ResnetGenerator``, the book's
``ResNetGenerator``), with its preprocessing and postprocessing bundled.

* :class:`ResNetGenerator` is the architecture, laid out so that its ``state_dict()`` keys are
  exactly those of the book's ``horse2zebra_0.4.0.pth`` (48 tensors, ``model.1.weight`` …
  ``model.26.bias``, 11,378,179 parameters).
* :meth:`ResNetGenerator.translate` turns images into images in one call; its preprocessing is
  :class:`~dlwp_models.inputs.transforms.CycleGANTransform`, its weight format and entrypoint are
  in :mod:`.family`.

Sizes. The generator halves the resolution twice and doubles it twice, so it maps a side ``s`` to
``4 * ceil(s / 4)`` (the book's 314×256 input comes back 316×256). ``translate`` pads each input on
the right and bottom by reflection up to a multiple of 4 and crops the output back, so every image
comes back exactly the size it went in at (after the resize). For sides that are already multiples
of 4 nothing is padded and the result is the book's computation.

Presets. ``preset="trained"`` feeds [-1, 1] (how the weights were trained), ``preset="book"``
feeds [0, 1] as the book's notebook does; because the first convolution is followed by instance
norm, the two give nearly the same picture (see :class:`~dlwp_models.inputs.transforms.CycleGANTransform`).

Memory guard. Activations at full resolution take about 1 KiB per input pixel (a few 64-channel
float32 maps), so ``translate`` refuses an image whose resized size exceeds ``max_pixels``
(:data:`MAX_PIXELS`, 8.4 million pixels by default, e.g. 4096×2048: about 8 GiB) with an
:class:`~dlwp_models.ImageInputError` that says how to proceed (a smaller ``size=``, or a larger
``max_pixels=`` if the machine has the memory). It refuses rather than silently shrinking, so
that the output size always equals the resized input size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ImageInputError, ImageTooLargeError
from ...inputs.transforms import PRESETS, CycleGANTransform
from ...weights.manifest import WeightSet
from ...weights.store import CachedFile
from ..finite import check_finite

__all__ = ["ResNetGenerator", "ResNetBlock", "MAX_PIXELS", "MIN_SIDE"]

#: the largest resized input (height × width) ``translate`` accepts by default; the network
#: needs about 1 KiB of activations per input pixel (measured on CPU, float32)
MAX_PIXELS = 4096 * 2048
#: the smallest side (after resizing) the generator can take: it downsamples by 4 and its
#: residual blocks reflection-pad by 1, which needs at least 2 pixels at the lowest resolution
MIN_SIDE = 8
#: same-size images are run together in batches of at most this many pixels in all
BATCH_PIXELS = 1 << 20
_DOWNSAMPLING = 2  # stride-2 convolutions, so sides must be multiples of 2 ** _DOWNSAMPLING


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
            nn.ReflectionPad2d(1),  # 0
            nn.Conv2d(dim, dim, kernel_size=3, bias=True),  # 1
            _instance_norm(dim),  # 2
            nn.ReLU(inplace=True),  # 3
            nn.ReflectionPad2d(1),  # 4
            nn.Conv2d(dim, dim, kernel_size=3, bias=True),  # 5
            _instance_norm(dim),  # 6
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

        layers: list[nn.Module] = [  # (N, in, H, W)
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, bias=True),  # (N, 64, H, W)
            _instance_norm(ngf),
            nn.ReLU(inplace=True),
        ]
        for i in range(_DOWNSAMPLING):  # H/2, then H/4
            mult = 2**i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=True),
                _instance_norm(ngf * mult * 2),
                nn.ReLU(inplace=True),
            ]
        mult = 2**_DOWNSAMPLING
        layers += [ResNetBlock(ngf * mult) for _ in range(n_blocks)]  # (N, 256, H/4, W/4)
        for i in range(_DOWNSAMPLING):  # H/2, then H
            mult = 2 ** (_DOWNSAMPLING - i)
            layers += [
                nn.ConvTranspose2d(
                    ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1, output_padding=1, bias=True
                ),
                _instance_norm(ngf * mult // 2),
                nn.ReLU(inplace=True),
            ]
        layers += [
            nn.ReflectionPad2d(3),
            nn.Conv2d(ngf, output_nc, kernel_size=7, bias=True),  # (N, out, H, W)
            nn.Tanh(),
        ]
        self.model = nn.Sequential(*layers)

        self.weights: WeightSet | None = None
        #: the verified file the weights were loaded from (None: random weights), see :mod:`..onnx_backend`
        self.weight_file: CachedFile | None = None
        self.transforms = CycleGANTransform()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, in, H, W) -> (N, out, 4⌈H/4⌉, 4⌈W/4⌉)
        return self.model(x)

    def _forward_same_size(
        self, x: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Run the network (or ``forward``, the same network in another engine) so that the output
        has the input's size: reflection-pad the right and bottom up to a multiple of 4, then crop
        back."""
        height, width = x.shape[-2:]
        multiple = 2**_DOWNSAMPLING
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")  # (N, 3, 4⌈H/4⌉, 4⌈W/4⌉)
        y = (forward or self)(x)
        assert y.shape[-2:] == x.shape[-2:], (y.shape, x.shape)
        return y[..., :height, :width]  # (N, 3, H, W)

    @torch.inference_mode()
    def translate(
        self,
        inputs: Any,
        *,
        size: int | None = 256,
        preset: str = "trained",
        max_pixels: int | None = MAX_PIXELS,
        backend: str = "eager",
    ) -> Any:
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
            backend: ``"eager"`` (default, PyTorch) or ``"onnxruntime"``: the generator runs in ONNX
                Runtime (one graph for every size, exported on first use and cached beside the
                weight file; needs ``pip install -e ".[onnx]"``); pixels may differ by one level.

        Returns:
            an RGB PIL image of the resized input's size (``(y + 1) / 2`` clamped to [0, 1] and
            rounded to 8 bits) for one input, else a list of them in input order.

        Example::

            model = torch.hub.load("org/dlwp", "cyclegan", pretrained=True)
            zebra = model.translate("horse.jpg")                  # PIL image, shorter side 256
            zebra.save("zebra.png")
        """
        from ...inputs.images import load_images

        prepare = self.translate_preparer(size=size, preset=preset, max_pixels=max_pixels)
        forward = self._engine(backend)
        items, single = load_images(inputs)
        batch = [
            prepare(item, "the image" if single else f"image {index}")  # (3, new_h, new_w)
            for index, item in enumerate(items)
        ]
        outputs = self._translate_batch(batch, forward)
        return outputs[0] if single else outputs

    def translate_stream(
        self,
        inputs: Iterable[Any],
        *,
        size: int | None = 256,
        preset: str = "trained",
        max_pixels: int | None = MAX_PIXELS,
        batch_size: int = 4,
        backend: str = "eager",
    ) -> Iterator[tuple[Any, Any]]:
        """:meth:`translate` for any number of inputs, lazily: ``(input, outcome)`` per input, in
        order, as soon as its batch of ``batch_size`` is done. ``outcome`` is the translated PIL
        image (what ``translate`` gives for that input) or the exception the input raised (a
        damaged or missing file costs only its own answer). Inputs are decoded and resized in
        worker threads, in order, a bounded number ahead; memory holds about one batch.
        """
        from ...inputs.streaming import stream_batches

        prepare = self.translate_preparer(size=size, preset=preset, max_pixels=max_pixels)
        forward = self._engine(backend)

        def run(batch: list[torch.Tensor]) -> list[Any]:
            with torch.inference_mode():
                return self._translate_batch(batch, forward)

        on_cpu = next(self.parameters()).device.type == "cpu"
        yield from stream_batches(
            inputs, lambda item: prepare(item, "the image"), run, batch_size=batch_size, on_cpu=on_cpu
        )

    def translate_preparer(
        self, *, size: int | None = 256, preset: str = "trained", max_pixels: int | None = MAX_PIXELS
    ) -> Callable[[Any, str], torch.Tensor]:
        """After checking :meth:`translate`'s arguments: ``prepare(image, where)`` → the
        (3, H', W') network input of one decoded image (any thread), refusing an image too small
        (:class:`~dlwp_models.ImageInputError`) or too large (``ImageTooLargeError``) by name
        (``where``). :meth:`translate_batch` runs a list of them."""
        from ...inputs.images import image_hw

        if preset not in PRESETS:
            raise ValueError(
                f"preset must be one of {list(PRESETS)}, got {preset!r}. Use 'trained' "
                "(the weights' own convention) or 'book' (the book's notebook)."
            )
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < MIN_SIDE):
            raise ValueError(
                f"size must be None or an integer of at least {MIN_SIDE} (the shorter "
                f"side after resizing), got {size!r}. Pass e.g. size=256."
            )
        if max_pixels is not None and (
            not isinstance(max_pixels, int) or isinstance(max_pixels, bool) or max_pixels < 1
        ):
            raise ValueError(f"max_pixels must be None or a positive integer, got {max_pixels!r}.")
        if self.input_nc != 3 or self.output_nc != 3:
            raise ValueError(
                f"translate works on RGB images, but this generator has input_nc="
                f"{self.input_nc}, output_nc={self.output_nc}; call the module on tensors."
            )
        transform = self.transforms.configured(size=size, preset=preset)

        def prepare(item: Any, where: str) -> torch.Tensor:
            height, width = image_hw(item)
            new_h, new_w = transform.output_size(height, width)
            if min(new_h, new_w) < MIN_SIDE:
                raise ImageInputError(
                    f"{where} is {width}×{height} (width×height) and would be {new_w}×{new_h} after "
                    f"resizing; the generator needs at least {MIN_SIDE} pixels on each side. Pass a "
                    "larger size= or a larger image."
                )
            if max_pixels is not None and new_h * new_w > max_pixels:
                raise ImageTooLargeError(
                    f"{where} would be {new_w}×{new_h} = {new_h * new_w / 1e6:.1f} megapixels at "
                    f"size={size!r}, above the memory guard of {max_pixels / 1e6:.1f} megapixels "
                    "(about 1 KiB of activations per pixel). Pass a smaller size= (e.g. size=1024), "
                    "or a larger max_pixels= if this machine has the memory."
                )
            return transform(item)

        return prepare

    def translate_batch(self, batch: list[torch.Tensor], *, backend: str = "eager") -> list[Any]:
        """Inputs made by :meth:`translate_preparer` → their translated PIL images, as
        :meth:`translate` gives them (same sizes run together)."""
        forward = self._engine(backend)
        with torch.inference_mode():
            return self._translate_batch(batch, forward)

    def _engine(self, backend: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """What runs the generator for ``backend``: None for PyTorch itself, else an ONNX Runtime
        session of the same network (:mod:`dlwp_models.models.onnx_backend`); the int8 backend is
        refused (its gate is the classifiers')."""
        from ..onnx_backend import network_runner

        return network_runner(self, backend, any_size=True, meaning="pixels11")

    def _translate_batch(
        self, batch: list[torch.Tensor], forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> list[Any]:
        """Prepared (3, H_i, W_i) inputs → their PIL images: same sizes together, BATCH_PIXELS at a
        time, run by ``forward`` (default: this module)."""
        from ...inputs.images import same_size_chunks

        param = next(self.parameters())
        outputs: list[Any] = [None] * len(batch)
        with _deterministic_cudnn(param.device):
            for chunk in same_size_chunks(batch, BATCH_PIXELS):
                x = torch.stack([batch[i] for i in chunk]).to(device=param.device, dtype=param.dtype)
                y = self._forward_same_size(x, forward)  # (n, 3, H, W) in [-1, 1]
                check_finite(y, self, "the translated image")
                for i, image in zip(chunk, _to_pil_images(y)):
                    outputs[i] = image
        return outputs


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
    pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, 3)
    return [Image.fromarray(array) for array in pixels]  # (H, W, 3) uint8 is RGB

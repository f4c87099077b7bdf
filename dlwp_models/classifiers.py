"""The book's ImageNet classifiers: torchvision architectures with verified weights, their
evaluation transform, their labels and a one-call ``predict``.

Each entrypoint (``alexnet``, ``resnet101``, ...) builds the torchvision model with the keyword
arguments torchvision's own builder sets for the chosen weights, loads the weight set's file
strictly (built on the ``meta`` device, tensors assigned from a memory-mapped file), and returns
the model as an instance of a subclass of its torchvision class (``isinstance(model,
torchvision.models.ResNet)`` holds, the state dict keys are torchvision's) that also carries:

* ``weights``: the :class:`~dlwp_models.WeightSet` it was loaded from, or None;
* ``transforms``: the weights' evaluation transform (resize, center crop, to tensor, normalise);
* ``categories``: the 1000 ImageNet labels (None for a random model with another ``num_classes``);
* ``predict(inputs, topk=5)``: the book's top-k ``(label, percent)`` pairs.

torchvision is imported only when a model is built, so importing this module (as ``hubconf.py``
does for ``torch.hub.list``) stays cheap.
"""

from __future__ import annotations

import inspect
import os
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain, islice
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ._building import fetch_for, resolve_weights, weights_file
from ._checkpoints import build_on_meta, load_into, plain_state_dict
from ._errors import IncompatibleWeightsError, ManifestError
from ._manifest import WeightSet, bundled_manifest_path, get_weights, read_manifest_cached
from ._mappable import load_weight_file
from ._predictions import Prediction

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "CLASSIFIERS", "ClassifierMixin", "ClassifierTransform", "Prediction", "load_classifier",
    "adapt_torchvision_state_dict", "architecture_kwargs", "categories_of",
    "alexnet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "densenet121", "densenet161", "densenet169", "densenet201",
    "squeezenet1_0", "squeezenet1_1", "inception_v3",
]

log = logging.getLogger(__name__)

FORMAT = "torchvision"
IMAGENET1K = "imagenet1k"  # meta "categories": torchvision's ImageNet-1K labels (its weights metadata)
_IMAGENET1K_REFERENCE = "ResNet50_Weights.IMAGENET1K_V1"  # where they are read when no enum is named


# --------------------------------------------------------------------------- architectures


@dataclass(frozen=True)
class _Arch:
    """How to build one torchvision architecture, and what its pretrained weights fix."""

    title: str                         # for docstrings: "ResNet-101"
    cls_name: str                      # the torchvision.models class the builder returns
    reference: str                     # paper or source of the architecture
    builder_args: tuple[str, ...] = ()  # constructor arguments the torchvision builder supplies itself
    fixed: Mapping[str, Any] = field(default_factory=dict)      # must hold with weights
    weight_defaults: Mapping[str, Any] = field(default_factory=dict)  # with weights, unless given
    random_defaults: Mapping[str, Any] = field(default_factory=dict)  # without weights, unless given


def _resnet(depth: int) -> _Arch:
    return _Arch(f"ResNet-{depth}", "ResNet", "He et al. 2015, Deep Residual Learning for Image "
                 "Recognition, https://arxiv.org/abs/1512.03385", ("block", "layers"))


def _vgg(depth: int, bn: bool) -> _Arch:
    title = f"VGG-{depth}" + (" with batch normalization" if bn else "")
    # torchvision's _vgg forces init_weights=False when it loads weights
    return _Arch(title, "VGG", "Simonyan & Zisserman 2014, Very Deep Convolutional Networks for "
                 "Large-Scale Image Recognition, https://arxiv.org/abs/1409.1556", ("features",),
                 fixed={"init_weights": False})


def _densenet(depth: int) -> _Arch:
    return _Arch(f"DenseNet-{depth}", "DenseNet", "Huang et al. 2016, Densely Connected "
                 "Convolutional Networks, https://arxiv.org/abs/1608.06993",
                 ("growth_rate", "block_config", "num_init_features"))


_SQUEEZENET_REF = "Iandola et al. 2016, SqueezeNet, https://arxiv.org/abs/1602.07360"

_ARCHS: dict[str, _Arch] = {
    "alexnet": _Arch("AlexNet", "AlexNet", "Krizhevsky 2014, One weird trick for parallelizing "
                     "convolutional neural networks, https://arxiv.org/abs/1404.5997 (the 2012 "
                     "ILSVRC winner's architecture, as torchvision implements it)"),
    "resnet18": _resnet(18), "resnet34": _resnet(34), "resnet50": _resnet(50),
    "resnet101": _resnet(101), "resnet152": _resnet(152),
    "vgg11": _vgg(11, False), "vgg11_bn": _vgg(11, True), "vgg13": _vgg(13, False),
    "vgg13_bn": _vgg(13, True), "vgg16": _vgg(16, False), "vgg16_bn": _vgg(16, True),
    "vgg19": _vgg(19, False), "vgg19_bn": _vgg(19, True),
    "densenet121": _densenet(121), "densenet161": _densenet(161),
    "densenet169": _densenet(169), "densenet201": _densenet(201),
    "squeezenet1_0": _Arch("SqueezeNet 1.0", "SqueezeNet", _SQUEEZENET_REF, ("version",)),
    "squeezenet1_1": _Arch("SqueezeNet 1.1 (2.4x less computation than 1.0, same accuracy)",
                           "SqueezeNet", _SQUEEZENET_REF, ("version",)),
    # torchvision's inception_v3 with weights: transform_input=True unless given, aux_logits=True,
    # init_weights=False (the aux head is in the file; aux_logits=False drops it after loading)
    "inception_v3": _Arch("Inception v3 (input 299x299)", "Inception3", "Szegedy et al. 2015, "
                          "Rethinking the Inception Architecture for Computer Vision, "
                          "https://arxiv.org/abs/1512.00567",
                          fixed={"aux_logits": True, "init_weights": False},
                          weight_defaults={"transform_input": True},
                          random_defaults={"init_weights": True}),
}
CLASSIFIERS: tuple[str, ...] = tuple(_ARCHS)
_CLASS_NAMES = frozenset(arch.cls_name for arch in _ARCHS.values())


def architecture_kwargs(model: str) -> dict[str, Any]:
    """The keyword arguments torchvision's builder sets for ``model`` when it loads ImageNet
    weights, besides ``num_classes`` (which follows the weights' categories)."""
    arch = _ARCHS.get(model)
    if arch is None:
        raise ValueError(f"unknown classifier {model!r}; choose one of {', '.join(CLASSIFIERS)}.")
    return {**arch.fixed, **arch.weight_defaults}


# --------------------------------------------------------------------------- transforms


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
    def from_weights(cls, weights: WeightSet) -> "ClassifierTransform":
        """Read and check a weight set's ``transforms`` settings."""
        settings = weights.transforms

        def bad(key: str, want: str) -> ManifestError:
            return ManifestError(f"{weights.source}: weight set {weights.name!r}.transforms.{key}: expected "
                                 f"{want}, got {settings.get(key)!r}. Fix that field of the manifest.")

        for key in ("resize", "crop"):
            value = settings.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(key, "a positive number of pixels")
        for key in ("mean", "std"):
            value = settings.get(key)
            if (not isinstance(value, list) or len(value) != 3
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                    or (key == "std" and not all(v > 0 for v in value))):
                raise bad(key, "a list of 3 numbers" + (" above 0" if key == "std" else ""))
        interpolation = settings.get("interpolation", "bilinear")
        if interpolation not in ("nearest", "nearest-exact", "bilinear", "bicubic"):
            raise bad("interpolation", "one of 'nearest', 'nearest-exact', 'bilinear', 'bicubic'")
        return cls(settings["resize"], settings["crop"], tuple(float(v) for v in settings["mean"]),
                   tuple(float(v) for v in settings["std"]), interpolation)

    def __call__(self, image: "Image.Image | torch.Tensor | Any") -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms import functional as F

        is_float_rgb = (isinstance(image, torch.Tensor) and image.is_floating_point()
                        and image.dim() in (3, 4) and image.shape[-3] == 3)
        if not is_float_rgb and not (isinstance(image, Image.Image) and image.mode == "RGB"):
            from ._images import load_image

            image = load_image(image)  # grey/RGBA PIL images, uint8 tensors, arrays, paths...
        return F.normalize(_scaled(self.crop_pixels(image)), mean=list(self.mean), std=list(self.std))

    def crop_pixels(self, item: "Image.Image | torch.Tensor") -> torch.Tensor:
        """The first two steps (resize, center crop) of one item from ``_images``, exactly as
        :meth:`__call__` does them: an RGB PIL image becomes a uint8 (crop, crop, 3) HWC tensor, a
        float CHW tensor stays float CHW. :meth:`collate` does the rest for a whole batch.

        (Resampling only the crop's region of a PIL image would halve this step's time, but PIL
        then rounds some 8-bit values differently by 1, and on the calibrated random networks of
        ``benchmarks/`` that moved ResNet-101's percentages by up to 15 points; predictions are
        kept identical to the book's pipeline instead.)
        """
        import numpy as np
        from PIL import Image
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        image = F.resize(item, [self.resize], interpolation=InterpolationMode(self.interpolation), antialias=True)
        image = F.center_crop(image, [self.crop, self.crop])
        if isinstance(image, Image.Image):
            return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
        return image

    def collate(self, pixels: "Sequence[torch.Tensor]", device: torch.device, dtype: torch.dtype) -> torch.Tensor:
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

    def __repr__(self) -> str:
        return (f"ClassifierTransform(resize={self.resize}, crop={self.crop}, interpolation="
                f"{self.interpolation!r}, mean={list(self.mean)}, std={list(self.std)})")


def _scaled(pixels: torch.Tensor) -> torch.Tensor:
    """A :meth:`ClassifierTransform.crop_pixels` result as float CHW in [0, 1]: ``ToTensor``'s
    arithmetic (÷ 255) for uint8 HWC pixels; float tensors are already scaled."""
    if pixels.dtype == torch.uint8:
        return pixels.permute(2, 0, 1).contiguous().float().div(255)
    return pixels.float()


# --------------------------------------------------------------------------- categories


@lru_cache(maxsize=None)
def _torchvision_categories(reference: str) -> tuple[str, ...]:
    from torchvision.models import get_weight

    try:
        categories = get_weight(reference).meta.get("categories")
    except (ValueError, KeyError, AttributeError):
        categories = None
    return tuple(categories) if categories else ()


def categories_of(weights: WeightSet) -> list[str] | None:
    """A weight set's labels: ``meta.categories`` is ``"imagenet1k"`` (torchvision's ImageNet-1K
    labels, read from its weights metadata) or a list of strings; None when it is absent."""
    value = weights.meta.get("categories")
    if value is None:
        return None
    where = f"{weights.source}: weight set {weights.name!r}.meta"
    if value == IMAGENET1K:
        reference = weights.meta.get("torchvision_weights", _IMAGENET1K_REFERENCE)
        labels = _torchvision_categories(str(reference))
        if len(labels) != 1000:
            raise ManifestError(f"{where}.torchvision_weights: {reference!r} is not a torchvision weights "
                                "enum with the 1000 ImageNet-1K categories (this torchvision has "
                                f"{len(labels) or 'none'}). Fix that field of the manifest.")
        return list(labels)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ManifestError(f"{where}.categories: expected {IMAGENET1K!r} or a list of label strings, got "
                        f"{value!r:.80}. Fix that field of the manifest.")


# --------------------------------------------------------------------------- the returned model


class ClassifierMixin:
    """What dlwp adds to a torchvision classifier: ``weights``, ``transforms``, ``categories`` and
    :meth:`predict`. It holds no modules, so the state dict is the torchvision model's."""

    weights: WeightSet | None
    transforms: ClassifierTransform
    categories: list[str] | None

    #: images per forward pass in :meth:`predict` when ``batch_size`` is not given. Measured on a
    #: 2-core CPU: ResNet-101 is slower per image at 32 than at 16 (its activations outgrow the
    #: caches); AlexNet, whose time goes into reading its 58M fully connected weights once per
    #: batch, is faster at 32 (``_hub_class`` sets that).
    default_batch_size: int = 16

    def predict(self, inputs: Any, topk: int = 5, *, batch_size: int | None = None) -> "Prediction | list[Prediction]":
        """Top-``topk`` ``(label, percent)`` pairs per image, percent = softmax × 100 (as the book).

        ``inputs``: one image or a list of them: a path (str or Path), an http(s) URL, a PIL image,
        a numpy HWC uint8 array, or a CHW / NCHW tensor (uint8, or float in [0, 1]). One image
        gives one :class:`Prediction`; a list (or an NCHW batch) gives a list of them. Images run
        through :attr:`transforms` in batches of ``batch_size`` (default
        :attr:`default_batch_size`) on the model's device, in eval mode under
        ``torch.inference_mode()``; the model's train/eval mode is restored afterwards.

        How it is fast: files and URLs are checked first, then decoded, resized and cropped in
        worker threads (one per core, up to 4) while the model runs on the previous batch;
        scaling and normalising happen once per batch; batches go in channels-last memory (the
        faster convolution layout on CPUs). The network's input is bit for bit the book's
        pipeline's (``model(model.transforms(image))``); only the batched arithmetic rounds
        differently in the last bits of float32.

        Example::

            >>> model.predict("bobby.jpg", topk=2)
            [('golden retriever', 96.29...), ('Labrador retriever', 2.81...)]
        """
        categories = self.categories
        if not categories:
            raise ValueError("this model has no category names (model.categories is None: it was built "
                             "with a num_classes that does not match its weight set's labels). Set "
                             "model.categories to a list with one label per output first.")
        if isinstance(topk, bool) or not isinstance(topk, int):
            raise TypeError(f"topk must be an int between 1 and {len(categories)}, got {topk!r}.")
        if not 1 <= topk <= len(categories):
            raise ValueError(f"topk must be between 1 and {len(categories)} (the number of classes), "
                             f"got {topk}. Pass a value in that range.")
        if batch_size is None:
            batch_size = self.default_batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")

        from ._images import image_sources
        from ._pipeline import default_workers, ordered_map

        sources, single = image_sources(inputs)
        assert isinstance(self, nn.Module)
        param = next(self.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        transforms = self.transforms
        if isinstance(transforms, ClassifierTransform):
            prepare_one, collate = transforms.crop_pixels, transforms.collate
        else:  # the caller's own callable (e.g. a torchvision preset): image -> normalised CHW tensor
            prepare_one, collate = transforms, _stack_normalised

        def prepare(source: Any) -> list[torch.Tensor]:
            return [prepare_one(item) for item in source()]

        workers = default_workers() if len(sources) > 1 else 1
        # on the CPU, the workers prepare a whole batch while the model waits and then wait while it
        # runs (sharing the cores makes both slower); on a GPU they prepare the next batch meanwhile
        on_cpu = device.type == "cpu"
        prepared = ordered_map(prepare, sources, workers=workers, ahead=batch_size if on_cpu else 2 * batch_size,
                               overlap=not on_cpu)
        pixels = chain.from_iterable(prepared)
        modes = [(module, module.training) for module in self.modules()]
        results: list[Prediction] = []
        self.eval()
        try:
            with torch.inference_mode():
                while batch := list(islice(pixels, batch_size)):
                    logits = self(collate(batch, device, dtype))
                    if isinstance(logits, tuple):  # InceptionOutputs when scripted
                        logits = logits[0]
                    if logits.dim() != 2 or logits.shape[1] != len(categories):
                        raise ValueError(
                            f"the model outputs shape {tuple(logits.shape)}, but it has {len(categories)} "
                            "category names. Set model.categories to one label per output.")
                    percent = torch.softmax(logits.float(), dim=1) * 100
                    values, indices = percent.topk(topk, dim=1)
                    for row_values, row_indices in zip(values.tolist(), indices.tolist()):
                        results.append(Prediction((categories[i], v) for i, v in zip(row_indices, row_values)))
        finally:
            prepared.close()
            for module, training in modes:
                module.training = training
        return results[0] if single else results


def _stack_normalised(tensors: Sequence[torch.Tensor], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Per-image outputs of a caller's own transform as one channels-last batch on ``device``."""
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.dim() != 3 or t.shape[0] != 3 or not t.is_floating_point():
            raise TypeError(f"model.transforms returned {type(t).__name__}"
                            f"{f' {tuple(t.shape)} {t.dtype}' if isinstance(t, torch.Tensor) else ''}; predict "
                            "needs a normalised float (3, H, W) tensor per image. Set model.transforms to "
                            "such a callable.")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"model.transforms returned images of different sizes {sorted(shapes)}; predict "
                         "batches them, so it must crop every image to one size.")
    return torch.stack([t.to(device) for t in tensors]).to(dtype).contiguous(memory_format=torch.channels_last)


_SUBCLASSES: dict[type, type] = {}


def _hub_class(cls: type) -> type:
    """``cls`` with :class:`ClassifierMixin`, created once per class. It keeps the torchvision
    name and lives in this module (see ``__getattr__``), so pickled models load again."""
    sub = _SUBCLASSES.get(cls)
    if sub is None:
        sub = type(cls.__name__, (ClassifierMixin, cls), {
            **({"default_batch_size": 32} if cls.__name__ == "AlexNet" else {}),
            "__module__": __name__,
            "__qualname__": cls.__name__,
            "__doc__": f"torchvision.models.{cls.__name__} with dlwp's weights, transforms, categories "
                       "and predict().",
        })
        _SUBCLASSES[cls] = sub
    return sub


def __getattr__(name: str) -> type:
    """Module attribute hook (PEP 562): ``dlwp_models.classifiers.ResNet`` etc. are the model
    classes, made on first use, so that unpickling a saved model finds them in a fresh process."""
    if name in _CLASS_NAMES:
        import torchvision.models

        return _hub_class(getattr(torchvision.models, name))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- loading


_DENSENET_OLD_KEY = re.compile(  # torchvision's densenet._load_state_dict pattern (+ the counters)
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def adapt_torchvision_state_dict(state_dict: Any, *, source: str) -> "OrderedDict[str, Any]":
    """The "torchvision" format adapter: a plain state dict, with the pre-0.4 DenseNet key names
    of torchvision's own files (``denselayer1.norm.1.weight``) renamed as torchvision does
    (``denselayer1.norm1.weight``), and the batch-norm counters that files saved before PyTorch
    0.4.1 lack set to 0 (as torch does), on the device of their layer's statistics."""
    if not isinstance(state_dict, Mapping):
        raise IncompatibleWeightsError(
            f"{source}: the file holds a {type(state_dict).__name__}, not a state dict. Save the weights "
            "with torch.save(model.state_dict(), path).")
    adapted: OrderedDict[str, Any] = OrderedDict()
    for key, value in state_dict.items():
        match = _DENSENET_OLD_KEY.match(key) if isinstance(key, str) else None
        new_key = match.group(1) + match.group(2) if match else key
        if new_key in adapted:
            raise IncompatibleWeightsError(f"{source}: key {key!r} and another key both mean {new_key!r}. "
                                           "Keep one of them in the file.")
        adapted[new_key] = value
    return adapted   # missing batch-norm counters (pre-0.4.1 files) are filled by load_into


def _check_kwargs(model: str, arch: _Arch, cls: type, kwargs: Mapping[str, Any]) -> None:
    accepted = [p for p in inspect.signature(cls.__init__).parameters
                if p != "self" and p not in arch.builder_args]
    for key in kwargs:
        if key not in accepted:
            raise TypeError(f"{model}() got an unexpected keyword argument {key!r}; besides pretrained, "
                            f"weights, progress and map_location it takes those of torchvision.models."
                            f"{arch.cls_name}: {', '.join(accepted)}.")


def _weights_kwargs(model: str, arch: _Arch, weights: WeightSet, categories: list[str] | None,
                    kwargs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The architecture's arguments for these weights (what torchvision's builder sets), checking
    the caller's; returns them and whether to drop inception's aux head after loading."""
    required = dict(arch.fixed)
    if categories is not None:
        required["num_classes"] = len(categories)
    kwargs = dict(kwargs)
    drop_aux = "aux_logits" in required and kwargs.get("aux_logits", True) is False
    if drop_aux:
        kwargs["aux_logits"] = True  # the file has the aux head: load it, then remove it
    for key, want in required.items():
        if key in kwargs and kwargs[key] != want:
            if key == "num_classes":
                hint = (f"The weights' classifier has {want} outputs. To fine-tune for {kwargs[key]!r} "
                        "classes, load the weights without num_classes and replace the final layer; or "
                        "pass pretrained=False for a randomly initialised model.")
            else:
                hint = f"Leave {key} out (or pass pretrained=False to build without weights)."
            raise ValueError(f"{model}: weights {weights.name!r} need {key}={want!r}, but got "
                             f"{key}={kwargs[key]!r}. {hint}")
        kwargs[key] = want
    for key, value in arch.weight_defaults.items():
        kwargs.setdefault(key, value)
    return kwargs, drop_aux


def _weights_argument(model: str, weights: Any) -> "str | WeightSet | None":
    """Accept torchvision's own enum members (``ResNet101_Weights.IMAGENET1K_V2``) as well."""
    if weights is None or isinstance(weights, (str, WeightSet)):
        return weights
    if hasattr(weights, "url") and hasattr(weights, "meta") and isinstance(getattr(weights, "name", None), str):
        chosen = get_weights(weights.name, model)
        expected = chosen.meta.get("torchvision_weights")
        if expected is not None and expected != str(weights):
            raise ValueError(f"{model}: weights={weights} are torchvision's weights of another model; "
                             f"expected {expected} (or the tag {chosen.tag!r}).")
        return chosen
    raise TypeError(f"{model}: weights must be a tag such as 'IMAGENET1K_V1', a weight-set name or "
                    f"'DEFAULT', got {weights!r}.")


def build_for_state_dict(model: str, state_dict: Mapping[str, torch.Tensor], *, source: str,
                         **kwargs: Any) -> tuple[nn.Module, int]:
    """Build classifier ``model`` with the head ``state_dict`` has (``num_classes`` read from the
    layer whose width differs from ImageNet's 1000) and load it strictly, on the meta device by
    assignment. Returns the module (a plain torchvision one) and its number of classes."""
    import torchvision.models

    builder = getattr(torchvision.models, model)
    requested = kwargs.pop("num_classes", None)
    settings = {**architecture_kwargs(model), **kwargs}
    reference = build_on_meta(lambda: builder(weights=None, **{**settings, "num_classes": 1000}))
    num_classes = 1000
    for key, want in reference.state_dict().items():
        got = state_dict.get(key)
        if (isinstance(got, torch.Tensor) and got.dim() >= 1 and want.dim() >= 1 and want.shape[0] == 1000
                and tuple(got.shape) != tuple(want.shape)):
            num_classes = int(got.shape[0])
            break
    if requested is not None and requested != num_classes:
        raise ValueError(f"{source}: the weights have {num_classes} classes, but num_classes={requested!r} "
                         "was given. Leave num_classes out; it is read from the weights.")
    net = build_on_meta(lambda: builder(weights=None, **{**settings, "num_classes": num_classes}))
    load_into(net, adapt_torchvision_state_dict(state_dict, source=source), source=source)
    return net, num_classes


def load_classifier(model: str, *, pretrained: bool = False, weights: "str | os.PathLike | WeightSet | None" = None,
                    progress: bool = True, map_location: Any = None, sha256: str | None = None,
                    **kwargs: Any) -> nn.Module:
    """Build classifier ``model`` (one of :data:`CLASSIFIERS`); what every entrypoint calls."""
    arch = _ARCHS.get(model)
    if arch is None:
        raise ValueError(f"unknown classifier {model!r}; choose one of {', '.join(CLASSIFIERS)}.")
    import torchvision.models

    builder: Callable[..., nn.Module] = getattr(torchvision.models, model)
    cls = getattr(torchvision.models, arch.cls_name)
    _check_kwargs(model, arch, cls, kwargs)
    file = weights_file(weights, model=model, sha256=sha256, progress=progress)
    if file is not None:
        return _load_from_file(model, file, map_location=map_location, **kwargs)
    chosen = resolve_weights(model, pretrained=pretrained, weights=_weights_argument(model, weights))

    if chosen is None:
        described = get_weights("DEFAULT", model)
        categories = categories_of(described)
        kwargs = {**arch.random_defaults, **kwargs}
        net = builder(weights=None, progress=progress, **kwargs)
        width = kwargs.get("num_classes", 1000)
        if categories is not None and len(categories) != width:
            categories = None  # a custom head: its labels are the caller's to set
    else:
        described = chosen
        categories = categories_of(chosen)
        build_kwargs, drop_aux = _weights_kwargs(model, arch, chosen, categories, kwargs)
        net = build_on_meta(lambda: builder(weights=None, progress=progress, **build_kwargs))
        if set(chosen.files) != {"state_dict"}:
            raise ManifestError(f"{chosen.source}: weight set {chosen.name!r}.files: a {FORMAT!r} weight set "
                                f"has one file with role 'state_dict', got {sorted(chosen.files)}. Fix "
                                "that field of the manifest.")
        path = fetch_for(chosen, FORMAT, progress=progress)["state_dict"]
        source = f"weight set {chosen.name!r} ({path.name})"
        state_dict = adapt_torchvision_state_dict(load_weight_file(path, map_location), source=source)
        load_into(net, state_dict, source=source)
        if drop_aux:  # as torchvision's inception_v3 does for aux_logits=False
            net.aux_logits = False
            net.AuxLogits = None
        net.eval()
        log.info("loaded %s into %s", source, model)

    return _attach(net, chosen, ClassifierTransform.from_weights(described), categories)


def _attach(net: nn.Module, weights: WeightSet | None, transforms: ClassifierTransform,
            categories: list[str] | None) -> nn.Module:
    net.__class__ = _hub_class(type(net))
    net.weights = weights
    net.transforms = transforms
    net.categories = categories
    return net


def _load_from_file(model: str, path: "os.PathLike", *, map_location: Any, **kwargs: Any) -> nn.Module:
    """One-off weights from a file (a checkpoint or a plain state dict; any head width): the
    default set's transforms, and its labels when the head has as many outputs."""
    source = f"weights file {os.fspath(path)!r}"
    state_dict = plain_state_dict(load_weight_file(path, map_location), source=source)
    net, num_classes = build_for_state_dict(model, state_dict, source=source, **kwargs)
    described = get_weights("DEFAULT", model)
    categories = categories_of(described)
    if categories is not None and len(categories) != num_classes:
        categories = None  # a custom head: its labels are the caller's to set (model.categories = [...])
    log.info("loaded %s into %s (%d classes)", source, model, num_classes)
    return _attach(net.eval(), None, ClassifierTransform.from_weights(described), categories)


# --------------------------------------------------------------------------- entrypoints


def _bundled_sets() -> list[WeightSet]:
    try:
        return read_manifest_cached(bundled_manifest_path())
    except ManifestError as exc:  # keep hubconf importable; loading will report the problem
        log.warning("cannot list weight sets in docstrings: %s", exc)
        return []


def _weights_lines(model: str, sets: Sequence[WeightSet]) -> list[str]:
    lines = []
    for ws in (w for w in sets if w.model == model):
        meta, t = ws.meta, ws.transforms
        parts = [f"{ws.tag:<13}", "(default)" if ws.default else "         "]
        if "acc@1" in meta and "acc@5" in meta:
            parts.append(f"acc@1 {meta['acc@1']:.3f}  acc@5 {meta['acc@5']:.3f}")
        if "file_size_mb" in meta:
            parts.append(f"{meta['file_size_mb']:.1f} MB")
        if "resize" in t and "crop" in t:
            parts.append(f"resize {t['resize']}, crop {t['crop']}")
        lines.append("        " + "  ".join(parts))
    return lines or ["        (none found in weights/manifest.json)"]


def _docstring(model: str, sets: Sequence[WeightSet]) -> str:
    arch = _ARCHS[model]
    book = " The network chapter 2 of the book runs." if model == "resnet101" else ""
    extra = ""
    if model == "inception_v3":
        extra = (" With weights, transform_input=True unless given; aux_logits=False drops the\n"
                 "            auxiliary head after loading.")
    return f"""{arch.title} ImageNet classifier: torchvision's architecture ({arch.reference}).{book}

    Returns a ``torchvision.models.{arch.cls_name}`` that also carries ``weights`` (the weight set, or
    None), ``transforms`` (the weights' evaluation transform), ``categories`` (the 1000 ImageNet
    labels) and ``predict(inputs, topk=5)`` (top-k ``(label, percent)`` pairs, as in the book).
    With weights it is in eval mode; without, randomly initialised (still with the default set's
    transforms and categories).

    Weight sets (ImageNet-1K validation accuracy, %):
{chr(10).join(_weights_lines(model, sets))}

    Args:
        pretrained (bool): load the default weight set (IMAGENET1K_V1, the book's weights).
            Default False.
        weights (str | None): a tag ("IMAGENET1K_V2"), a full name ("{model}.imagenet1k_v1") or
            "DEFAULT". Giving pretrained=True and a different set is an error. For one-off
            sharing without a manifest entry: a local checkpoint path, or an https URL together
            with sha256= (any head width; labels only when it has 1000 outputs). Default None.
        progress (bool): show a download progress bar. Default True.
        map_location: where the loaded tensors go, as for ``torch.load`` (e.g. "cuda"). Default
            None (CPU).
        sha256 (str | None): the full sha256 of the file when ``weights`` is a URL (required
            then, refused otherwise).
        **kwargs: passed to ``torchvision.models.{arch.cls_name}``. With weights, num_classes must
            match them (1000).{extra}

    Example::

        model = torch.hub.load("org/dlwp", "{model}", pretrained=True)
        model.predict("bobby.jpg", topk=5)     # [('golden retriever', 96.3), ...]
        str(model.predict("bobby.jpg"))        # the same, as a table (what print shows)
    """


def _make_entrypoint(model: str, sets: Sequence[WeightSet]) -> Callable[..., nn.Module]:
    def entrypoint(*, pretrained: bool = False, weights: str | None = None, progress: bool = True,
                   map_location: Any = None, sha256: str | None = None, **kwargs: Any) -> nn.Module:
        return load_classifier(model, pretrained=pretrained, weights=weights, progress=progress,
                               map_location=map_location, sha256=sha256, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = model
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = _docstring(model, sets)
    return entrypoint


_sets = _bundled_sets()
alexnet = _make_entrypoint("alexnet", _sets)
resnet18 = _make_entrypoint("resnet18", _sets)
resnet34 = _make_entrypoint("resnet34", _sets)
resnet50 = _make_entrypoint("resnet50", _sets)
resnet101 = _make_entrypoint("resnet101", _sets)
resnet152 = _make_entrypoint("resnet152", _sets)
vgg11 = _make_entrypoint("vgg11", _sets)
vgg11_bn = _make_entrypoint("vgg11_bn", _sets)
vgg13 = _make_entrypoint("vgg13", _sets)
vgg13_bn = _make_entrypoint("vgg13_bn", _sets)
vgg16 = _make_entrypoint("vgg16", _sets)
vgg16_bn = _make_entrypoint("vgg16_bn", _sets)
vgg19 = _make_entrypoint("vgg19", _sets)
vgg19_bn = _make_entrypoint("vgg19_bn", _sets)
densenet121 = _make_entrypoint("densenet121", _sets)
densenet161 = _make_entrypoint("densenet161", _sets)
densenet169 = _make_entrypoint("densenet169", _sets)
densenet201 = _make_entrypoint("densenet201", _sets)
squeezenet1_0 = _make_entrypoint("squeezenet1_0", _sets)
squeezenet1_1 = _make_entrypoint("squeezenet1_1", _sets)
inception_v3 = _make_entrypoint("inception_v3", _sets)
del _sets

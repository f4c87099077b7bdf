"""The classifiers the book lists: how to build each torchvision architecture, what its
pretrained weights fix, and where its classification head is. Each classifier's name is written
here once; the family's registration (and through it the entrypoints, the CLI and the docs) read
:data:`CLASSIFIERS`."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...weights.manifest import WeightSet

__all__ = [
    "CLASSIFIERS",
    "CLASS_NAMES",
    "Arch",
    "arch_of",
    "arch_of_class",
    "architecture_kwargs",
    "check_kwargs",
    "weights_kwargs",
]


@dataclass(frozen=True)
class Arch:
    """How to build one torchvision architecture, and what its pretrained weights fix."""

    title: str  # for docstrings: "ResNet-101"
    cls_name: str  # the torchvision.models class the builder returns
    reference: str  # paper or source of the architecture
    builder_args: tuple[str, ...] = ()  # constructor arguments the torchvision builder supplies itself
    fixed: Mapping[str, Any] = field(default_factory=dict)  # must hold with weights
    weight_defaults: Mapping[str, Any] = field(default_factory=dict)  # with weights, unless given
    random_defaults: Mapping[str, Any] = field(default_factory=dict)  # without weights, unless given
    head: tuple[str, ...] = ("fc",)  # the layers that map pooled features to classes (a new head replaces them)
    last_block: tuple[str, ...] = ("layer4",)  # what `dlwp finetune --unfreeze last-block` trains with the head


def _resnet(depth: int) -> Arch:
    return Arch(
        f"ResNet-{depth}",
        "ResNet",
        "He et al. 2015, Deep Residual Learning for Image Recognition, https://arxiv.org/abs/1512.03385",
        ("block", "layers"),
    )


def _vgg(depth: int, bn: bool) -> Arch:
    title = f"VGG-{depth}" + (" with batch normalization" if bn else "")
    # torchvision's _vgg forces init_weights=False when it loads weights
    return Arch(
        title,
        "VGG",
        "Simonyan & Zisserman 2014, Very Deep Convolutional Networks for "
        "Large-Scale Image Recognition, https://arxiv.org/abs/1409.1556",
        ("features",),
        fixed={"init_weights": False},
        head=("classifier.6",),
        last_block=("classifier",),  # the fully connected layers before the head
    )


def _densenet(depth: int) -> Arch:
    return Arch(
        f"DenseNet-{depth}",
        "DenseNet",
        "Huang et al. 2016, Densely Connected Convolutional Networks, https://arxiv.org/abs/1608.06993",
        ("growth_rate", "block_config", "num_init_features"),
        head=("classifier",),
        last_block=("features.denseblock4", "features.norm5"),
    )


_SQUEEZENET_REF = "Iandola et al. 2016, SqueezeNet, https://arxiv.org/abs/1602.07360"

_ARCHS: dict[str, Arch] = {
    "alexnet": Arch(
        "AlexNet",
        "AlexNet",
        "Krizhevsky 2014, One weird trick for parallelizing "
        "convolutional neural networks, https://arxiv.org/abs/1404.5997 (the 2012 "
        "ILSVRC winner's architecture, as torchvision implements it)",
        head=("classifier.6",),
        last_block=("classifier",),  # the fully connected layers before the head
    ),
    "resnet18": _resnet(18),
    "resnet34": _resnet(34),
    "resnet50": _resnet(50),
    "resnet101": _resnet(101),
    "resnet152": _resnet(152),
    "vgg11": _vgg(11, False),
    "vgg11_bn": _vgg(11, True),
    "vgg13": _vgg(13, False),
    "vgg13_bn": _vgg(13, True),
    "vgg16": _vgg(16, False),
    "vgg16_bn": _vgg(16, True),
    "vgg19": _vgg(19, False),
    "vgg19_bn": _vgg(19, True),
    "densenet121": _densenet(121),
    "densenet161": _densenet(161),
    "densenet169": _densenet(169),
    "densenet201": _densenet(201),
    "squeezenet1_0": Arch(
        "SqueezeNet 1.0",
        "SqueezeNet",
        _SQUEEZENET_REF,
        ("version",),
        head=("classifier.1",),
        last_block=("features.12",),
    ),
    "squeezenet1_1": Arch(
        "SqueezeNet 1.1 (2.4x less computation than 1.0, same accuracy)",
        "SqueezeNet",
        _SQUEEZENET_REF,
        ("version",),
        head=("classifier.1",),
        last_block=("features.12",),  # the last Fire module
    ),
    # torchvision's inception_v3 with weights: transform_input=True unless given, aux_logits=True,
    # init_weights=False (the aux head is in the file; aux_logits=False drops it after loading)
    "inception_v3": Arch(
        "Inception v3 (input 299x299)",
        "Inception3",
        "Szegedy et al. 2015, "
        "Rethinking the Inception Architecture for Computer Vision, "
        "https://arxiv.org/abs/1512.00567",
        fixed={"aux_logits": True, "init_weights": False},
        weight_defaults={"transform_input": True},
        random_defaults={"init_weights": True},
        head=("fc", "AuxLogits.fc"),
        last_block=("Mixed_7c",),
    ),
}
CLASSIFIERS: tuple[str, ...] = tuple(_ARCHS)
CLASS_NAMES = frozenset(arch.cls_name for arch in _ARCHS.values())


def architecture_kwargs(model: str) -> dict[str, Any]:
    """The keyword arguments torchvision's builder sets for ``model`` when it loads ImageNet
    weights, besides ``num_classes`` (which follows the weights' categories)."""
    arch = arch_of(model)
    return {**arch.fixed, **arch.weight_defaults}


def arch_of_class(cls_name: str) -> Arch:
    """The architecture record of a torchvision class (``"ResNet"``): its head and last block are
    those of every model of that class."""
    return next(arch for arch in _ARCHS.values() if arch.cls_name == cls_name)


def arch_of(model: str) -> Arch:
    """The architecture record of classifier ``model``; a ValueError listing them otherwise."""
    arch = _ARCHS.get(model)
    if arch is None:
        raise ValueError(f"unknown classifier {model!r}; choose one of {', '.join(CLASSIFIERS)}.")
    return arch


def check_kwargs(model: str, arch: Arch, cls: type, kwargs: Mapping[str, Any]) -> None:
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self" and p not in arch.builder_args]
    for key in kwargs:
        if key not in accepted:
            raise TypeError(
                f"{model}() got an unexpected keyword argument {key!r}; besides pretrained, "
                f"weights, progress and map_location it takes those of torchvision.models."
                f"{arch.cls_name}: {', '.join(accepted)}."
            )


def weights_kwargs(
    model: str, arch: Arch, weights: WeightSet, categories: list[str] | None, kwargs: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
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
        if key in kwargs and kwargs[key] != want:  # num_classes is not among them: a new head is put on after loading
            raise ValueError(
                f"{model}: weights {weights.name!r} need {key}={want!r}, but got {key}={kwargs[key]!r}. "
                f"Leave {key} out (or pass pretrained=False to build without weights)."
            )
        kwargs[key] = want
    for key, value in arch.weight_defaults.items():
        kwargs.setdefault(key, value)
    return kwargs, drop_aux

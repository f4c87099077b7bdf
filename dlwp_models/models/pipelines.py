"""Models with their preprocessing, for deployment and for the ONNX Runtime backend: each takes
a uint8 image batch (N, 3, H, W) and needs neither dlwp nor torchvision once exported.

:class:`ClassifierPipeline` and :class:`CycleGANPipeline` embed the weights' transform
(``model.transforms.tensor_module()``) in front of the network; :func:`plain_module` is the model
without dlwp's attributes, as exporters want it."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..inputs.transforms import ClassifierTransform, CycleGANTransform

__all__ = ["ClassifierPipeline", "CycleGANPipeline", "plain_module"]

#: dlwp's attributes on a built model, which exporters cannot type and need not see
_DLWP_ATTRIBUTES = ("weights", "transforms", "categories", "weight_file")


class ClassifierPipeline(nn.Module):
    """uint8 images (N, 3, H, W) → logits (N, classes): the weights' evaluation transform
    (:class:`~dlwp_models.inputs.transforms.ClassifierPreprocess`, the same operations eager
    tensors go through), then the network."""

    #: the name of its output in an exported graph, and what it means (how an export is checked)
    output_name = "logits"
    output_meaning = "logits"

    def __init__(self, net: nn.Module, transform: ClassifierTransform) -> None:
        super().__init__()
        self.preprocess = transform.tensor_module()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(images))


class CycleGANPipeline(nn.Module):
    """uint8 images (N, 3, H, W) → translated images (N, 3, H', W') in [0, 1], H'×W' the resized
    size: the transform (:class:`~dlwp_models.inputs.transforms.CycleGANPreprocess`), the
    generator at the input's own size, ``(y + 1) / 2``."""

    #: the name of its output in an exported graph, and what it means (how an export is checked)
    output_name = "translated"
    output_meaning = "pixels01"

    def __init__(self, generator: nn.Module, transform: CycleGANTransform) -> None:
        super().__init__()
        self.preprocess = transform.tensor_module()
        self.generator = generator

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        height, width = x.shape[-2], x.shape[-1]
        pad_h, pad_w = (4 - height % 4) % 4, (4 - width % 4) % 4
        x = F.pad(x, [0, pad_w, 0, pad_h], mode="reflect")
        y = self.generator(x)[:, :, :height, :width]
        return ((y + 1.0) / 2.0).clamp(0.0, 1.0)


def plain_module(model: nn.Module) -> nn.Module:
    """The model without dlwp's extra attributes (which TorchScript cannot type) and, for a
    classifier, as its plain torchvision class; it shares the model's parameters and submodules."""
    base = next((c for c in type(model).__mro__ if c.__module__.startswith("torchvision.")), type(model))
    plain = copy.copy(model)
    plain.__class__ = base
    for attr in _DLWP_ATTRIBUTES:
        plain.__dict__.pop(attr, None)
    return plain

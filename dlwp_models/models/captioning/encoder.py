"""The captioning encoder: ResNet-101 in the Caffe layout, whose feature is the spatial mean of
``layer4`` (2048 numbers per image)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ...errors import IncompatibleWeightsError
from ...loading.modules import build_on_meta, load_into

__all__ = ["SpatialMean", "caffe_resnet101", "encoder_from_state_dict", "ENCODER_FEATURES"]

#: the encoder's feature size (ResNet-101's last stage)
ENCODER_FEATURES = 2048
#: the published encoder file also holds the ImageNet classifier head, which captioning never uses
_ENCODER_HEAD_KEYS = ("fc.weight", "fc.bias")


class SpatialMean(nn.Module):
    """``x.mean(3).mean(2)``: upstream's feature, in upstream's order of reduction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C)
        return x.mean(3).mean(2)


def caffe_resnet101() -> nn.Module:
    """ResNet-101 in the Caffe layout, returning the 2048-d spatial mean of ``layer4``.

    torchvision's ``ResNet(Bottleneck, [3, 4, 23, 3])`` with ``maxpool = MaxPool2d(3, 2, 0,
    ceil_mode=True)``, the stride of block 0 of layer2/3/4 moved from ``conv2`` (3×3) to ``conv1``
    (1×1), ``avgpool`` = :class:`SpatialMean` and no classifier (``fc`` is an ``Identity``). Its
    state-dict keys are torchvision's ``resnet101`` keys without ``fc.*``.
    """
    from torchvision.models.resnet import Bottleneck, ResNet  # lazily: hubconf must stay cheap

    net = ResNet(Bottleneck, [3, 4, 23, 3])
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    for layer in (net.layer2, net.layer3, net.layer4):
        layer[0].conv1.stride = (2, 2)
        layer[0].conv2.stride = (1, 1)
    net.avgpool = SpatialMean()  # (N, 2048, h, w) -> (N, 2048); the flatten after it is a no-op
    net.fc = nn.Identity()
    return net


def encoder_from_state_dict(raw: Any, *, source: str) -> nn.Module:
    """The Caffe-layout encoder loaded strictly from a ResNet-101 state dict (built on ``meta``,
    the given tensors assigned). The ImageNet classifier head (``fc.weight``, ``fc.bias``) that the
    published file carries is dropped, as it is unused; any other difference is an error naming
    the first offending key. Files without ``num_batches_tracked`` (pre-0.4.1) are accepted."""
    if not isinstance(raw, Mapping):
        raise IncompatibleWeightsError(
            f"{source}: expected a ResNet-101 state dict (a mapping of names to tensors), got "
            f"{type(raw).__name__}. Use the published encoder file (resnet101a.pth + resnet101b.pth)."
        )
    state_dict = OrderedDict((k, v) for k, v in raw.items() if k not in _ENCODER_HEAD_KEYS)
    encoder = build_on_meta(caffe_resnet101)
    load_into(encoder, state_dict, source=source)
    return encoder

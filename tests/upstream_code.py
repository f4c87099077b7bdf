"""Upstream code the tests and benchmarks compare dlwp with, written out once: the book's CycleGAN
generator (notebook p1ch2/3_cyclegan.ipynb), ImageCaptioning.pytorch's Caffe-layout ResNet-101,
and a writer of torch-0.3-style GPU checkpoints (the captioning decoder's format)."""

from __future__ import annotations

import io
from unittest import mock

import torch
from torch import nn

# --------------------------------------------------------------------------- the book's generator


class BookResNetBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv_block = self.build_conv_block(dim)

    def build_conv_block(self, dim):
        conv_block = []
        conv_block += [nn.ReflectionPad2d(1)]
        conv_block += [nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=True), nn.InstanceNorm2d(dim), nn.ReLU(True)]
        conv_block += [nn.ReflectionPad2d(1)]
        conv_block += [nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=True), nn.InstanceNorm2d(dim)]
        return nn.Sequential(*conv_block)

    def forward(self, x):
        out = x + self.conv_block(x)
        return out


class BookResNetGenerator(nn.Module):
    def __init__(self, input_nc=3, output_nc=3, ngf=64, n_blocks=9):
        assert n_blocks >= 0
        super().__init__()
        model = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=True),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(True),
        ]
        n_downsampling = 2
        for i in range(n_downsampling):
            mult = 2**i
            model += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=True),
                nn.InstanceNorm2d(ngf * mult * 2),
                nn.ReLU(True),
            ]
        mult = 2**n_downsampling
        for _ in range(n_blocks):
            model += [BookResNetBlock(ngf * mult)]
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            model += [
                nn.ConvTranspose2d(
                    ngf * mult, int(ngf * mult / 2), kernel_size=3, stride=2, padding=1, output_padding=1, bias=True
                ),
                nn.InstanceNorm2d(int(ngf * mult / 2)),
                nn.ReLU(True),
            ]
        model += [nn.ReflectionPad2d(3)]
        model += [nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0)]
        model += [nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, input):
        return self.model(input)


# --------------------------------------------------------------------------- ImageCaptioning.pytorch


def upstream_caffe_resnet101() -> nn.Module:
    """ImageCaptioning.pytorch's misc/resnet.py ``ResNet`` for resnet101, written out independently
    (with its ImageNet head, which its strict load of the published file requires)."""
    from torchvision.models.resnet import Bottleneck, ResNet

    net = ResNet(Bottleneck, [3, 4, 23, 3], num_classes=1000)
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    for i in range(2, 5):
        getattr(net, f"layer{i}")[0].conv1.stride = (2, 2)
        getattr(net, f"layer{i}")[0].conv2.stride = (1, 1)
    return net


def legacy_cuda_save(state_dict: dict[str, torch.Tensor]) -> bytes:
    """A state dict as torch 0.3 saved it from the GPU: the legacy (non-zip) format, storages of
    type torch.cuda.FloatStorage at location 'cuda:0'."""
    import torch.serialization as serialization

    buffer = io.BytesIO()
    with mock.patch.object(serialization, "location_tag", lambda storage: "cuda:0"):
        torch.save(state_dict, buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    assert data.count(b"ctorch\nFloatStorage\n") == 1 and b"cuda:0" in data
    return data.replace(b"ctorch\nFloatStorage\n", b"ctorch.cuda\nFloatStorage\n")

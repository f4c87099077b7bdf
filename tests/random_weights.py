"""Random values for generated weight files (tests and benchmarks): batch-norm layers whose
statistics and affine parameters are not the identity, so that a buffer or parameter that fails
to load changes the answer."""

from __future__ import annotations

import torch
from torch import nn


def randomise_batchnorm(net: nn.Module, *, batches_tracked: bool = False) -> None:
    """Give every ``BatchNorm2d`` of ``net`` random running statistics, weight and bias (and a
    random ``num_batches_tracked`` when asked), from torch's global generator."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                if batches_tracked:
                    module.num_batches_tracked.fill_(int(torch.randint(1, 1000, ())))
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)

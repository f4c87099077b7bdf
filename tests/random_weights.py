"""Generated weight files (tests and benchmarks): random batch-norm layers whose statistics and
affine parameters are not the identity, so that a buffer or parameter that fails to load changes
the answer; and manifest entries that give a bundled weight set's name to generated weights."""

from __future__ import annotations

import copy
import hashlib
import io
import json
from pathlib import Path
from typing import Any

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


def bundled_entries() -> dict[str, dict]:
    """The bundled manifest's entries by name."""
    path = Path(__file__).resolve().parents[1] / "weights" / "manifest.json"
    return {entry["name"]: entry for entry in json.loads(path.read_text(encoding="utf-8"))["weights"]}


def generated_entry(set_name: str, state_dict: dict[str, torch.Tensor], server: Any, *, prefix: str) -> dict:
    """The bundled weight set ``set_name``'s manifest entry with ``state_dict`` as its file (saved
    as torch does, served by the loopback ``server`` as ``<prefix>-<filename>``, pinned by sha256
    and size): the same name, transforms and meta, generated weights."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    data = buffer.getvalue()
    entry = copy.deepcopy(bundled_entries()[set_name])
    filename = entry["files"]["state_dict"]["filename"]
    entry["files"] = {
        "state_dict": {
            "filename": filename,
            "urls": [server.serve(f"{prefix}-{filename}", data)],
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }
    }
    return entry

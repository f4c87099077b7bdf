"""The result of a fine-tune is a weight set: the weight file (a plain state dict saved by
``torch.save``, which dlwp loads with ``weights_only=True`` like every weight file) and
``manifest.json`` with its one entry, the file beside it pinned by sha256 and size. Point
``DLWP_MANIFEST`` at that manifest and the weight set loads by name everywhere a weight set does;
``dlwp publish`` uploads it and writes the same entry with a release URL."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import TrainingError
from ..safe_write import write_file
from ..weights.manifest import FOLDER_MANIFEST, WeightSet, parse_manifest, read_folder_weight_set

__all__ = ["tag_for", "write_weight_set"]
_TAG = re.compile(r"[a-z0-9][a-z0-9_\-]*\Z")


def tag_for(name: str) -> str:
    """A weight-set tag from a folder name: lower case, other characters as ``_``."""
    tag = re.sub(r"[^a-z0-9_\-]", "_", name.lower()).lstrip("_-")
    if not _TAG.match(tag):
        raise TrainingError(f"cannot make a weight-set tag of {name!r}; pass --tag with letters, digits, '_' or '-'.")
    return tag


def write_weight_set(
    folder: Path, model: nn.Module, *, model_name: str, tag: str, base: WeightSet, meta: dict[str, Any]
) -> WeightSet:
    """Save ``model``'s weights and the manifest entry into ``folder``; returns the weight set as
    dlwp reads it back."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buffer)
    data = buffer.getvalue()
    sha256 = hashlib.sha256(data).hexdigest()
    filename = f"{model_name}-{tag}-{sha256[:8]}.pth"
    write_file(folder / filename, data, replace=True, durable=True, doing="write the weight file")
    entry = {
        "name": f"{model_name}.{tag}",
        "model": model_name,
        "default": False,
        "format": base.format,
        "files": {"state_dict": {"filename": filename, "sha256": sha256, "size": len(data)}},
        "transforms": copy.deepcopy(dict(base.transforms)),
        "meta": {
            "categories": list(model.categories),
            "num_classes": len(model.categories),
            "num_params": sum(p.numel() for p in model.parameters()),
            "base_weights": base.name,
            "file_size_mb": round(len(data) / 2**20, 3),
            "provenance": f"fine-tuned with `dlwp finetune` on {datetime.now(timezone.utc):%Y-%m-%d}",
            **meta,
        },
    }
    manifest = {"schema_version": 1, "weights": [entry]}
    path = folder / FOLDER_MANIFEST
    parse_manifest(manifest, str(path))  # never write a manifest that would not load
    write_file(path, (json.dumps(manifest, indent=2) + "\n").encode(), replace=True, doing="write manifest.json")
    return read_folder_weight_set(folder)

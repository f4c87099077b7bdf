"""The fine-tuning tests' shared set-up (made once per session by the fixtures ``finetune_env``,
``finetune_photos`` and ``finetune_run`` of tests/conftest.py): generated base weights (resnet18,
squeezenet1_1) served from 127.0.0.1 with a TORCH_HOME of their own, generated photos, and one
head-only fine-tune through the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torchvision
from random_weights import generated_entry, randomise_batchnorm

REPO_DIR = Path(__file__).resolve().parents[2]


class Env:
    """A TORCH_HOME and the manifest of the generated base weights (resnet18, squeezenet1_1)."""

    def __init__(self, folder: Path, manifest: Path) -> None:
        self.folder, self.home, self.manifest = folder, folder / "home", manifest
        self.home.mkdir(exist_ok=True)

    def vars(self, *manifests: Path) -> dict[str, str]:
        return {"TORCH_HOME": str(self.home), "DLWP_MANIFEST": os.pathsep.join(map(str, (self.manifest, *manifests)))}

    def subprocess_env(self, *manifests: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DLWP_")}
        return {**env, **self.vars(*manifests), "PYTHONPATH": str(REPO_DIR)}

    def cli(self, *args: str, manifests: tuple[Path, ...] = (), **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "dlwp_models", *args],
            env=self.subprocess_env(*manifests),
            capture_output=True,
            text=True,
            timeout=600,
            **kwargs,
        )


def make_env(weight_server, folder: Path) -> Env:
    torch.manual_seed(5)
    entries = []
    for name in ("resnet18", "squeezenet1_1"):
        net = getattr(torchvision.models, name)(weights=None)
        randomise_batchnorm(net)
        entries.append(generated_entry(f"{name}.imagenet1k_v1", net.state_dict(), weight_server, prefix="train"))
    manifest = folder / "base.json"
    manifest.write_text(json.dumps({"schema_version": 1, "weights": entries}))
    return Env(folder, manifest)


def make_run(env: Env, photos: Path) -> Path:
    """The head-only fine-tune of resnet18 through the command line."""
    out = env.folder / "runs" / "Colours-1"
    result = env.cli("finetune", str(photos), "--model", "resnet18", "--output-dir", str(out), "--seed", "3", "-q")
    assert result.returncode == 0, result.stderr
    assert "resnet18.colours-1: validation acc@1" in result.stdout
    assert "--weights colours-1 --topk 4 PHOTO" in result.stdout  # a usable command for four classes
    return out

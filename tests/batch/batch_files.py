"""Generated weights and image folders for the batch-job tests: squeezenet1_1, the CycleGAN
generator and NeuralTalk2 (a random Caffe ResNet-101 and a small random decoder, in the upstream
file formats), served from 127.0.0.1 under a manifest of their own."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from random_weights import generated_entry

REPO_DIR = Path(__file__).resolve().parents[2]


def _captioning_helpers():
    """tests/models/test_captioning.py (its generators of upstream-format files)."""
    module = sys.modules.get("test_captioning")
    if module is None:
        spec = importlib.util.spec_from_file_location("test_captioning", REPO_DIR / "tests/models/test_captioning.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["test_captioning"] = module
        spec.loader.exec_module(module)
    return module


@dataclass
class BatchEnv:
    """A TORCH_HOME and manifest holding the three models, for in-process and subprocess runs."""

    home: Path
    manifest: Path

    def vars(self) -> dict[str, str]:
        return {"TORCH_HOME": str(self.home), "DLWP_MANIFEST": str(self.manifest)}

    def subprocess_env(self) -> dict[str, str]:
        env = {**os.environ, **self.vars(), "PYTHONPATH": str(REPO_DIR)}
        for var in ("DLWP_MIRROR", "DLWP_OFFLINE", "RAY_ADDRESS"):
            env.pop(var, None)
        return env

    def cli(self, *args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "dlwp_models", *args],
            env=self.subprocess_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )


def make_batch_env(server, folder: Path) -> BatchEnv:
    import torchvision

    from dlwp_models.models.captioning import DecoderConfig, FCDecoder
    from dlwp_models.models.cyclegan import ResNetGenerator

    torch.manual_seed(0)
    entries = [
        generated_entry(
            "squeezenet1_1.imagenet1k_v1",
            torchvision.models.squeezenet1_1(weights=None).state_dict(),
            server,
            prefix="batch",
        ),
        generated_entry("cyclegan.horse2zebra", ResNetGenerator().state_dict(), server, prefix="batch"),
    ]
    helpers = _captioning_helpers()
    words = {i: f"w{i}" for i in range(1, 30)} | {30: "UNK"}
    torch.manual_seed(1)
    decoder = FCDecoder(DecoderConfig(vocab_size=30, input_encoding_size=16, rnn_size=16))
    with torch.no_grad():
        for p in decoder.parameters():
            p.mul_(8)  # sharper word choices, so captions differ between images
        decoder.logit.bias[0] = -1e4  # and no caption ends before it has words
    entries.append(
        helpers.coco_fc_entry(
            server,
            encoder=helpers.zip_save(helpers.random_caffe_state_dict()),
            decoder=helpers.zip_save(decoder.state_dict()),
            vocab=helpers.infos_pickle(words),
        )
    )
    (folder / "home").mkdir()
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"schema_version": 1, "weights": entries}), encoding="utf-8")
    env = BatchEnv(folder / "home", manifest)
    result = env.cli("fetch", "squeezenet1_1", "cyclegan", "neuraltalk2", "-q")  # once per module
    assert result.returncode == 0, result.stderr
    return env


def make_images(folder: Path, n: int, *, size: tuple[int, int] = (48, 64), seed: int = 0) -> list[Path]:
    """``n`` random pictures (JPEG and PNG, some in a subfolder)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        sub = folder / "sub" if i % 3 == 2 else folder
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"img{i:05d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def make_mixed_folder(folder: Path) -> tuple[list[Path], list[Path]]:
    """A folder of good pictures plus a damaged JPEG, a truncated PNG, a text file named .jpg and
    non-image files (which a folder search skips). Returns (good, bad) as a folder search lists them."""
    good = make_images(folder, 7)
    damaged = folder / "damaged.jpg"
    damaged.write_bytes(b"\xff\xd8\xff\xe0 certainly not a JPEG")
    png = io.BytesIO()
    Image.new("RGB", (40, 40), "red").save(png, format="PNG")
    truncated = folder / "sub" / "truncated.png"
    truncated.write_bytes(png.getvalue()[:60])
    (folder / "notes.txt").write_text("not a picture")
    (folder / "sub" / "data.bin").write_bytes(os.urandom(100))
    return good, [damaged, truncated]


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON Lines file, after its job's header (checked to be there, first)."""
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines and lines[0].get("dlwp_records") == 1, lines[:1]
    return lines[1:]

"""Shared machinery of the benchmarks: a throw-away workspace (its own TORCH_HOME), weight files
generated in the upstream formats (random values, the real files' keys, shapes and container
formats), served once from a 127.0.0.1 loopback server so that dlwp fetches and verifies them as it
would the real ones, then placed where torchvision's own cache looks for them; generated photos;
fresh worker processes; and statistics / table formatting.

Nothing here reaches beyond 127.0.0.1, and no figure is measured with real weights.
"""

from __future__ import annotations

import compileall
import copy
import hashlib
import io
import json
import mmap
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR / "tests"))  # tests/loopback.py: the loopback HTTP server
sys.path.insert(0, str(REPO_DIR))
from upstream_code import legacy_cuda_save  # noqa: E402 - tests/upstream_code.py

WORKER = BENCH_DIR / "_worker.py"
MB = 1 << 20
UNUSED_URL = "http://127.0.0.1:9/unused/"  # never contacted: fetches after setup run with DLWP_OFFLINE=1


def log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- statistics / rows


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


@dataclass
class Row:
    """One line of the results table."""

    figure: str
    ours: str
    baseline: str
    ratio: str
    target: str
    met: str  # "yes", "no" or "—" (informative figure)
    note: str = ""


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"


def yes_no(ok: bool) -> str:
    return "yes" if ok else "no"


# --------------------------------------------------------------------------- images


def photo(width: int, height: int, seed: int = 0):
    """A deterministic picture with structure (gradients, a few shapes) and texture (noise)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    phase = rng.uniform(0, 6.28, 3)
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 160
    base += 40 * np.sin(np.stack([x / (37 + 9 * seed % 11), y / 23.0, (x - y) / 51.0], axis=-1) + phase)
    for _ in range(6):  # a few solid blobs, so that images differ in content, not only in noise
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.2) * height
        mask = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        base[mask] = rng.uniform(0, 255, 3)
    noise = rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def make_photos(folder: Path, count: int, width: int, height: int, seed0: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"photo{i:03d}_{width}x{height}.jpg"
        if not path.exists():
            photo(width, height, seed0 + i).save(path, quality=90)
        paths.append(str(path))
    return paths


# --------------------------------------------------------------------------- generated weight files


def _bundled() -> dict[str, dict]:
    from dlwp_models.weights.manifest import bundled_manifest_path

    return {e["name"]: e for e in json.loads(bundled_manifest_path().read_text())["weights"]}


def _calibration_batch(count: int = 8):
    """Generated photos (not the benchmark's), through the book's transform: (count, 3, 224, 224)."""
    import torch
    from _book import book_transform

    preprocess = book_transform()
    return torch.stack([preprocess(photo(400, 300, 1000 + i)) for i in range(count)])


def classifier_state_dict(name: str, seed: int = 0, *, calibrate: bool = True) -> dict:
    """A torchvision state dict of ``name`` with random values.

    Purely random values make a degenerate classifier (ResNet-101's logits explode to ~1e6, so
    every softmax is one-hot and the other 999 classes tie at 0 %; AlexNet's are ~0.01 wide, so
    every class is ~0.1 %), on which "same top-5, within 0.5 points" means nothing. With
    ``calibrate``, the batch-norm statistics are measured on generated photos (train-mode passes,
    cumulative average) and the last layer is scaled so that the median top-1 probability on them
    is about 60 %, like a trained ImageNet classifier's. Still random weights, same keys, shapes
    and file format.
    """
    import torch
    import torchvision
    from torch import nn

    torch.manual_seed(seed)
    net = getattr(torchvision.models, name)(weights=None)
    from random_weights import randomise_batchnorm  # tests/random_weights.py

    randomise_batchnorm(net)
    if calibrate:
        x = _calibration_batch()
        norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        with torch.no_grad():
            if norms:
                for m in norms:
                    m.reset_running_stats()
                    m.momentum = None
                net.train()
                net(x)
                for m in norms:
                    m.momentum = 0.1
            net.eval()
            logits = net(x)
            last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]

            def top1(scale: float) -> float:
                return float((logits * scale).softmax(1).max(1).values.median())

            lo, hi = 1e-3, 1e5
            for _ in range(60):
                mid = (lo * hi) ** 0.5
                lo, hi = (mid, hi) if top1(mid) < 0.6 else (lo, mid)
            last.weight.mul_(lo)
            last.bias.mul_(lo)
    return net.state_dict()


def cyclegan_state_dict(seed: int = 0) -> dict:
    """The book's 48-key generator layout, random values."""
    import torch
    from _book import ResNetGenerator

    torch.manual_seed(seed)
    return dict(ResNetGenerator().state_dict())


def caffe_encoder_state_dict(seed: int = 0) -> dict:
    """Random values under the published encoder's keys: Caffe-layout ResNet-101 with its ImageNet
    head and no ``num_batches_tracked`` (a pre-0.4.1 save), as a plain dict (no version metadata)."""
    import torch
    from _book import upstream_caffe_resnet101

    torch.manual_seed(seed)
    net = upstream_caffe_resnet101()
    from random_weights import randomise_batchnorm  # tests/random_weights.py

    randomise_batchnorm(net)
    return {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


def fc_decoder_state_dict(seed: int = 0) -> dict:
    """The published FC decoder's keys and sizes (9,488 outputs, 512 wide), random values."""
    import torch

    from dlwp_models.models.captioning import DecoderConfig, FCDecoder

    torch.manual_seed(seed)
    dec = FCDecoder(DecoderConfig())
    with torch.no_grad():
        for p in dec.parameters():  # wider than the default init, so that captions vary with the image
            p.normal_(0, 0.15)
    return {k: v.clone() for k, v in dec.state_dict().items()}


def legacy_save(state_dict: dict) -> bytes:
    buffer = io.BytesIO()
    import torch

    torch.save(state_dict, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def zip_save(state_dict: dict) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


def infos_pickle(vocab_size: int = 9487) -> bytes:
    """An infos file with the published vocabulary's shape ({'1': word, ..., '9487': 'UNK'}) in
    pickle protocol 0 (text, as Python 2 wrote it), plus some plain bookkeeping."""
    words = {str(i): f"w{i}" for i in range(1, vocab_size)}
    words[str(vocab_size)] = "UNK"
    infos = {
        "vocab": words,
        "iter": 215000,
        "epoch": 38,
        "opt_summary": {"caption_model": "fc", "rnn_size": 512, "input_encoding_size": 512},
    }
    return pickle.dumps(infos, protocol=0)


def sha256_hex(data) -> str:
    return hashlib.sha256(data).hexdigest()


def git_blob_sha1(data) -> str:
    h = hashlib.sha1(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


# --------------------------------------------------------------------------- the workspace


@dataclass
class Workspace:
    """A temporary folder with its own TORCH_HOME, a layered manifest and generated files."""

    root: Path
    entries: list[dict] = field(default_factory=list)
    file_sizes: dict[str, int] = field(default_factory=dict)  # model -> bytes its load reads
    keep: bool = False

    @classmethod
    def create(cls, parent: str | None = None, keep: bool = False) -> Workspace:
        root = Path(tempfile.mkdtemp(prefix="dlwp-bench-", dir=parent))
        (root / "torch_home" / "hub" / "checkpoints").mkdir(parents=True)
        # Byte-compile the checkout as any import after a user's first one finds it (torchvision's
        # installed modules are compiled too); a PYTHONDONTWRITEBYTECODE=1 environment would
        # otherwise make every timed process compile dlwp from source (~20 ms on these machines).
        compileall.compile_dir(REPO_DIR / "dlwp_models", quiet=1)
        compileall.compile_file(REPO_DIR / "hubconf.py", quiet=1)
        (root / "files").mkdir()
        return cls(root, keep=keep)

    @property
    def torch_home(self) -> Path:
        return self.root / "torch_home"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def tv_cache(self) -> Path:
        return self.torch_home / "hub" / "checkpoints"

    @property
    def dlwp_cache(self) -> Path:
        return self.torch_home / "hub" / "checkpoints" / "dlwp"

    def env(self, *, offline: bool = True) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DLWP_") and k != "PYTHONDONTWRITEBYTECODE"}
        env.update(
            TORCH_HOME=str(self.torch_home),
            DLWP_MANIFEST=str(self.manifest),
            PYTHONPATH=os.pathsep.join([str(BENCH_DIR), str(REPO_DIR)]),
            PYTHONWARNINGS="ignore",
        )
        if offline:
            env["DLWP_OFFLINE"] = "1"
        return env

    def _write_manifest(self) -> None:
        self.manifest.write_text(json.dumps({"schema_version": 1, "weights": self.entries}, indent=1))

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- publishing ---------------------------------------------------------------------------
    def publish(self, models: list[str], *, encoder_format: str = "legacy") -> None:
        """Generate, serve (loopback), fetch once through dlwp (which verifies and records them),
        and link the classifier files into torchvision's cache. Afterwards every load is warm.
        ``models``: any classifier with a bundled default set, cyclegan, neuraltalk2."""
        from loopback import LoopbackServer

        bundled = _bundled()

        def classifier(model: str) -> bool:
            return bundled.get(f"{model}.imagenet1k_v1", {}).get("format") == "torchvision"

        server = LoopbackServer()
        held: list[tuple[Any, mmap.mmap]] = []

        def serve(name: str, data: bytes | None = None, path: Path | None = None) -> tuple[str, Any]:
            if path is None:
                path = self.root / "files" / name
                path.write_bytes(data)
            handle = open(path, "rb")
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            held.append((handle, mapped))
            view = memoryview(mapped)
            return server.serve(name, view), view

        try:
            for model in models:
                t0 = time.perf_counter()
                if classifier(model):
                    entry = copy.deepcopy(bundled[f"{model}.imagenet1k_v1"])
                    filename = entry["files"]["state_dict"]["filename"]
                    path = self.root / "files" / filename
                    import torch

                    torch.save(classifier_state_dict(model), path)  # zip format, like torchvision's files
                    url, view = serve(filename, path=path)
                    entry["files"] = {
                        "state_dict": {
                            "filename": filename,
                            "urls": [url],
                            "sha256": sha256_hex(view),
                            "size": len(view),
                        }
                    }
                    self.file_sizes[model] = len(view)
                elif model == "cyclegan":
                    entry = copy.deepcopy(bundled["cyclegan.horse2zebra"])
                    filename = entry["files"]["state_dict"]["filename"]
                    data = legacy_save(cyclegan_state_dict())  # the book's 0.4.0-era file
                    url, view = serve(filename, data)
                    entry["files"] = {
                        "state_dict": {"filename": filename, "urls": [url], "git_blob_sha1": git_blob_sha1(data)}
                    }
                    self.file_sizes[model] = len(data)
                elif model == "neuraltalk2":
                    entry = copy.deepcopy(bundled["neuraltalk2.coco_fc"])
                    encoder = (legacy_save if encoder_format == "legacy" else zip_save)(caffe_encoder_state_dict())
                    decoder = legacy_cuda_save(fc_decoder_state_dict())
                    vocab = infos_pickle()
                    cut = len(encoder) // 2 + 4097
                    files = entry["files"]
                    parts = []
                    for part, chunk in zip(files["encoder"]["parts"], (encoder[:cut], encoder[cut:])):
                        url, _ = serve(part["filename"], chunk)
                        parts.append(
                            {"filename": part["filename"], "urls": [url], "git_blob_sha1": git_blob_sha1(chunk)}
                        )
                    files["encoder"] = {"filename": files["encoder"]["filename"], "parts": parts}
                    for role, data in (("decoder", decoder), ("vocab", vocab)):
                        url, _ = serve(files[role]["filename"], data)
                        files[role] = {
                            "filename": files[role]["filename"],
                            "urls": [url],
                            "git_blob_sha1": git_blob_sha1(data),
                        }
                    files["vocab"]["size"] = len(vocab)
                    self.file_sizes[model] = len(encoder) + len(decoder) + len(vocab)
                else:
                    raise ValueError(model)
                self.entries = [e for e in self.entries if e["name"] != entry["name"]] + [entry]
                log(
                    f"  generated {model} weights ({self.file_sizes[model] / MB:.1f} MB) in "
                    f"{time.perf_counter() - t0:.1f}s"
                )
            self._write_manifest()
            code = (
                "import sys, dlwp_models as d\n"
                "for m in sys.argv[1:]:\n"
                "    d.fetch(d.get_weights('DEFAULT', m), progress=False)\n"
            )
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", code, *models],
                env=self.env(offline=False),
                check=True,
                cwd=REPO_DIR,
                timeout=600,
            )
            log(f"  fetched through dlwp from 127.0.0.1 (verified, cached) in {time.perf_counter() - t0:.1f}s")
        finally:
            server.close()
            for handle, mapped in held:
                try:
                    mapped.close()
                except BufferError:
                    pass
                handle.close()
        for model in models:  # torchvision reads <TORCH_HOME>/hub/checkpoints/<upstream file name>
            if classifier(model):
                filename = next(e for e in self.entries if e["model"] == model)["files"]["state_dict"]["filename"]
                link = self.tv_cache / filename
                link.unlink(missing_ok=True)
                os.link(self._in_cache(filename), link)
        for path in (self.root / "files").iterdir():  # served copies are no longer needed
            path.unlink()

    def cached(self, model: str) -> dict[str, Path]:
        """The cached files of a model's default weight set (after :meth:`publish`)."""
        entry = next(e for e in self.entries if e["model"] == model)
        return {role: self._in_cache(spec["filename"]) for role, spec in entry["files"].items()}

    def _in_cache(self, filename: str) -> Path:
        """Where dlwp's cache keeps ``filename``: in the folder named for what pins it."""
        return next(self.dlwp_cache.glob(f"*/{filename}"))


# --------------------------------------------------------------------------- worker processes


class WorkerError(RuntimeError):
    pass


def run_worker(task: str, args: dict, env: dict[str, str], timeout: float = 600) -> dict:
    """Run ``_worker.py task`` in a fresh interpreter; returns its JSON answer with ``t_spawn``
    (the wall-clock time just before the process was started) added."""
    t_spawn = time.time()
    proc = subprocess.run(
        [sys.executable, str(WORKER), task, json.dumps(args)],
        env=env,
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise WorkerError(f"worker {task} {args} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise WorkerError(f"worker {task} printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    result = json.loads(lines[-1])
    result["t_spawn"] = t_spawn
    result["t_exit"] = time.time()
    return result

"""Every Python block of README.md and docs/*.md runs, as a reader would run it, against generated
weights: resnet101, cyclegan and neuraltalk2 in their upstream formats, served from 127.0.0.1 under
the bundled sets' names, the checkout linked as the cached hub repository ``org/dlwp``, and photos
named as the blocks name them. Each block runs in a fresh process in which nothing beyond
127.0.0.1 can be reached (so ``torch.hub.load("org/dlwp", ...)`` takes the cached repository, as
it does on an offline machine)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_DIR
from PIL import Image
from random_weights import generated_entry

DOCUMENTS = [REPO_DIR / "README.md", *sorted((REPO_DIR / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)

#: run before each block: only loopback connections (torch.hub's look-up of GitHub fails as offline)
_LOOPBACK_ONLY = """\
import socket as _socket
_connect = _socket.create_connection
def _loopback_only(address, *args, **kwargs):
    if address[0] not in ("127.0.0.1", "localhost"):
        raise OSError(f"the docs test reaches only 127.0.0.1, not {address[0]}")
    return _connect(address, *args, **kwargs)
_socket.create_connection = _loopback_only
"""


def python_blocks() -> list[tuple[str, int, str]]:
    """(document, block number, code) of every Python block."""
    found = []
    for path in DOCUMENTS:
        for number, match in enumerate(_BLOCK.finditer(path.read_text(encoding="utf-8")), start=1):
            found.append((str(path.relative_to(REPO_DIR)), number, match.group(1)))
    return found


@pytest.fixture(scope="module")
def docs_env(batch_env, weight_server, tmp_path_factory):
    """A TORCH_HOME with the checkout as the cached ``org/dlwp`` repository, and a manifest with
    generated resnet101, cyclegan and neuraltalk2 weights under the bundled names."""
    import torchvision

    folder = tmp_path_factory.mktemp("docs")
    torch.manual_seed(0)
    entry = generated_entry(
        "resnet101.imagenet1k_v1", torchvision.models.resnet101(weights=None).state_dict(), weight_server, prefix="docs"
    )
    theirs = json.loads(batch_env.manifest.read_text())["weights"]
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"schema_version": 1, "weights": [*theirs, entry]}), encoding="utf-8")
    home = folder / "torch_home"
    (home / "hub").mkdir(parents=True)
    (home / "hub" / "org_dlwp_main").symlink_to(REPO_DIR)
    work = folder / "work"
    work.mkdir()
    rng = np.random.default_rng(0)
    for photo in ("bobby.jpg", "horse.jpg"):
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(work / photo)
    return {"TORCH_HOME": str(home), "DLWP_MANIFEST": str(manifest), "PYTHONPATH": str(REPO_DIR)}, work


def test_the_documents_have_python_blocks_to_run():
    names = {document for document, _, _ in python_blocks()}
    assert {"README.md", "docs/usage.md", "docs/serving.md", "docs/batch.md", "docs/weights.md"} <= names


@pytest.mark.parametrize(
    ("document", "number", "code"), python_blocks(), ids=[f"{d}#{n}" for d, n, _ in python_blocks()]
)
def test_each_python_block_runs(docs_env, document, number, code):
    env, work = docs_env
    result = subprocess.run(
        [sys.executable, "-c", _LOOPBACK_ONLY + code],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": str(work), **env},
    )
    assert result.returncode == 0, f"{document}, Python block {number}:\n{result.stderr[-3000:]}"

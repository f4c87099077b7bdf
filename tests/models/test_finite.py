"""Damaged weights say so (issue 25): a cached weight file corrupted in place, its size and date
restored (so a load trusts it), gives NaN outputs; predict then raises an error naming
``fetch --verify``, which re-hashes the cache and fetches the damaged file again."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

import dlwp_models
from dlwp_models.errors import NonFiniteOutputError


@pytest.fixture
def cached_squeezenet(make_manifest, file_entry, hub_home):
    import copy
    import json

    import torchvision
    from conftest import REPO_DIR

    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), buffer)
    bundled = {e["name"]: e for e in json.loads((REPO_DIR / "weights" / "manifest.json").read_text())["weights"]}
    entry = copy.deepcopy(bundled["squeezenet1_1.imagenet1k_v1"])
    entry["files"] = {"state_dict": file_entry("finite-squeezenet.pth", buffer.getvalue())}
    make_manifest([entry])
    return dlwp_models.fetch("squeezenet1_1.imagenet1k_v1", progress=False)["state_dict"]


def corrupt_in_place(path) -> None:
    """Overwrite the middle of the largest tensor's bytes with 0xFF (NaN in float32) inside the
    checkpoint's zip archive, keeping its size and times: the file still loads."""
    import struct
    import zipfile

    st = os.stat(path)
    with zipfile.ZipFile(path) as archive:
        largest = max(archive.infolist(), key=lambda info: info.file_size)
    with open(path, "r+b") as fh:
        fh.seek(largest.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", fh.read(4))
        start = largest.header_offset + 30 + name_length + extra_length
        fh.seek(start + largest.file_size // 4)
        fh.write(b"\xff" * (largest.file_size // 2))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_damaged_weights_are_named_and_fetch_verify_mends_them(cached_squeezenet, capsys):
    from dlwp_models.cli.main import main
    from hubconf import squeezenet1_1

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    good = squeezenet1_1(pretrained=True, progress=False).predict(image)
    corrupt_in_place(cached_squeezenet)
    damaged = squeezenet1_1(pretrained=True, progress=False)  # trusted: same size and date
    with pytest.raises(NonFiniteOutputError, match=r"NaN or infinite.*fetch --verify"):
        damaged.predict(image)
    assert main(["fetch", "squeezenet1_1", "--verify", "-q"]) == 0
    assert "the cached file was damaged; fetching it again" in capsys.readouterr().err
    assert squeezenet1_1(pretrained=True, progress=False).predict(image) == good
    assert main(["fetch", "squeezenet1_1", "--verify", "-q"]) == 0
    assert "damaged" not in capsys.readouterr().err

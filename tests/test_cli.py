"""The command line: list, info, fetch; failures are one paragraph and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dlwp_models.__main__ import main
from conftest import REPO_DIR, sha256_of

DATA = os.urandom(200_000)


@pytest.fixture
def test_manifest(make_manifest, file_entry):
    return make_manifest([{"name": "testnet.v1", "model": "testnet", "default": True, "format": "torchvision",
                           "files": {"state_dict": file_entry("cli-net.pth", DATA)},
                           "meta": {"acc@1": 12.5}}])


def test_list_shows_weight_sets(test_manifest, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "cyclegan.horse2zebra" in out and "testnet.v1" in out and "12.500" in out


def test_list_for_one_model(test_manifest, capsys):
    assert main(["list", "--model", "testnet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("testnet.v1")


def test_info_by_model_name_shows_default_set(test_manifest, capsys):
    assert main(["info", "testnet"]) == 0
    out = capsys.readouterr().out
    assert "testnet.v1" in out and sha256_of(DATA) in out and "not cached" in out


def test_fetch_downloads_and_prints_paths(test_manifest, capsys, hub_home):
    assert main(["fetch", "testnet.v1", "-q"]) == 0
    out = capsys.readouterr().out
    path = hub_home / "hub" / "checkpoints" / "dlwp" / "cli-net.pth"
    assert out.strip() == f"testnet.v1 state_dict: {path}"
    assert path.read_bytes() == DATA


def test_fetch_needs_names_or_all(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fetch"])
    assert info.value.code == 2


def test_failures_are_one_paragraph_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR), "TORCH_HOME": str(tmp_path), "DLWP_OFFLINE": "1"}
    env.pop("DLWP_MANIFEST", None)
    result = subprocess.run([sys.executable, "-m", "dlwp_models", "fetch", "cyclegan"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("dlwp: error: horse2zebra_0.4.0.pth is not in the cache")
    assert "DLWP_OFFLINE" in result.stderr


def test_unknown_name_is_an_error_listing_choices(capsys):
    assert main(["info", "resnet9000"]) == 1
    err = capsys.readouterr().err
    assert "unknown weights 'resnet9000'" in err and "cyclegan.horse2zebra" in err

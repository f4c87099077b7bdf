"""dlwp installs anywhere: a wheel, an sdist and a plain (non-editable) install carry the bundled
manifest byte for byte, and the installed command line works from any directory."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_DIR

MANIFEST = REPO_DIR / "weights" / "manifest.json"


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the files a clone of this repository has (tracked and untracked, not ignored)."""
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO_DIR)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout ({listed.stderr.strip()}); the packaging tests copy the repository's files")
    copy = tmp_path_factory.mktemp("checkout")
    for name in filter(None, listed.stdout.split("\0")):
        source = REPO_DIR / name
        if source.is_file():
            target = copy / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    return copy


def build_wheel(source: Path, out: Path) -> Path:
    built = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-w",
            str(out),
            str(source),
        ]
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = out.glob("dlwp_models-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(checkout, tmp_path_factory) -> Path:
    """The wheel built from the checkout, installed with --no-deps --target into a folder."""
    wheel = build_wheel(checkout, tmp_path_factory.mktemp("wheel"))
    target = tmp_path_factory.mktemp("site")
    done = run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(wheel),
        ]
    )
    assert done.returncode == 0, done.stderr
    return target


def dlwp(target: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target)}
    return run([sys.executable, "-m", "dlwp_models", *args], cwd=cwd, env=env)


def test_setup_cfg_lists_every_package_folder():
    config = configparser.ConfigParser()
    config.read(REPO_DIR / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    folders = {
        ".".join(init.parent.relative_to(REPO_DIR).parts)
        for init in (REPO_DIR / "dlwp_models").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert listed == folders | {"dlwp_models._bundled"}
    assert config["options"]["package_dir"].split() == ["dlwp_models._bundled", "=", "weights"]


def test_wheel_carries_the_manifest_byte_for_byte(installed):
    assert (installed / "dlwp_models" / "_bundled" / "manifest.json").read_bytes() == MANIFEST.read_bytes()


def test_installed_package_lists_and_describes_weights_from_any_directory(installed, tmp_path):
    where = run(
        [sys.executable, "-c", "import dlwp_models; print(dlwp_models.__file__)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(installed)},
    )
    assert Path(where.stdout.strip()).is_relative_to(installed)  # not the checkout's copy
    listed = dlwp(installed, "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "resnet101.imagenet1k_v1" in listed.stdout and "neuraltalk2.coco_fc" in listed.stdout
    info = dlwp(installed, "info", "resnet101", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "63fe2227b86e8f1f2063f43a75c84d195911b6a0eace650907dd3dc62dd49a0a" in info.stdout
    assert f"from manifest {installed / 'dlwp_models' / '_bundled' / 'manifest.json'}" in info.stdout
    version = dlwp(installed, "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == "dlwp 0.1.0"


def test_installed_console_script_runs(installed, tmp_path):
    script = installed / "bin" / "dlwp"
    assert script.is_file()
    done = run(
        [sys.executable, str(script), "list", "--model", "cyclegan"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(installed)},
    )
    assert done.returncode == 0, done.stderr
    assert "cyclegan.horse2zebra" in done.stdout


def test_sdist_and_a_wheel_built_from_it_carry_the_manifest(checkout, tmp_path):
    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    built = run([sys.executable, "-c", code, str(tmp_path)], cwd=checkout)
    assert built.returncode == 0, built.stderr
    sdist = tmp_path / built.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/weights/manifest.json"))
        assert tar.extractfile(member).read() == MANIFEST.read_bytes()
        tar.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    wheel = build_wheel(unpacked, tmp_path / "from-sdist")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("dlwp_models/_bundled/manifest.json") == MANIFEST.read_bytes()


def test_a_checkout_reads_its_own_manifest():
    from dlwp_models.weights.manifest import bundled_manifest_path

    assert bundled_manifest_path() == MANIFEST

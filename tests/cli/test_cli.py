"""The command line: list, info, fetch; failures are one paragraph and a non-zero exit."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_DIR, sha256_of
from PIL import Image

from dlwp_models.cli.main import main

DATA = os.urandom(200_000)


@pytest.fixture
def test_manifest(make_manifest, file_entry):
    return make_manifest(
        [
            {
                "name": "testnet.v1",
                "model": "testnet",
                "default": True,
                "format": "torchvision",
                "files": {"state_dict": file_entry("cli-net.pth", DATA)},
                "meta": {"acc@1": 12.5},
            }
        ]
    )


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
    (path,) = (hub_home / "hub" / "checkpoints" / "dlwp").glob("sha256-*/cli-net.pth")
    assert out.strip() == f"testnet.v1 state_dict: {path}"
    assert path.read_bytes() == DATA


def test_fetch_needs_names_or_all(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fetch"])
    assert info.value.code == 2


def test_failures_are_one_paragraph_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR), "TORCH_HOME": str(tmp_path), "DLWP_OFFLINE": "1"}
    env.pop("DLWP_MANIFEST", None)
    result = subprocess.run(
        [sys.executable, "-m", "dlwp_models", "fetch", "cyclegan"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("dlwp: error: horse2zebra_0.4.0.pth is not in the cache")
    assert "DLWP_OFFLINE" in result.stderr


def test_unknown_name_is_an_error_listing_choices(capsys):
    assert main(["info", "resnet9000"]) == 1
    err = capsys.readouterr().err
    assert "unknown weights 'resnet9000'" in err and "cyclegan.horse2zebra" in err


# ----------------------------------------------------------------------------- model commands

BUNDLED = {e["name"]: e for e in json.loads((REPO_DIR / "weights" / "manifest.json").read_text())["weights"]}


@pytest.fixture
def served_models(make_manifest, file_entry, tmp_path):
    """squeezenet1_1 and cyclegan weights with random values, under their bundled entries."""
    import torchvision

    from dlwp_models.models.cyclegan import ResNetGenerator

    torch.manual_seed(0)
    entries, models = [], {}
    for set_name, net in (
        ("squeezenet1_1.imagenet1k_v1", torchvision.models.squeezenet1_1(weights=None)),
        ("cyclegan.horse2zebra", ResNetGenerator()),
    ):
        buf = io.BytesIO()
        torch.save(net.state_dict(), buf)
        entry = copy.deepcopy(BUNDLED[set_name])
        entry["files"] = {"state_dict": file_entry(entry["files"]["state_dict"]["filename"], buf.getvalue())}
        entries.append(entry)
        models[entry["model"]] = net.eval()
    make_manifest(entries)
    return models


@pytest.fixture
def photos(tmp_path, weight_server):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (90, 130, 3), dtype=np.uint8))
    path = tmp_path / "bobby.jpg"
    image.save(path)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return path, weight_server.serve("cli-photo.png", buf.getvalue(), "image/png")


def test_classify_prints_top_k_per_image_for_paths_and_urls(served_models, photos, capsys):
    path, url = photos
    assert main(["classify", str(path), url, "--model", "squeezenet1_1", "--topk", "3", "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path}:" and lines[5] == f"{url}:"
    assert lines[1].split() == ["rank", "label", "percent"] and len(lines) == 10
    from hubconf import squeezenet1_1

    expected = squeezenet1_1(pretrained=True, progress=False).predict(str(path), topk=3)
    assert lines[2].startswith("   1  " + expected[0][0]) and f"{expected[0][1]:6.2f} %" in lines[2]


def test_classify_failure_is_one_line_and_unknown_model_is_usage(served_models, tmp_path, capsys):
    assert main(["classify", str(tmp_path / "absent.jpg"), "--model", "squeezenet1_1", "-q"]) == 1
    assert capsys.readouterr().err.startswith("dlwp: error: image file")
    with pytest.raises(SystemExit) as info:
        main(["classify", str(tmp_path / "absent.jpg"), "--model", "resnet9"])
    assert info.value.code == 2


def test_translate_writes_a_zebra_png_per_input(served_models, photos, tmp_path, capsys):
    path, url = photos
    out = tmp_path / "out"
    assert main(["translate", str(path), "-o", str(out), "--size", "64", "--preset", "book", "-q"]) == 0
    written = out / "bobby_zebra.png"
    assert capsys.readouterr().out.strip() == f"{path} -> {written}"
    assert Image.open(written).size == (92, 64)  # 130x90 resized to a shorter side of 64


def test_backend_onnxruntime_classifies_and_translates_like_eager(served_models, photos, tmp_path, capsys):
    path, url = photos
    assert main(["classify", str(path), url, "--model", "squeezenet1_1", "-q"]) == 0
    eager = capsys.readouterr().out.splitlines()
    assert main(["classify", str(path), url, "--model", "squeezenet1_1", "--backend", "onnxruntime", "-q"]) == 0
    fast = capsys.readouterr().out.splitlines()
    assert [line.rsplit(None, 2)[0] for line in fast] == [line.rsplit(None, 2)[0] for line in eager]  # labels
    percents = [(float(a.split()[-2]), float(b.split()[-2])) for a, b in zip(fast, eager) if a.endswith("%")]
    assert len(percents) == 10 and all(abs(a - b) <= 0.05 for a, b in percents)
    for backend in ("eager", "onnxruntime"):
        assert (
            main(["translate", str(path), "-o", str(tmp_path / backend), "--size", "64", "--backend", backend, "-q"])
            == 0
        )
    capsys.readouterr()
    a, b = (
        np.asarray(Image.open(tmp_path / backend / "bobby_zebra.png"), dtype=np.int16)
        for backend in ("eager", "onnxruntime")
    )
    assert a.shape == b.shape == (64, 92, 3) and int(np.abs(a - b).max()) <= 1


@pytest.mark.parametrize("argv", [["classify", "{dir}"], ["translate", "{dir}", "-o", "{out}"], ["caption", "{dir}"]])
def test_bad_images_fail_before_any_download(argv, tmp_path, capsys, monkeypatch, weight_server):
    monkeypatch.setenv("DLWP_OFFLINE", "1")  # a download would fail differently
    args = [a.format(dir=tmp_path, out=tmp_path / "out") for a in argv]
    assert main([*args, "-q"]) == 1
    assert "is a directory, not an image" in capsys.readouterr().err


def test_translate_refuses_two_inputs_with_one_output_name(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert main(["translate", str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b" / "x.png"), "-o", str(tmp_path)]) == 1
    assert "both be written to" in capsys.readouterr().err


def test_translate_options_reach_the_library(served_models, photos, tmp_path, capsys):
    """--preset and --size change the picture: the CLI's file equals the library's translate with
    those options, computed here, and differs from what the defaults would give."""
    from hubconf import cyclegan

    path, _ = photos
    model = cyclegan(pretrained=True, progress=False)
    book = np.asarray(model.translate(str(path), size=48, preset="book"))
    trained = np.asarray(model.translate(str(path), size=48))
    assert not np.array_equal(book, trained)  # the fixture can tell the presets apart
    out = tmp_path / "out"
    assert main(["translate", str(path), "-o", str(out), "--size", "48", "--preset", "book", "-q"]) == 0
    written = np.asarray(Image.open(out / "bobby_zebra.png"))
    assert np.array_equal(written, book) and written.shape == (48, 69, 3)


def test_classify_options_reach_the_library(served_models, photos, capsys):
    """--topk and --weights: the printed labels are the library's for that many and those weights."""
    path, _ = photos
    from hubconf import squeezenet1_1

    expected = squeezenet1_1(weights="IMAGENET1K_V1", progress=False).predict(str(path), topk=7)
    assert (
        main(["classify", str(path), "--model", "squeezenet1_1", "--weights", "IMAGENET1K_V1", "--topk", "7", "-q"])
        == 0
    )
    rows = capsys.readouterr().out.splitlines()[2:]
    labels = [re.fullmatch(r"\s*\d+  (.*?)\s+[\d.]+ %", row).group(1) for row in rows]
    assert labels == expected.labels and len(labels) == 7


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--topk", "0", "must be a positive integer"),
        ("--topk", "-3", "must be a positive integer"),
        ("--topk", "two", "invalid positive_int value: 'two'"),
    ],
)
def test_counts_below_one_are_usage_errors_naming_the_option(option, value, problem, capsys):
    with pytest.raises(SystemExit) as info:
        main(["classify", "horse.jpg", option, value])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: argument {option}: {problem}")


def test_a_count_of_one_is_accepted():
    from dlwp_models.cli.arguments import positive_int

    assert positive_int("1") == 1 and positive_int("16") == 16


# ----------------------------------------------------------------------------- output files (issue 14)


def test_translate_never_writes_through_a_planted_symlink(served_models, photos, tmp_path, capsys):
    path, _ = photos
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / ".bobby_zebra.png.partial").symlink_to(victim)  # the old fixed temporary name
    assert main(["translate", str(path), "-o", str(out), "--size", "64", "-q"]) == 0
    assert victim.read_text() == "precious"
    assert Image.open(out / "bobby_zebra.png").size == (92, 64)
    assert sorted(p.name for p in out.iterdir()) == [".bobby_zebra.png.partial", "bobby_zebra.png"]


def test_translate_refuses_to_overwrite_unless_asked(served_models, photos, tmp_path, capsys, monkeypatch):
    path, _ = photos
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "bobby_zebra.png"
    existing.write_bytes(b"an earlier result")
    assert main(["translate", str(path), "-o", str(out), "--size", "64", "-q"]) == 1
    err = capsys.readouterr().err
    assert "already exists; pass --overwrite" in err and "Traceback" not in err
    assert existing.read_bytes() == b"an earlier result"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    existing.unlink()
    existing.symlink_to(victim)  # --overwrite replaces a link, never its target
    assert main(["translate", str(path), "-o", str(out), "--size", "64", "--overwrite", "-q"]) == 0
    assert victim.read_text() == "precious" and not existing.is_symlink()
    assert Image.open(existing).size == (92, 64)

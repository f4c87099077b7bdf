"""``dlwp finetune`` and ``dlwp evaluate`` end to end, on generated photos (four classes that differ
in colour and texture) and generated body weights served from 127.0.0.1: the head-only fine-tune
learns the classes, its result is a weight set that evaluates as the log says, the same seed gives
the same weights (also after a SIGKILL and ``--resume``), and bad data is named, never a traceback."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from photos import make_photos

from dlwp_models.cli.main import main
from dlwp_models.hub import build

REPO_DIR = Path(__file__).resolve().parents[2]
LABELS = ["blue", "green", "red", "stripes"]


def log_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def entry_of(folder: Path) -> dict:
    (entry,) = json.loads((folder / "manifest.json").read_text())["weights"]
    return entry


@pytest.fixture
def active(finetune_env, monkeypatch):
    for key, value in finetune_env.vars().items():
        monkeypatch.setenv(key, value)
    return finetune_env


# --------------------------------------------------------------------------- the result


def test_head_only_finetune_learns_the_classes_and_leaves_a_weight_set(finetune_run, finetune_env):
    rows = log_rows(finetune_run)
    epochs = [row for row in rows if "epoch" in row]
    assert [row["epoch"] for row in epochs] == list(range(1, 11)) and {row["stage"] for row in epochs} == {"head"}
    assert epochs[-1]["val_acc"] >= 95.0
    assert all(set(row) >= {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"} for row in epochs)
    assert epochs[0]["lr"] < epochs[1]["lr"] and epochs[-1]["lr"] < epochs[1]["lr"]  # warm-up, then cosine decay
    entry = entry_of(finetune_run)
    spec = entry["files"]["state_dict"]
    assert entry["name"] == "resnet18.colours-1" and entry["default"] is False and "urls" not in spec
    weight_file = finetune_run / spec["filename"]
    assert hashlib.sha256(weight_file.read_bytes()).hexdigest() == spec["sha256"]
    assert weight_file.stat().st_size == spec["size"]
    state = torch.load(weight_file, weights_only=True)
    assert state["fc.weight"].shape == (4, 512)
    meta = entry["meta"]
    assert meta["categories"] == LABELS and meta["base_weights"] == "resnet18.imagenet1k_v1" and meta["seed"] == 3
    assert meta["val_acc@1"] == epochs[-1]["val_acc"] and meta["data"]["train"]["images"] == 64
    base = json.loads(finetune_env.manifest.read_text())["weights"][0]
    assert entry["transforms"] == base["transforms"]
    for name in ("confusion.png", "curves.png", "confusion.csv", "model_card.md", "model_card.json", "checkpoint.pt"):
        assert (finetune_run / name).stat().st_size > 0, name
    assert (finetune_run / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_weight_set_loads_by_name_and_its_body_is_the_base_weights(finetune_run, finetune_env, monkeypatch):
    for key, value in finetune_env.vars(finetune_run / "manifest.json").items():
        monkeypatch.setenv(key, value)
    model = torch.hub.load(str(REPO_DIR), "resnet18", source="local", weights="colours-1", progress=False)
    base = build("resnet18", pretrained=True, progress=False)
    assert model.categories == LABELS and model.weights.name == "resnet18.colours-1"
    assert torch.equal(model.layer4[1].conv2.weight, base.layer4[1].conv2.weight)
    assert not torch.equal(model.fc.weight[:4], base.fc.weight[:4])


def test_info_says_where_the_weight_file_lies(finetune_run, finetune_env, monkeypatch, capsys):
    for key, value in finetune_env.vars(finetune_run / "manifest.json").items():
        monkeypatch.setenv(key, value)
    assert main(["info", "resnet18.colours-1"]) == 0
    spec = entry_of(finetune_run)["files"]["state_dict"]
    assert f"beside the manifest: {finetune_run / spec['filename']}" in capsys.readouterr().out


def test_evaluate_reports_the_accuracy_of_the_training_log(finetune_run, finetune_env, finetune_photos, tmp_path):
    rows = log_rows(finetune_run)
    last = [row for row in rows if "epoch" in row][-1]
    assert rows[-1] == {"evaluation": {"acc@1": last["val_acc"], "images": 24}}
    result = finetune_env.cli(
        "evaluate", "resnet18", str(finetune_photos / "val"), "--weights", "colours-1",
        "--output-dir", str(tmp_path / "ev"), "-q", manifests=(finetune_run / "manifest.json",),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    acc = float(re.search(r"\[eager\]: acc@1 ([\d.]+) %", result.stdout).group(1))
    assert acc == pytest.approx(last["val_acc"], abs=0.005)
    card = json.loads((tmp_path / "ev" / "model_card.json").read_text())
    assert card["accuracy"]["acc@1"] == pytest.approx(last["val_acc"], abs=1e-3)
    assert card["data"]["images"] == 24 and card["parameters"] == 11_178_564 and card["gflops_per_image"] > 3
    assert card["backends"]["eager"]["images_per_s"] > 0
    lines = (tmp_path / "ev" / "confusion.csv").read_text().splitlines()
    assert lines[0] == "true \\ predicted,blue,green,red,stripes,other" and len(lines) == 5
    assert sum(int(x) for line in lines[1:] for x in line.split(",")[1:]) == 24


def test_the_same_seed_gives_the_same_weights_from_the_feature_cache(
    finetune_run, finetune_photos, active, tmp_path, caplog
):
    from dlwp_models.train import FinetuneSettings, finetune

    with caplog.at_level(logging.INFO, logger="dlwp_models.train.finetune"):
        again = finetune(
            finetune_photos, tmp_path / "again", FinetuneSettings(model="resnet18", seed=3, tag="colours-1")
        )
    assert "features: 88 from the cache, 0 computed" in caplog.text
    assert (
        entry_of(again.folder)["files"]["state_dict"]["sha256"]
        == entry_of(finetune_run)["files"]["state_dict"]["sha256"]
    )
    other = finetune(finetune_photos, tmp_path / "other", FinetuneSettings(model="resnet18", seed=4, epochs=2))
    assert (
        entry_of(other.folder)["files"]["state_dict"]["sha256"]
        != entry_of(finetune_run)["files"]["state_dict"]["sha256"]
    )


def test_resume_after_sigkill_ends_with_the_same_weights(finetune_env, finetune_photos, tmp_path):
    args = ["--model", "squeezenet1_1", "--unfreeze", "last-block", "--head-epochs", "1", "--epochs", "2", "-q"]
    args += ["--batch-size", "16", "--tag", "deep"]
    whole = finetune_env.cli("finetune", str(finetune_photos), "--output-dir", str(tmp_path / "whole"), *args)
    assert whole.returncode == 0, whole.stderr
    kill_after = random.Random().choice([1, 2])  # after the head-only epoch, or the first deeper one
    out = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "dlwp_models", "finetune", str(finetune_photos), "--output-dir", str(out), *args],
        env=finetune_env.subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "log.jsonl").exists() and len(log_rows(out)) >= kill_after:
            break
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists(), f"the run finished before epoch {kill_after}"
    assert 0 < len(log_rows(out)) < 3
    again = finetune_env.cli("finetune", str(finetune_photos), "--output-dir", str(out), *args)
    assert again.returncode != 0 and "--resume" in again.stderr  # a folder in use is never overwritten
    resumed = finetune_env.cli("finetune", str(finetune_photos), "--output-dir", str(out), "--resume", *args)
    assert resumed.returncode == 0, resumed.stderr
    assert (
        entry_of(out)["files"]["state_dict"]["sha256"] == entry_of(tmp_path / "whole")["files"]["state_dict"]["sha256"]
    ), f"killed after epoch {kill_after}"
    assert [r for r in log_rows(out) if "epoch" in r] == [
        {**r, "seconds": r2["seconds"]} for r, r2 in zip(log_rows(tmp_path / "whole"), log_rows(out)) if "epoch" in r
    ]
    changed = finetune_env.cli(
        "finetune", str(finetune_photos), "--output-dir", str(out), "--resume", *args[:-2], "--seed", "9"
    )
    assert changed.returncode == 1 and "seed (0 then, 9 now)" in changed.stderr


# --------------------------------------------------------------------------- bad data


def finetune_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["finetune", *args, "--model", "squeezenet1_1", "-q", "--epochs", "1"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"a": 3, "b": 0}, "class folder {root}/b has no photos"),
        ({"a": 4}, "has one class ('a')"),
        ({"a": 4, "b": 1}, "too little data for the split: class 'b' has 1 photo"),
        ({}, "has no class folders"),
    ],
)
def test_bad_data_is_named_before_any_training(layout, message, tmp_path, capsys, active):
    root = tmp_path / "data"
    root.mkdir()
    for name, count in layout.items():
        (root / name).mkdir()
        for i in range(count):
            (root / name / f"{i}.jpg").write_bytes(b"x")
    code, _, err = finetune_cli(capsys, str(root), "--output-dir", str(tmp_path / "out"))
    assert code == 1 and message.format(root=root) in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_unreadable_files_are_skipped_and_listed_or_stop_the_run(tmp_path, capsys, active):
    root = make_photos(tmp_path / "data", {"": 5}, classes={"red": (200, 40, 40), "blue": (40, 60, 200)})
    (root / "red" / "notes.txt").write_text("not a photo")
    (root / "blue" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    code, out, err = finetune_cli(capsys, str(root), "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    assert f"skipped {root / 'red' / 'notes.txt'}" in err and f"skipped {root / 'blue' / 'broken.jpg'}" in err
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["weights"][0]["meta"]["data"]["skipped"] == 2
    threads = threading.active_count()
    code, _, err = finetune_cli(capsys, str(root), "--output-dir", str(tmp_path / "stop"), "--on-error", "stop")
    assert code == 1 and "cannot be used" in err and "--on-error skip" in err
    assert threading.active_count() == threads  # the decoding threads stopped with the run
    assert not (tmp_path / "stop" / "manifest.json").exists()


def test_duplicates_across_train_and_val_are_warned_about(tmp_path, capsys, active, caplog):
    root = make_photos(tmp_path / "data", {"train": 3, "val": 2}, classes={"red": (200, 40, 40), "blue": (40, 60, 200)})
    (root / "val" / "red" / "copy.jpg").write_bytes((root / "train" / "red" / "0.jpg").read_bytes())
    with caplog.at_level(logging.WARNING):
        code, _, err = finetune_cli(capsys, str(root), "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    assert "1 validation photo(s) are byte-for-byte copies of training photos" in caplog.text
    assert str(root / "val" / "red" / "copy.jpg") in caplog.text


def test_a_full_disk_is_said_and_leaves_no_half_written_file(tmp_path, capsys, active, monkeypatch):
    import dlwp_models.safe_write as safe_write

    root = make_photos(tmp_path / "data", {"": 3}, classes={"red": (200, 40, 40), "blue": (40, 60, 200)})
    out = tmp_path / "out"
    real = safe_write.create_exclusive

    def full(path):
        if str(path).startswith(str(out)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path)

    monkeypatch.setattr(safe_write, "create_exclusive", full)
    code, _, err = finetune_cli(capsys, str(root), "--output-dir", str(out))
    assert code == 1 and "could not write the checkpoint" in err and "the disk is full" in err
    assert sorted(p.name for p in out.iterdir()) == []


# --------------------------------------------------------------------------- evaluate's data


def test_evaluate_maps_imagenet_wordnet_folders_and_reads_a_csv(tmp_path, capsys, active):
    from dlwp_models.models.classifiers.categories import imagenet_wnids

    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and wnids[0] == "n01440764" and wnids[-1] == "n15075141"
    root = make_photos(
        tmp_path / "imagenet", {"": 2}, classes={"n01440764": (90, 90, 90), "n15075141": (240, 240, 240)}
    )
    assert main(["evaluate", "squeezenet1_1", str(root), "-q"]) == 0
    out, _ = capsys.readouterr()
    assert "on 4 photos" in out and "n01440764:" in out
    flat = tmp_path / "flat"
    flat.mkdir()
    rows = ["image,label"]
    for i, path in enumerate(sorted(root.rglob("*.jpg"))):
        (flat / f"{i}.jpg").write_bytes(path.read_bytes())
        rows.append(f"{i}.jpg,{'tench' if path.parent.name == 'n01440764' else 'toilet tissue'}")
    (flat / "labels.csv").write_text("\n".join(rows) + "\n")
    assert main(["evaluate", "squeezenet1_1", str(flat), "--labels-csv", str(flat / "labels.csv"), "-q"]) == 0
    assert "on 4 photos" in capsys.readouterr().out
    (root / "cats").mkdir()
    (root / "cats" / "a.jpg").write_bytes((root / "n01440764" / "0.jpg").read_bytes())
    assert main(["evaluate", "squeezenet1_1", str(root), "-q"]) == 1
    assert "the model has no class named 'cats'" in capsys.readouterr().err

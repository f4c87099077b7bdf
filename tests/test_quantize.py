"""``dlwp quantize`` and the int8 backend, on the fine-tuned resnet18 of tests/train (generated
photos, generated body weights): the gate keeps an accurate graph and refuses a broken
calibration, the cache key follows the calibration photos, a damaged graph is never used, two
processes make one graph, and the int8 answers agree with float32 in Python, a batch job and the
server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from serve_support import RunningServer, ServeEnv

from dlwp_models.cli.main import main
from dlwp_models.errors import DataError, QuantizationError
from dlwp_models.hub import build
from dlwp_models.models.int8_backend import INT8, quantized_graph

pytest.importorskip("onnxruntime", reason='the int8 backend needs the onnx extra: pip install -e ".[onnx]"')
REPO_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(finetune_env, finetune_run, tmp_path, monkeypatch) -> dict[str, str]:
    """A cache of this test's own, where the fine-tuned weight set (and the base sets) load."""
    env = {**finetune_env.vars(finetune_run / "manifest.json"), "TORCH_HOME": str(tmp_path / "home")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "home").mkdir()
    return env


@pytest.fixture(scope="module")
def calibration(finetune_photos, tmp_path_factory) -> Path:
    """Twelve training photos, three per class: enough to calibrate the colours, quick to run."""
    folder = tmp_path_factory.mktemp("calibration")
    for path in sorted((finetune_photos / "train").rglob("*.jpg")):
        if int(path.stem) < 3:
            (folder / f"{path.parent.name}-{path.name}").write_bytes(path.read_bytes())
    return folder


def quantize(photos: Path, calibrate: Path, **kwargs):
    from dlwp_models.quantize import quantize as run

    kwargs.setdefault("eval_dir", photos / "val")
    return run("resnet18", weights="colours-1", calibrate=calibrate, **kwargs)


def val_photos(photos: Path) -> list[Path]:
    return sorted((photos / "val").rglob("*.jpg"))


def int8_files(model) -> list[Path]:
    return sorted(model.weight_file.path.parent.glob("*.int8.*.onnx"))


def test_the_gate_keeps_an_accurate_graph_and_int8_agrees_with_float32(
    home, finetune_photos, calibration, tmp_path, capsys
):
    report = quantize(finetune_photos, calibration)
    assert report["reused"] is False and report["top1_agreement"] >= 99.0 and report["photos"] == 24
    assert report["acc@1_fp32"] - report["acc@1_int8"] <= 0.5 and report["calibration_photos"] == 12
    assert Path(report["artefact"]).is_file() and report["method"] == "percentile"
    model = build("resnet18", weights="colours-1", progress=False)
    pictures = val_photos(finetune_photos)
    eager = model.predict(pictures, topk=1)
    int8 = model.predict(pictures, topk=1, backend=INT8)
    assert [p.labels for p in int8] == [p.labels for p in eager]  # 24 of 24: ≥ 99 %
    again = quantize(finetune_photos, calibration)
    assert again["reused"] is True and again["artefact"] == report["artefact"]
    out = tmp_path / "labels.jsonl"
    code = main(["classify", "--model", "resnet18", "--weights", "colours-1", "--backend", INT8, "--topk", "1",
                 "--output", str(out), "-q", *map(str, pictures)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    assert {r["input"]: r["predictions"][0]["label"] for r in records} == {
        str(p): e[0][0] for p, e in zip(pictures, eager)
    }
    assert main(["evaluate", "resnet18", str(finetune_photos / "val"), "--weights", "colours-1",
                 "--backend", "eager", "--backend", INT8, "-q"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert f"[{INT8}]: acc@1 {report['acc@1_int8']:.2f} %" in printed


def test_a_constant_calibration_image_is_refused_and_nothing_kept(home, finetune_photos, tmp_path):
    folder = tmp_path / "grey"
    folder.mkdir()
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(folder / "grey.png")
    from dlwp_models.quantize import quantize as run

    with pytest.raises(QuantizationError, match="fails its accuracy gate: top-1 agreement with float32") as info:
        run("resnet18", weights="colours-1", calibrate=folder, eval_dir=finetune_photos / "val", method="minmax")
    assert "nothing was kept" in str(info.value)
    model = build("resnet18", weights="colours-1", progress=False)
    assert int8_files(model) == []
    with pytest.raises(DataError, match="give more, or --eval"):  # one photo cannot be split for the measurement
        run("resnet18", weights="colours-1", calibrate=folder)


def test_the_key_follows_the_calibration_photos_and_the_newest_graph_is_used(
    home, finetune_photos, calibration, tmp_path
):
    first = quantize(finetune_photos, calibration, method="minmax")
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for path in sorted(calibration.iterdir())[::2]:
        (fewer / path.name).write_bytes(path.read_bytes())
    from dlwp_models.quantize import quantize as run

    second = run("resnet18", weights="colours-1", calibrate=fewer, eval_dir=finetune_photos / "val", method="minmax")
    assert second["artefact"] != first["artefact"] and second["reused"] is False
    model = build("resnet18", weights="colours-1", progress=False)
    assert len(int8_files(model)) == 2
    assert str(quantized_graph(model.weight_file, (224, 224))[0]) == second["artefact"]


def test_a_damaged_graph_is_never_used_and_is_made_again(home, finetune_photos, calibration):
    report = quantize(finetune_photos, calibration, method="minmax")
    artefact = Path(report["artefact"])
    artefact.write_bytes(artefact.read_bytes()[: artefact.stat().st_size // 2])
    model = build("resnet18", weights="colours-1", progress=False)
    with pytest.raises(
        QuantizationError, match="no int8 graph of .* make it once with `python -m dlwp_models quantize"
    ):
        model.predict(val_photos(finetune_photos)[0], backend=INT8)
    again = quantize(finetune_photos, calibration, method="minmax")
    assert again["reused"] is False and again["artefact"] == report["artefact"]
    assert model.predict(val_photos(finetune_photos)[0], topk=1, backend=INT8).labels


def test_two_processes_quantizing_at_once_make_one_graph(home, finetune_photos, calibration):
    command = [sys.executable, "-m", "dlwp_models", "quantize", "resnet18", "--weights", "colours-1",
               "--calibrate", str(calibration), "--eval", str(finetune_photos / "val"),
               "--method", "minmax", "-q"]  # fmt: skip
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DLWP_")}, **home, "PYTHONPATH": str(REPO_DIR)}
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    runs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    said = sorted("reused" if "int8 graph reused" in out else "made" for out, _ in outputs)
    assert said == ["made", "reused"]
    model = build("resnet18", weights="colours-1", progress=False)
    assert len(int8_files(model)) == 1


def test_the_int8_backend_says_what_it_needs(home, finetune_photos):
    image = val_photos(finetune_photos)[0]
    base = build("squeezenet1_1", pretrained=True, progress=False)
    with pytest.raises(QuantizationError, match="quantize squeezenet1_1 --weights squeezenet1_1.imagenet1k_v1"):
        base.predict(image, backend=INT8)
    fresh = build("squeezenet1_1", pretrained=True, labels=["a", "b", "c"], progress=False)
    with pytest.raises(QuantizationError, match="not a verified weight set's"):
        fresh.predict_crops([torch.zeros(224, 224, 3, dtype=torch.uint8)], topk=1, backend=INT8)
    with pytest.raises(QuantizationError, match="runs on the CPU .* this model is on meta"):
        base.to("meta").predict(image, backend=INT8)
    generator = build("cyclegan", progress=False)
    with pytest.raises(ValueError, match="runs the classifiers"):
        generator.translate(image, backend=INT8)


def test_the_server_answers_with_the_int8_backend(home, finetune_photos, finetune_run, calibration):
    quantize(finetune_photos, calibration, method="minmax")
    pictures = val_photos(finetune_photos)[:4]
    eager = build("resnet18", weights="colours-1", progress=False).predict(pictures, topk=1)
    env = ServeEnv(Path(home["TORCH_HOME"]), finetune_run / "manifest.json")
    server = RunningServer(env, ("resnet18",), "--weights", "resnet18=colours-1", "--backend", INT8)
    try:
        for picture, expected in zip(pictures, eager):
            response = httpx.post(
                f"{server.url}/v1/classify?topk=1",
                content=picture.read_bytes(),
                headers={"Content-Type": "image/jpeg"},
                timeout=60,
            )
            assert response.status_code == 200, response.text
            assert response.json()["predictions"][0]["label"] == expected[0][0]
    finally:
        server.stop()


def test_the_server_refuses_int8_at_load_when_no_graph_was_made(home, finetune_run):
    env = ServeEnv(Path(home["TORCH_HOME"]), finetune_run / "manifest.json")
    with pytest.raises(RuntimeError, match="did not start") as info:
        RunningServer(env, ("resnet18",), "--weights", "resnet18=colours-1", "--backend", INT8)
    assert "no int8 graph of resnet18-colours-1" in str(info.value)
    assert "python -m dlwp_models quantize resnet18" in str(info.value)


def test_a_kept_graph_answers_to_each_runs_gate_and_photos(home, finetune_photos, calibration):
    first = quantize(finetune_photos, calibration, method="minmax")
    with pytest.raises(QuantizationError, match="the graph kept earlier stays, but this run refuses it"):
        quantize(finetune_photos, calibration, method="minmax", min_agreement=100.5)
    other = quantize(finetune_photos, calibration, method="minmax", eval_dir=finetune_photos / "train")
    assert other["reused"] is True and other["artefact"] == first["artefact"]
    assert other["photos"] == 64 and other["eval_source"] == str(finetune_photos / "train")

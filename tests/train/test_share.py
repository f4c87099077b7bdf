"""Sharing a fine-tune: ``dlwp publish RUN_FOLDER`` uploads its weight set to a (loopback) GitHub
release, and a collaborator with only the team's manifest gets the trained model's answers in
Python (torch.hub), a batch job, the server and the ONNX Runtime backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from github_api import FakeGitHub
from PIL import Image
from serve_support import RunningServer, ServeEnv

from dlwp_models.cli.main import main
from dlwp_models.hub import build

REPO_DIR = Path(__file__).resolve().parents[2]

REPO = "team/dlwp"


@pytest.fixture(scope="module")
def github(weight_server):
    server = FakeGitHub(weight_server)
    yield server
    server.close()


@pytest.fixture(scope="module")
def team(finetune_run, github, tmp_path_factory):
    """The run published to release 'colours' of team/dlwp, listed in the team's manifest."""
    manifest = tmp_path_factory.mktemp("team") / "team.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GITHUB_API_URL", github.api_url)
        mp.setenv("GITHUB_TOKEN", github.token)
        code = main(["publish", str(finetune_run), "--repo", REPO, "--release", "colours", "--manifest", str(manifest)])
    assert code == 0
    return manifest


@pytest.fixture(scope="module")
def trained(finetune_run, finetune_env):
    """The fine-tuned model as its trainer has it (from the run folder's manifest)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in finetune_env.vars(finetune_run / "manifest.json").items():
            mp.setenv(key, value)
        return build("resnet18", weights="colours-1", progress=False)


def val_photos(finetune_photos) -> list:
    return sorted((finetune_photos / "val").rglob("*.jpg"))


def test_the_published_entry_is_the_runs_with_a_release_url(finetune_run, team, github):
    (entry,) = json.loads(team.read_text())["weights"]
    (local,) = json.loads((finetune_run / "manifest.json").read_text())["weights"]
    spec = entry["files"]["state_dict"]
    assert spec["urls"] == [f"{github.base}/{REPO}/releases/download/colours/{spec['filename']}"]
    assert {**entry, "files": {}} == {**local, "files": {}}
    assert {k: v for k, v in spec.items() if k != "urls"} == local["files"]["state_dict"]


COLLABORATOR = textwrap.dedent("""
    import json, sys, torch
    model = torch.hub.load(sys.argv[1], "resnet18", source="local", weights="colours-1", progress=False)
    print(json.dumps([list(map(list, p)) for p in model.predict(sys.argv[2:], topk=2)]))
""")


def test_a_collaborator_gets_the_trained_models_answers_everywhere(
    finetune_run, team, trained, finetune_photos, tmp_path, github
):
    pictures = val_photos(finetune_photos)
    expected = trained.predict(pictures, topk=2)
    collaborator = {k: v for k, v in os.environ.items() if not k.startswith("DLWP_")}
    collaborator.update(TORCH_HOME=str(tmp_path / "home"), DLWP_MANIFEST=str(team), PYTHONPATH=str(REPO_DIR))
    (tmp_path / "home").mkdir()
    python = subprocess.run(
        [sys.executable, "-c", COLLABORATOR, str(REPO_DIR), *map(str, pictures)],
        env=collaborator,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert python.returncode == 0, python.stderr
    got = json.loads(python.stdout)
    assert [[label for label, _ in p] for p in got] == [p.labels for p in expected]
    assert [p[0][1] for p in got] == pytest.approx([p[0][1] for p in expected], abs=1e-3)
    downloads = [path for method, path in github.calls if "/releases/download/" in path]
    assert len(downloads) == 1  # the collaborator's copy came from the release

    batch = subprocess.run(
        [sys.executable, "-m", "dlwp_models", "classify", "--model", "resnet18", "--weights", "colours-1",
         "--topk", "2", "--output", str(tmp_path / "answers.jsonl"), "-q", *map(str, pictures)],
        env=collaborator, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert batch.returncode == 0, batch.stderr
    records = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()[1:]]
    by_input = {r["input"]: [p["label"] for p in r["predictions"]] for r in records}
    assert [by_input[str(p)] for p in pictures] == [p.labels for p in expected]

    server = RunningServer(ServeEnv(tmp_path / "home", team), ("resnet18",), "--weights", "resnet18=colours-1")
    try:
        for picture, prediction in list(zip(pictures, expected))[:6]:
            response = httpx.post(
                f"{server.url}/v1/classify?topk=2",
                content=picture.read_bytes(),
                headers={"Content-Type": "image/jpeg"},
                timeout=60,
            )
            assert response.status_code == 200, response.text
            assert response.json()["weights"] == "resnet18.colours-1"
            assert [p["label"] for p in response.json()["predictions"]] == prediction.labels
    finally:
        server.stop()


def test_the_onnx_backend_agrees_with_the_trained_model(trained, finetune_photos):
    pytest.importorskip("onnxruntime", reason='pip install -e ".[onnx]"')
    pictures = val_photos(finetune_photos)
    eager = trained.predict(pictures, topk=1)
    onnx = trained.predict(pictures, topk=1, backend="onnxruntime")
    assert [p.labels for p in onnx] == [p.labels for p in eager]
    assert [p[0][1] for p in onnx] == pytest.approx([p[0][1] for p in eager], abs=1e-2)
    assert torch.is_tensor(trained.embed(pictures[0]))


def test_the_weight_set_exports_with_its_preprocessing(finetune_run, finetune_env, finetune_photos, tmp_path, trained):
    out = tmp_path / "colours.pt"
    result = finetune_env.cli(
        "export", "resnet18", "--weights", "colours-1", "--format", "torchscript", "-o", str(out),
        "--input-size", "120", "160", manifests=(finetune_run / "manifest.json",),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    exported = torch.jit.load(str(out))
    picture = val_photos(finetune_photos)[0]
    pixels = torch.from_numpy(np.asarray(Image.open(picture).convert("RGB")).copy())
    logits = exported(pixels.permute(2, 0, 1).unsqueeze(0))
    assert trained.categories[int(logits.argmax())] == trained.predict(picture, topk=1)[0][0]

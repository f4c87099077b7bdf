"""``serve --backend onnxruntime``: the server's classify task runs the network in ONNX Runtime
and answers as eager does (every category's percentage within 0.05 points)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime", reason="the [onnx] extra: pip install -e \".[onnx]\"")
pytest.importorskip("fastapi", reason="the [serve] extra: pip install -e \".[serve]\"")

from dlwp_models.cli.main import main  # noqa: E402
from dlwp_models.cli.serve.tasks import task_for  # noqa: E402
from dlwp_models.hub import build  # noqa: E402


def test_classify_task_answers_alike_with_either_backend(monkeypatch):
    import torch

    from dlwp_models.models import onnx_graphs

    runs = []
    real = onnx_graphs.run_session
    monkeypatch.setattr(onnx_graphs, "run_session", lambda *a: runs.append(1) or real(*a))

    torch.manual_seed(0)
    model = build("squeezenet1_1")
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (120, 160, 3), dtype=np.uint8))
              for i in range(3)]
    answers = {}
    for backend in ("eager", "onnxruntime"):
        task = task_for("squeezenet1_1", model, backend)
        items = [task.prepare(image, {"topk": 1000})[1] for image in images]     # every category
        answers[backend] = task.run(None, items)
        assert bool(runs) == (backend == "onnxruntime")           # the backend really ran the network
    for eager, onnx in zip(answers["eager"], answers["onnxruntime"]):
        by_index = dict(zip(onnx.indices, onnx.percents))
        assert sorted(by_index) == list(range(1000))
        assert np.allclose([by_index[i] for i in eager.indices], eager.percents, atol=0.05, rtol=0)


def test_serve_refuses_an_unknown_backend(capsys):
    with pytest.raises(SystemExit) as info:
        main(["serve", "--backend", "tensorrt"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err

"""``serve --backend onnxruntime``: the server's classify task runs the network in ONNX Runtime
and answers as eager does (every category's percentage within 0.05 points)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime", reason='the [onnx] extra: pip install -e ".[onnx]"')
pytest.importorskip("fastapi", reason='the [serve] extra: pip install -e ".[serve]"')

from dlwp_models.cli.main import main
from dlwp_models.hub import build
from dlwp_models.serve.state import Served
from dlwp_models.tasks import backend_for
from dlwp_models.tasks.classify import Classify


def test_classify_task_answers_alike_with_either_backend(monkeypatch):
    import torch

    from dlwp_models.models import onnx_graphs

    runs = []
    real = onnx_graphs.run_session
    monkeypatch.setattr(onnx_graphs, "run_session", lambda *a: runs.append(1) or real(*a))

    torch.manual_seed(0)
    model = build("squeezenet1_1")
    images = [
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (120, 160, 3), dtype=np.uint8)) for i in range(3)
    ]
    answers = {}
    task = Classify(topk=1000)  # every category
    for backend in ("eager", "onnxruntime"):
        served = Served("squeezenet1_1", model, Classify, backend_for("squeezenet1_1", backend))
        items = [task.prepare(model, image) for image in images]
        answers[backend] = served.run_batch((task, task.batch_key(items[0])), items)
        assert bool(runs) == (backend == "onnxruntime")  # the backend really ran the network
    for eager, onnx in zip(answers["eager"], answers["onnxruntime"]):
        by_index = dict(zip(onnx.indices, onnx.percents))
        assert sorted(by_index) == list(range(1000))
        assert np.allclose([by_index[i] for i in eager.indices], eager.percents, atol=0.05, rtol=0)


def test_a_family_without_the_backend_runs_eager():
    """serve --backend onnxruntime serves captioning too, eagerly: its family has no ONNX graph."""
    assert backend_for("neuraltalk2", "onnxruntime") == "eager"
    assert backend_for("cyclegan", "onnxruntime") == backend_for("resnet18", "onnxruntime") == "onnxruntime"
    assert backend_for("resnet18", "onnxruntime-int8") == "onnxruntime-int8"  # the classifiers only
    assert backend_for("cyclegan", "onnxruntime-int8") == backend_for("neuraltalk2", "onnxruntime-int8") == "eager"
    with pytest.raises(ValueError, match=r"backend must be one of \['eager', 'onnxruntime', 'onnxruntime-int8'\]"):
        backend_for("resnet18", "tensorrt")


def test_serve_refuses_an_unknown_backend(capsys):
    with pytest.raises(SystemExit) as info:
        main(["serve", "--backend", "tensorrt"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err

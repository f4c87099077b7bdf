"""A new head on a pretrained body: ``num_classes``/``labels`` with weights, ``reset_classifier``,
``embed`` (the head's input, with predict's preprocessing) and the head helpers fine-tuning uses,
on generated weights served from 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from random_weights import generated_entry, randomise_batchnorm

from dlwp_models.models.classifiers.heads import head_input, head_tail, pooled

REPO_DIR = Path(__file__).resolve().parents[2]


def hub_load(name: str, **kwargs):
    return torch.hub.load(str(REPO_DIR), name, source="local", **kwargs)


@pytest.fixture(scope="module")
def generated(weight_server):
    """resnet18 and squeezenet1_1 default weight sets with random values: (entries, state dicts)."""
    torch.manual_seed(3)
    dicts = {}
    for name in ("resnet18", "squeezenet1_1"):
        net = getattr(torchvision.models, name)(weights=None)
        randomise_batchnorm(net)
        dicts[name] = net.state_dict()
    entries = [
        generated_entry(f"{name}.imagenet1k_v1", sd, weight_server, prefix="heads") for name, sd in dicts.items()
    ]
    return entries, dicts


@pytest.fixture
def served(generated, make_manifest):
    entries, dicts = generated
    make_manifest(entries)
    return dicts


def photos(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (180 + 10 * i, 240, 3), dtype=np.uint8)) for i in range(n)]


def test_num_classes_with_weights_keeps_the_body_and_puts_on_a_fresh_head(served):
    model = hub_load("resnet18", pretrained=True, num_classes=5)
    file = served["resnet18"]
    body = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(v, file[k]) for k, v in body.items())
    assert model.fc.weight.shape == (5, 512) and model.categories is None
    assert float(model.fc.weight.detach().std()) < 0.02 and torch.count_nonzero(model.fc.bias) == 0
    assert model.weight_file is None  # the ONNX graph beside the file is of the old head
    assert model(torch.rand(2, 3, 224, 224)).shape == (2, 5)


def test_labels_name_the_new_classes_and_predict_uses_them(served):
    model = hub_load("resnet18", pretrained=True, labels=["cat", "dog", "eel"])
    assert model.categories == ["cat", "dog", "eel"] and model.fc.out_features == 3
    prediction = model.predict(photos(1)[0])  # topk: 5, or every class when there are fewer
    assert sorted(prediction.labels) == ["cat", "dog", "eel"] and sum(prediction.percents) == pytest.approx(100)


def test_the_weight_sets_own_class_count_keeps_its_head(served):
    model = hub_load("resnet18", pretrained=True, num_classes=1000)
    assert torch.equal(model.fc.weight, served["resnet18"]["fc.weight"])
    assert len(model.categories) == 1000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 3, "labels": ["a", "b"]}, "num_classes=3 but 2 labels"),
        ({"labels": ["a", "a"]}, "distinct"),
        ({"labels": "ab"}, "non-empty list"),
        ({"num_classes": 0}, "positive int"),
    ],
)
def test_contradicting_classes_are_refused_before_loading(kwargs, message, served):
    with pytest.raises(ValueError, match=message):
        hub_load("resnet18", pretrained=True, **kwargs)


def test_labels_without_weights_give_a_random_model_with_those_classes():
    model = hub_load("resnet18", labels=["x", "y"])
    assert model.fc.out_features == 2 and model.categories == ["x", "y"]


def test_embed_is_the_heads_input_with_predicts_preprocessing(served):
    model = hub_load("resnet18", pretrained=True)
    images = photos()
    features = model.embed(images, batch_size=2)
    assert features.shape == (3, 512)
    assert model.embed(images[0]).shape == (512,)
    logits = model.fc(features)
    percent = torch.softmax(logits, dim=1) * 100
    predicted = model.predict(images, topk=1)
    for row, prediction in zip(percent, predicted):
        assert model.categories[int(row.argmax())] == prediction[0][0]
        assert float(row.max()) == pytest.approx(prediction[0][1], rel=1e-4)


def test_squeezenets_head_is_its_final_convolution(served):
    model = hub_load("squeezenet1_1", pretrained=True, num_classes=4)
    assert isinstance(model.classifier[1], torch.nn.Conv2d) and model.classifier[1].out_channels == 4
    images = photos(2)
    maps = model.embed(images, pool=False)
    assert maps.shape == (2, 512, 13, 13)
    assert torch.allclose(model.embed(images), pooled(maps))
    batch = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(head_tail(model)(head_input(model, batch)), model(batch), atol=1e-6)


def test_reset_classifier_replaces_both_inception_heads():
    model = hub_load("inception_v3", aux_logits=True, init_weights=False)
    model.reset_classifier(["a", "b", "c"])
    assert model.fc.out_features == 3 and model.AuxLogits.fc.out_features == 3
    assert model.categories == ["a", "b", "c"]
    model.reset_classifier(7)
    assert model.fc.out_features == 7 and model.categories is None
    with pytest.raises(ValueError, match="model.categories"):
        model.predict(photos(1)[0])


def test_reset_classifier_drops_the_onnx_sessions_of_the_old_head(served):
    pytest.importorskip("onnxruntime", reason='pip install -e ".[onnx]"')
    model = hub_load("squeezenet1_1", pretrained=True)
    image = photos(1)[0]
    assert len(model.predict(image, topk=3, backend="onnxruntime")) == 3
    model.reset_classifier(["p", "q"])
    eager = model.predict(image, topk=2)
    onnx = model.predict(image, topk=2, backend="onnxruntime")
    assert [label for label, _ in onnx] == [label for label, _ in eager]
    assert [p for _, p in onnx] == pytest.approx([p for _, p in eager], abs=1e-3)

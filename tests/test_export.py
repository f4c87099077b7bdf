"""Export for deployment: TorchScript and torch.export artefacts that take uint8 images, carry
the preprocessing, load back without dlwp, and reproduce the eager model."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torchvision
from conftest import sha256_of

from dlwp_models.cli.main import main
from dlwp_models.export import ExportError, export_model
from dlwp_models.weights.manifest import bundled_manifest_path

BUNDLED = {e["name"]: e for e in json.loads(bundled_manifest_path().read_text())["weights"]}


pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """resnet18 and cyclegan state dicts with random values, saved as their upstream files."""
    from dlwp_models.models.cyclegan import ResNetGenerator

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("export-weights")
    files = {}
    for set_name, net in (
        ("resnet18.imagenet1k_v1", torchvision.models.resnet18(weights=None)),
        ("cyclegan.horse2zebra", ResNetGenerator()),
    ):
        path = folder / BUNDLED[set_name]["files"]["state_dict"]["filename"]
        torch.save(net.state_dict(), path)
        files[set_name] = path.read_bytes()
    return files


@pytest.fixture
def served(generated, weight_server, make_manifest):
    entries = []
    for set_name, data in generated.items():
        entry = copy.deepcopy(BUNDLED[set_name])
        name = entry["files"]["state_dict"]["filename"]
        entry["files"] = {
            "state_dict": {
                "filename": name,
                "urls": [weight_server.serve(name, data)],
                "sha256": sha256_of(data),
                "size": len(data),
            }
        }
        entries.append(entry)
    make_manifest(entries)


def sample_images() -> torch.Tensor:
    return torch.randint(0, 256, (2, 3, 200, 260), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_classifier_torchscript_export_runs_without_dlwp_and_matches_eager(served, tmp_path):
    from dlwp_models.hub import build as load_classifier

    path = export_model("resnet18", output=tmp_path / "r18.pt", format="torchscript")
    scripted = torch.jit.load(str(path))
    model = load_classifier("resnet18", weights="DEFAULT")
    images = sample_images()  # not the size export checked at: any size works
    with torch.inference_mode():
        expected = model(torch.stack([model.transforms(img) for img in images]))
        torch.testing.assert_close(scripted(images), expected, atol=1e-4, rtol=0)


def test_classifier_torch_export_loads_back_and_matches_eager(served, tmp_path):
    from dlwp_models.hub import build as load_classifier

    assert (
        main(
            [
                "export",
                "resnet18",
                "--format",
                "exported",
                "-o",
                str(tmp_path / "r18.pt2"),
                "--input-size",
                "240",
                "320",
            ]
        )
        == 0
    )
    program = torch.export.load(tmp_path / "r18.pt2").module()
    model = load_classifier("resnet18", weights="DEFAULT")
    images = torch.randint(0, 256, (3, 3, 240, 320), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = model(torch.stack([model.transforms(img) for img in images]))
        torch.testing.assert_close(program(images), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt", ["torchscript", "exported"])
def test_cyclegan_export_reproduces_translate(served, tmp_path, fmt):
    from hubconf import cyclegan

    suffix = ".pt" if fmt == "torchscript" else ".pt2"
    path = export_model("cyclegan", output=tmp_path / f"g{suffix}", format=fmt, input_size=(96, 130))
    runner = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(path).module()
    images = torch.randint(0, 256, (1, 3, 96, 130), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    model = cyclegan(pretrained=True)
    with torch.inference_mode():
        out = runner(images)
    assert out.shape == (1, 3, 256, 346)
    translated = model.translate(images[0], size=256)
    assert translated.size == (346, 256)
    pixels = torch.from_numpy(np.array(translated)).permute(2, 0, 1).float() / 255
    assert float((out[0] - pixels).abs().max()) <= 1 / 255 + 1e-6


def test_unknown_model_or_format_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="exportable models"):
        export_model("neuraltalk9", output=tmp_path / "x", format="torchscript")
    with pytest.raises(ExportError, match="--format must be one of"):
        export_model("resnet18", output=tmp_path / "x", format="tflite")
    with pytest.raises(ExportError, match=r"name the output \*.pt2"):
        export_model("resnet18", output=tmp_path / "x.pt", format="exported")


# --------------------------------------------------------------------------- ONNX


def onnx_session(path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def relative_error(got, expected) -> float:
    return float((torch.as_tensor(got) - expected).abs().max()) / float(expected.abs().max())


def test_classifier_onnx_export_runs_in_onnxruntime_with_any_batch_and_matches_eager(served, tmp_path, capsys):
    from dlwp_models.hub import build

    out = tmp_path / "out"
    assert (
        main(["export", "resnet18", "--format", "onnx", "-o", str(out / "r18.onnx"), "--input-size", "240", "320"]) == 0
    )
    assert "wrote" in capsys.readouterr().out
    session = onnx_session(out / "r18.onnx")
    (graph_input,) = session.get_inputs()
    assert graph_input.type == "tensor(uint8)" and graph_input.shape[1:] == [3, 240, 320]
    assert isinstance(graph_input.shape[0], str)  # the batch is dynamic
    assert graph_input.name == "images" and [o.name for o in session.get_outputs()] == ["logits"]  # as documented
    model = build("resnet18", weights="DEFAULT")
    for batch in (3, 1):
        images = torch.randint(
            0, 256, (batch, 3, 240, 320), dtype=torch.uint8, generator=torch.Generator().manual_seed(batch)
        )
        with torch.inference_mode():
            expected = model(torch.stack([model.transforms(img) for img in images]))
        (got,) = session.run(None, {graph_input.name: images.numpy()})
        assert got.shape == (batch, 1000) and relative_error(got, expected) <= 1e-4
    assert sorted(p.name for p in out.iterdir()) == ["r18.onnx"]  # no partial file left


@pytest.mark.parametrize(("size", "translated"), [((96, 130), (256, 346)), ((131, 67), (500, 256))])
def test_cyclegan_onnx_export_reproduces_translate(served, tmp_path, size, translated):
    from hubconf import cyclegan

    path = export_model("cyclegan", output=tmp_path / "g.onnx", format="onnx", input_size=size)
    session = onnx_session(path)
    images = torch.randint(0, 256, (2, 3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    (out,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    assert out.shape == (2, 3, *translated)
    model = cyclegan(pretrained=True)
    for image, result in zip(images, out):
        translated = model.translate(image, size=256)
        pixels = torch.from_numpy(np.array(translated)).permute(2, 0, 1).float() / 255
        assert float((torch.from_numpy(result) - pixels).abs().max()) <= 1 / 255 + 1e-5


def test_an_onnx_export_that_differs_from_eager_is_not_written(served, tmp_path, monkeypatch):
    from dlwp_models import export

    real = export.export_graph

    def off_by_a_little(module, sample, path, **kwargs):  # an exporter bug: one class's bias changed
        module = copy.deepcopy(module)
        with torch.no_grad():
            module.net.fc.bias[3] += 3.0
        return real(module, sample, path, **kwargs)

    monkeypatch.setattr(export, "export_graph", off_by_a_little)
    with pytest.raises(
        ExportError,
        match=r"differs from the eager model by [\d.e-]+ percentage points of the class scores on input "
        r"\(2, 3, 64, 64\) \(tolerance 0.05 percentage points of the class scores\); nothing was kept",
    ):
        export_model("resnet18", output=tmp_path / "out" / "r18.onnx", format="onnx", input_size=(64, 64))
    assert list((tmp_path / "out").iterdir()) == []


def test_an_onnx_generator_two_levels_off_is_not_written(served, tmp_path, monkeypatch):
    from dlwp_models import export

    real = export.export_graph

    def darker(module, sample, path, **kwargs):  # every pixel about 2-3 levels lower
        module = copy.deepcopy(module)
        with torch.no_grad():
            module.generator.model[-2].bias.sub_(0.02)
        return real(module, sample, path, **kwargs)

    monkeypatch.setattr(export, "export_graph", darker)
    with pytest.raises(ExportError, match=r"differs from the eager model by [2-9] 8-bit pixel levels"):
        export_model("cyclegan", output=tmp_path / "g.onnx", format="onnx", input_size=(40, 56))
    assert not list(tmp_path.glob("*.onnx"))


def test_onnx_export_of_the_captioning_model_is_refused(tmp_path):
    with pytest.raises(
        ExportError, match=r"exportable models: the families classifiers, cyclegan \(alexnet, .*, cyclegan\)"
    ):
        export_model("neuraltalk2", output=tmp_path / "c.onnx", format="onnx")


# --------------------------------------------------------------------------- issue 25: the output and the size


def test_export_refuses_an_existing_output_unless_asked(served, tmp_path, capsys):
    from dlwp_models.cli.main import main

    out = tmp_path / "model.pt"
    out.write_bytes(b"the user's own file")
    assert main(["export", "resnet18", "--format", "torchscript", "-o", str(out)]) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err and out.read_bytes() == b"the user's own file"
    assert main(["export", "resnet18", "--format", "torchscript", "-o", str(out), "--overwrite"]) == 0
    assert torch.jit.load(str(out)) is not None
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert main(["export", "resnet18", "--format", "onnx", "-o", str(folder)]) == 1
    assert "is a folder; -o names the file to write" in capsys.readouterr().err


@pytest.mark.parametrize("size", [["-5", "10"], ["100000", "100000"], ["0", "0"], ["4097", "8"]])
def test_an_input_size_out_of_range_is_a_usage_error(size, tmp_path, capsys):
    from dlwp_models.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["export", "resnet18", "--format", "onnx", "-o", str(tmp_path / "x.onnx"), "--input-size", *size])
    assert info.value.code == 2 and "must be from 1 to 4096 pixels" in capsys.readouterr().err


def test_an_input_size_the_model_cannot_take_is_refused_before_any_work(served, tmp_path):
    with pytest.raises(ExportError, match="over the generator's 8.4 megapixels"):
        export_model("cyclegan", output=tmp_path / "g.onnx", format="onnx", input_size=(4, 4000))
    with pytest.raises(ExportError, match="over the classifiers' limit"):
        export_model("resnet18", output=tmp_path / "r.onnx", format="onnx", input_size=(1, 4096))
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*"))

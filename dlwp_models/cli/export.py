"""Export a model with its preprocessing for deployment (the book's Part III): TorchScript
(``torch.jit.script``), ``torch.export`` or ONNX (``torch.onnx.export``, the dynamo exporter). The
artefact takes a uint8 image batch (N, 3, H, W) and needs neither dlwp nor torchvision to run.
Before it is kept, it is loaded back and checked against the eager model on a sample input
(ONNX: by ONNX Runtime, to 1e-4 relative to the output's scale); a failing artefact is not written.

The TorchScript artefact takes any image size. The ``torch.export`` and ONNX artefacts are
specialised to the ``input_size`` they were exported at (the resize's output size depends on the
aspect ratio, which the exporters cannot keep symbolic: asked to, ONNX's silently fixes it), and
take any batch size. Exportable: the classifiers and cyclegan; the captioning model is not (its
beam search is Python control flow around the networks)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ExportError, first_line
from ..hub import build
from ..models.classifiers import CLASSIFIERS
from ..models.onnx_graphs import check_graph, dynamic_samples, export_graph, session_for
from ..models.pipelines import ClassifierPipeline, CycleGANPipeline, plain_module

__all__ = ["ClassifierPipeline", "CycleGANPipeline", "export_model", "FORMATS", "ExportError"]

log = logging.getLogger(__name__)

FORMATS = ("torchscript", "exported", "onnx")
TOLERANCE = 1e-4          # TorchScript and torch.export: absolute; ONNX: relative to the output's scale


def _pipeline_for(name: str, weights: str | None) -> tuple[nn.Module, Any]:
    """The pipeline module for ``name`` and an eager reference function of uint8 images."""
    if name == "cyclegan":
        model = build("cyclegan", weights=weights or "DEFAULT")
        t = model.transforms
        if t.resize is None or t.mean is None:
            raise ExportError("exporting needs a fixed resize and normalisation in the weights' transforms.")
        pipeline = CycleGANPipeline(plain_module(model), t)

        def reference(images: torch.Tensor) -> torch.Tensor:
            x = torch.stack([t(img.float() / 255) for img in images])
            return ((model._forward_same_size(x) + 1) / 2).clamp(0, 1)

        return pipeline, reference

    if name not in CLASSIFIERS:
        raise ExportError(f"cannot export {name!r}; exportable models: cyclegan and the classifiers "
                          f"({', '.join(CLASSIFIERS)}).")
    model = build(name, weights=weights or "DEFAULT")
    t = model.transforms
    pipeline = ClassifierPipeline(plain_module(model), t)

    def reference(images: torch.Tensor) -> torch.Tensor:
        return model(torch.stack([t(img.float() / 255) for img in images]))

    return pipeline, reference


def export_model(name: str, *, output: str | Path, format: str, weights: str | None = None,
                 input_size: tuple[int, int] = (480, 640)) -> Path:
    """Write ``name`` (with ``weights``, default the default set) as a self-contained artefact
    taking uint8 (N, 3, H, W) images; check it against the eager model on an ``input_size``
    sample (the size a ``torch.export`` or ONNX artefact is specialised to; ONNX also at a second
    batch size); return the path. Nothing is written when the check fails."""
    if format not in FORMATS:
        raise ExportError(f"--format must be one of {list(FORMATS)}, got {format!r}.")
    output = Path(output)
    if format == "exported" and output.suffix != ".pt2":
        raise ExportError(f"a torch.export artefact is a .pt2 archive; name the output *.pt2, got {output.name!r}.")
    pipeline, reference = _pipeline_for(name, weights)
    pipeline.eval()
    generator = torch.Generator().manual_seed(0)
    sample = torch.randint(0, 256, (2, 3, *input_size), dtype=torch.uint8, generator=generator)
    output.parent.mkdir(parents=True, exist_ok=True)
    import uuid

    from ..weights.store import create_exclusive

    tmp = output.with_name(f".{output.stem}.{uuid.uuid4().hex}.partial{output.suffix}")
    try:
        create_exclusive(tmp).close()       # a new file of ours: the exporters never write through a link
        if format == "onnx":
            return _export_onnx(name, pipeline, reference, sample, tmp, output)
        with torch.inference_mode():
            expected = reference(sample)
        if format == "torchscript":
            with warnings.catch_warnings():   # TorchScript is deprecated in torch 2.14 but asked for here
                warnings.simplefilter("ignore", FutureWarning)
                torch.jit.script(pipeline).save(str(tmp))
                loaded = torch.jit.load(str(tmp))
        else:
            with torch.no_grad():
                batch = torch.export.Dim("batch", min=1, max=4096)
                program = torch.export.export(pipeline, (sample,), dynamic_shapes={"images": {0: batch}})
            torch.export.save(program, tmp)
            loaded = torch.export.load(tmp).module()
        with torch.inference_mode():
            got = loaded(sample)
        error = float((got - expected).abs().max())
        if not error <= TOLERANCE:
            raise ExportError(f"the {format} export of {name} differs from the eager model by {error:.2e} "
                              f"(tolerance {TOLERANCE}); it was not written. Please report this.")
        tmp.replace(output)
        log.info("exported %s (%s) to %s; max difference to eager %.2e", name, format, output, error)
        return output
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch's exporters raise many types; report one clearly
        raise ExportError(f"exporting {name} as {format} failed ({type(exc).__name__}: "
                          f"{first_line(exc)}). Try the other --format.") from None
    finally:
        tmp.unlink(missing_ok=True)


def _export_onnx(name: str, pipeline: nn.Module, reference: Any, sample: torch.Tensor, tmp: Path,
                 output: Path) -> Path:
    """The ONNX branch of :func:`export_model`: batch dynamic, height and width fixed at the sample's."""
    output_name = "translated" if name == "cyclegan" else "logits"
    export_graph(pipeline, sample, tmp, dynamic=(0,), input_name="images", output_name=output_name)
    session = session_for(tmp, torch.device("cpu"))
    error = check_graph(session, dynamic_samples(sample, (0,)), reference, what=f"the onnx export of {name}")
    tmp.replace(output)
    log.info("exported %s (onnx) to %s; largest difference to eager %.2e of the output's scale", name, output, error)
    return output

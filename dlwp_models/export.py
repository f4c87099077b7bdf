"""Export a model with its preprocessing for deployment (the book's Part III): TorchScript
(``torch.jit.script``), ``torch.export`` or ONNX (``torch.onnx.export``, the dynamo exporter). The
artefact takes a uint8 image batch (N, 3, H, W) and needs neither dlwp nor torchvision to run.
Before it is kept, it is loaded back and checked against the eager model on a sample input
(TorchScript and torch.export: to 1e-4; ONNX, run by ONNX Runtime, whose kernels round differently
on different CPUs: by what the output means — class scores' softmax percentages within 0.05
points, a translated image's 8-bit pixels at most one level apart); a failing artefact is not
written.

The TorchScript artefact takes any image size. The ``torch.export`` and ONNX artefacts are
specialised to the ``input_size`` they were exported at (the resize's output size depends on the
aspect ratio, which the exporters cannot keep symbolic: asked to, ONNX's silently fixes it), and
take any batch size. Exportable: the classifiers and cyclegan; the captioning model is not (its
beam search is Python control flow around the networks)."""

from __future__ import annotations

import logging
import uuid
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ExportError, OutputExistsError, first_line
from .hub import build
from .models.onnx_graphs import TOLERANCE, check_graph, dynamic_samples, export_graph, session_for
from .models.registry import families, load_family
from .safe_write import check_free, staged, write_failure

__all__ = ["export_model", "FORMATS"]

log = logging.getLogger(__name__)

#: what ``--format`` may be
FORMATS = ("torchscript", "exported", "onnx")
#: the longest side ``--input-size`` may have (the check's sample is made at that size)
MAX_INPUT_SIDE = 4096


def _pipeline_for(name: str, weights: str | None, input_size: tuple[int, int]) -> tuple[nn.Module, Any]:
    """The pipeline module for ``name`` and an eager reference function of uint8 images, after the
    family has checked that ``input_size`` fits the model's memory guards."""
    exportable = [info for info in families() if info.exportable]
    if not any(name in info.models for info in exportable):
        raise ExportError(
            f"cannot export {name!r}; exportable models: the families "
            f"{', '.join(info.name for info in exportable)} "
            f"({', '.join(model for info in exportable for model in info.models)})."
        )
    model = build(name, weights=weights or "DEFAULT")
    family = load_family(name)
    family.check_export_size(model, *input_size)
    return family.export_pipeline(model)


def export_model(
    name: str,
    *,
    output: str | Path,
    format: str,
    weights: str | None = None,
    input_size: tuple[int, int] = (480, 640),
    overwrite: bool = False,
) -> Path:
    """Write ``name`` (with ``weights``, default the default set) as a self-contained artefact
    taking uint8 (N, 3, H, W) images; check it against the eager model on an ``input_size``
    sample (the size a ``torch.export`` or ONNX artefact is specialised to; ONNX also at a second
    batch size); return the path. Nothing is written when the check fails, and an existing
    ``output`` is replaced only with ``overwrite``."""
    if format not in FORMATS:
        raise ExportError(f"--format must be one of {list(FORMATS)}, got {format!r}.")
    output = Path(output)
    height, width = input_size
    if not (1 <= height <= MAX_INPUT_SIDE and 1 <= width <= MAX_INPUT_SIDE):
        raise ExportError(f"--input-size must be two sides from 1 to {MAX_INPUT_SIDE} pixels, got {height} {width}.")
    if output.is_dir():
        raise ExportError(f"{output} is a folder; -o names the file to write, e.g. {output / (name + '.onnx')}.")
    check_free(output, replace=overwrite)
    if format == "exported" and output.suffix != ".pt2":
        raise ExportError(f"a torch.export artefact is a .pt2 archive; name the output *.pt2, got {output.name!r}.")
    try:
        pipeline, reference = _pipeline_for(name, weights, input_size)
    except ValueError as exc:  # the family's size check (ImageTooLargeError is one)
        raise ExportError(str(exc)) from None
    pipeline.eval()
    generator = torch.Generator().manual_seed(0)
    sample = torch.randint(0, 256, (2, 3, *input_size), dtype=torch.uint8, generator=generator)
    output.parent.mkdir(parents=True, exist_ok=True)
    # a new file of ours beside the output (the exporters write it by its path, never through a link),
    # moved into place only once it reproduces the eager model
    tmp = output.with_name(f".{output.stem}.{uuid.uuid4().hex}.partial{output.suffix}")  # keeps the suffix
    try:
        with staged(output, replace=overwrite, temporary=tmp) as (path, out):
            out.close()
            error = _write_checked(name, format, pipeline, reference, sample, path)
    except (ExportError, OutputExistsError):
        raise
    except OSError as exc:
        raise write_failure(exc, output, f"write {output.name}", error=ExportError) from None
    except Exception as exc:
        raise ExportError(
            f"exporting {name} as {format} failed ({type(exc).__name__}: {first_line(exc)}). Try the other --format."
        ) from None
    log.info("exported %s (%s) to %s; difference to eager %.2e", name, format, output, error)
    return output


def _write_checked(
    name: str, format: str, pipeline: nn.Module, reference: Any, sample: torch.Tensor, path: Path
) -> float:
    """Write the artefact to ``path`` and load it back; its largest difference to the eager model
    (an :class:`ExportError` above its tolerance: see the module docstring)."""
    if format == "onnx":  # batch dynamic, height and width fixed at the sample's
        export_graph(pipeline, sample, path, dynamic=(0,), input_name="images", output_name=pipeline.output_name)
        session = session_for(path, torch.device("cpu"))
        return check_graph(
            session,
            dynamic_samples(sample, (0,)),
            reference,
            what=f"the onnx export of {name}",
            meaning=pipeline.output_meaning,
        )
    with torch.inference_mode():
        expected = reference(sample)
    if format == "torchscript":
        with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.14 but asked for here
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.script(pipeline).save(str(path))
            loaded = torch.jit.load(str(path))
    else:
        with torch.no_grad():
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.export.export(pipeline, (sample,), dynamic_shapes={"images": {0: batch}})
        torch.export.save(program, path)
        loaded = torch.export.load(path).module()
    with torch.inference_mode():
        got = loaded(sample)
    error = float((got - expected).abs().max())
    if not error <= TOLERANCE:
        raise ExportError(
            f"the {format} export of {name} differs from the eager model by {error:.2e} "
            f"(tolerance {TOLERANCE}); it was not written. Please report this."
        )
    return error

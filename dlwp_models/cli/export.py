"""Export a model with its preprocessing for deployment (the book's Part III): TorchScript
(``torch.jit.script``) or ``torch.export``. The artefact takes a uint8 image batch (N, 3, H, W)
and needs neither dlwp nor torchvision to run. After writing, it is loaded back and checked
against the eager model on a sample input.

The TorchScript artefact takes any image size. The ``torch.export`` artefact is specialised to
the ``input_size`` it was exported at (the resize's output size depends on the aspect ratio,
which ``torch.export`` cannot keep symbolic), and any batch size."""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ExportError
from ..hub import build
from ..inputs.transforms import ClassifierTransform, CycleGANTransform
from ..models.classifiers import CLASSIFIERS

__all__ = ["ClassifierPipeline", "CycleGANPipeline", "export_model", "FORMATS", "ExportError"]

log = logging.getLogger(__name__)

FORMATS = ("torchscript", "exported")
TOLERANCE = 1e-4


class ClassifierPipeline(nn.Module):
    """uint8 images (N, 3, H, W) → logits (N, classes): the weights' evaluation transform
    (:class:`~dlwp_models.inputs.transforms.ClassifierPreprocess`, the same operations eager
    tensors go through), then the network."""

    def __init__(self, net: nn.Module, transform: ClassifierTransform) -> None:
        super().__init__()
        self.preprocess = transform.tensor_module()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(images))


class CycleGANPipeline(nn.Module):
    """uint8 images (N, 3, H, W) → translated images (N, 3, H', W') in [0, 1], H'×W' the resized
    size: the transform (:class:`~dlwp_models.inputs.transforms.CycleGANPreprocess`), the
    generator at the input's own size, ``(y + 1) / 2``."""

    def __init__(self, generator: nn.Module, transform: CycleGANTransform) -> None:
        super().__init__()
        self.preprocess = transform.tensor_module()
        self.generator = generator

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        height, width = x.shape[-2], x.shape[-1]
        pad_h, pad_w = (4 - height % 4) % 4, (4 - width % 4) % 4
        x = F.pad(x, [0, pad_w, 0, pad_h], mode="reflect")
        y = self.generator(x)[:, :, :height, :width]
        return ((y + 1.0) / 2.0).clamp(0.0, 1.0)


def _plain(model: nn.Module) -> nn.Module:
    """The model without dlwp's extra attributes (which TorchScript cannot type) and, for a
    classifier, as its plain torchvision class; it shares the model's parameters."""
    base = next((c for c in type(model).__mro__ if c.__module__.startswith("torchvision.")), type(model))
    plain = copy.copy(model)
    plain.__class__ = base
    for attr in ("weights", "transforms", "categories"):
        plain.__dict__.pop(attr, None)
    return plain


def _pipeline_for(name: str, weights: str | None) -> tuple[nn.Module, Any]:
    """The pipeline module for ``name`` and an eager reference function of uint8 images."""
    if name == "cyclegan":
        model = build("cyclegan", weights=weights or "DEFAULT")
        t = model.transforms
        if t.resize is None or t.mean is None:
            raise ExportError("exporting needs a fixed resize and normalisation in the weights' transforms.")
        pipeline = CycleGANPipeline(_plain(model), t)

        def reference(images: torch.Tensor) -> torch.Tensor:
            x = torch.stack([t(img.float() / 255) for img in images])
            return ((model._forward_same_size(x) + 1) / 2).clamp(0, 1)

        return pipeline, reference

    if name not in CLASSIFIERS:
        raise ExportError(f"cannot export {name!r}; exportable models: cyclegan and the classifiers "
                          f"({', '.join(CLASSIFIERS)}).")
    model = build(name, weights=weights or "DEFAULT")
    t = model.transforms
    pipeline = ClassifierPipeline(_plain(model), t)

    def reference(images: torch.Tensor) -> torch.Tensor:
        return model(torch.stack([t(img.float() / 255) for img in images]))

    return pipeline, reference


def export_model(name: str, *, output: str | Path, format: str, weights: str | None = None,
                 input_size: tuple[int, int] = (480, 640)) -> Path:
    """Write ``name`` (with ``weights``, default the default set) as a self-contained artefact
    taking uint8 (N, 3, H, W) images; check it against the eager model on an ``input_size``
    sample (the size a ``torch.export`` artefact is specialised to); return the path."""
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
                          f"{str(exc).splitlines()[0] if str(exc) else ''}). Try the other --format.") from None
    finally:
        tmp.unlink(missing_ok=True)

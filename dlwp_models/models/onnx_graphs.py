"""ONNX graphs of dlwp's models: written by ``torch.onnx.export`` (its dynamo-based exporter,
the default in torch 2.x, which needs ``onnx`` and ``onnxscript``), checked by ONNX Runtime
against the eager model before anyone uses them, and run in sessions on the model's device.

Dynamic dimensions are declared by name (``torch.export.Dim``), so an exporter that would have
to fix one fails loudly instead of producing a graph that is wrong at other sizes; the check then
runs the graph at a second size of every dynamic dimension as well."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ExportError, MissingDependencyError, first_line
from ..inputs.pipeline import usable_cores
from ..loading.modules import eval_mode
from ..weights.integrity import sha256_file

__all__ = [
    "INSTALL_HINT",
    "TOLERANCE",
    "MEANINGS",
    "disagreement",
    "import_onnxruntime",
    "onnx_versions",
    "export_graph",
    "graph_intact",
    "check_graph",
    "dynamic_samples",
    "session_for",
    "run_session",
    "eval_mode",
]

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install -e ".[onnx]"'
#: the largest difference to the eager model a TorchScript or torch.export artefact (run by PyTorch
#: itself) may show
TOLERANCE = 1e-4
#: what an ONNX graph's output means, which decides how closely ONNX Runtime (other kernels, another
#: summation order; it differs between CPUs) must reproduce the eager model:
#: "logits": class scores, compared as the softmax percentages users see; "pixels01" / "pixels11":
#: an image with values in [0, 1] / [-1, 1], compared in the 8-bit levels it is saved in
MEANINGS = ("logits", "pixels01", "pixels11")
#: class scores: the largest difference of a softmax percentage, in percentage points (a top-1
#: answer may change only between classes whose eager percentages are within twice this)
PERCENT_TOLERANCE = 0.05
#: images: the largest difference, in 8-bit levels (0-255), after rounding as a PNG is written
LEVEL_TOLERANCE = 1
_DIM_BOUNDS = {0: (1, 4096), 2: (8, 16384), 3: (8, 16384)}  # batch, height, width
_DIM_NAMES = {0: "batch", 2: "height", 3: "width"}


def _require(*modules: str, needed_for: str) -> list[Any]:
    """The modules, imported; a :class:`MissingDependencyError` that says how to install them."""
    import importlib

    try:
        return [importlib.import_module(name) for name in modules]
    except ImportError as exc:
        raise MissingDependencyError(
            f"{needed_for} uses {' and '.join(modules)}, which cannot be imported here ({exc}). Install "
            f"dlwp's onnx extra: {INSTALL_HINT}"
        ) from None


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or a :class:`MissingDependencyError` that says how to install it."""
    return _require("onnxruntime", needed_for="the ONNX Runtime backend and ONNX export")[0]


def _require_exporter() -> None:
    _require("onnx", "onnxscript", needed_for="exporting to ONNX")


def onnx_versions() -> tuple[str, str]:
    """(torch version, onnxruntime version): what a cached graph is keyed by besides the weights."""
    return torch.__version__, import_onnxruntime().__version__


def export_graph(
    module: nn.Module,
    sample: torch.Tensor,
    path: Path,
    *,
    dynamic: Sequence[int],
    input_name: str = "images",
    output_name: str = "output",
) -> None:
    """Write ``module`` (called on one (N, 3, H, W) tensor like ``sample``) to ``path`` as one
    self-contained ONNX file; the ``dynamic`` axes (0 batch, 2 height, 3 width) are symbolic, the
    others fixed at ``sample``'s. Raises :class:`ExportError` when the exporter fails."""
    _require_exporter()
    dims = {
        axis: torch.export.Dim(_DIM_NAMES[axis], min=_DIM_BOUNDS[axis][0], max=_DIM_BOUNDS[axis][1]) for axis in dynamic
    }
    try:
        with torch.no_grad(), eval_mode(module):
            torch.onnx.export(
                module,
                (sample,),
                str(path),
                dynamo=True,
                dynamic_shapes=(dims,),
                input_names=[input_name],
                output_names=[output_name],
                external_data=False,
                verbose=False,
            )
    except Exception as exc:
        raise ExportError(
            f"torch.onnx.export failed for {type(module).__name__} ({type(exc).__name__}: "
            f"{first_line(exc)}). Use the eager backend or another --format, and please "
            "report this."
        ) from None


def _levels(x: torch.Tensor, meaning: str) -> torch.Tensor:
    unit = (x.float() + 1) / 2 if meaning == "pixels11" else x.float()
    return (unit.clamp(0, 1) * 255).round()


def disagreement(got: torch.Tensor, expected: torch.Tensor, meaning: str) -> tuple[float, float, str]:
    """How far ``got`` is from the eager ``expected`` in the units that matter for ``meaning`` (one of
    :data:`MEANINGS`): ``(difference, tolerance, unit)``. For class scores, a changed top-1 answer
    where the eager scores are clearly apart counts as infinitely far."""
    if meaning == "logits":
        p_got, p_expected = (torch.softmax(t.float().flatten(1), dim=1) * 100 for t in (got, expected))
        worst = float((p_got - p_expected).abs().max()) if p_got.numel() else 0.0
        if p_expected.shape[1] > 1:
            top2 = p_expected.topk(2, dim=1).values
            clear = (top2[:, 0] - top2[:, 1]) > 2 * PERCENT_TOLERANCE
            if bool((clear & (p_got.argmax(1) != p_expected.argmax(1))).any()):
                worst = float("inf")
        return worst, PERCENT_TOLERANCE, "percentage points of the class scores"
    if meaning in ("pixels01", "pixels11"):
        worst = float((_levels(got, meaning) - _levels(expected, meaning)).abs().max()) if got.numel() else 0.0
        return worst, float(LEVEL_TOLERANCE), "8-bit pixel levels"
    raise ValueError(f"unknown output meaning {meaning!r}; one of {MEANINGS}")


def check_graph(session: Any, samples: Sequence[torch.Tensor], reference: Any, *, what: str, meaning: str) -> float:
    """Run ``session`` and the eager ``reference`` on each sample; the largest difference in the
    units of ``meaning`` (:func:`disagreement`), or an :class:`ExportError` saying by how much it
    exceeds the tolerance."""
    worst = 0.0
    for sample in samples:
        with torch.inference_mode():
            expected = reference(sample)
        got = run_session(session, sample)
        if got.shape != expected.shape:
            raise ExportError(
                f"{what}: ONNX Runtime gives shape {tuple(got.shape)} on input "
                f"{tuple(sample.shape)}, the eager model {tuple(expected.shape)}; nothing "
                "was kept. Please report this."
            )
        difference, tolerance, unit = disagreement(got.cpu(), expected.cpu(), meaning)
        worst = max(worst, difference)
        if not worst <= tolerance:
            shown = "a changed top-1 answer" if worst == float("inf") else f"{worst:.3g} {unit}"
            raise ExportError(
                f"{what}: ONNX Runtime differs from the eager model by {shown} on input "
                f"{tuple(sample.shape)} (tolerance {tolerance:g} {unit}); nothing was kept. Use the eager "
                "backend, and please report this."
            )
    return worst


def session_for(source: Path | bytes, device: torch.device) -> Any:
    """An ONNX Runtime session for a graph (a file or its bytes): CUDA's execution provider when
    ``device`` is a CUDA device and onnxruntime has it, else the CPU one with this machine's cores."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; dlwp logs what matters
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers: list[Any] = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    else:
        if device.type == "cuda":
            log.warning(
                "onnxruntime has no CUDA execution provider here (install onnxruntime-gpu); "
                "the ONNX graph runs on the CPU"
            )
        options.intra_op_num_threads = usable_cores()
        # no busy-waiting between runs: predict's decoding threads need the cores then (measured on
        # the shared 2-core machine: ResNet-101 batches 10-20 % faster per image without spinning)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(
        source if isinstance(source, bytes) else str(source), sess_options=options, providers=providers
    )


def run_session(session: Any, x: torch.Tensor) -> torch.Tensor:
    """The session's first output for input ``x`` (copied through host memory), on ``x``'s device."""
    array = x.detach().to("cpu", torch.float32 if x.is_floating_point() else x.dtype).contiguous().numpy()
    (output, *_) = session.run(None, {session.get_inputs()[0].name: array})
    return torch.from_numpy(output).to(x.device)


def dynamic_samples(sample: torch.Tensor, dynamic: Sequence[int]) -> list[torch.Tensor]:
    """``sample`` and a second input differing in every ``dynamic`` axis (one fewer image, 4 more
    pixels of height and 8 of width), to check that those axes really are dynamic."""
    shape = list(sample.shape)
    if 0 in dynamic:
        shape[0] = 1 if shape[0] > 1 else 2
    if 2 in dynamic:
        shape[2] += 4
    if 3 in dynamic:
        shape[3] += 8
    generator = torch.Generator().manual_seed(1)
    if sample.dtype == torch.uint8:
        other = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    else:
        other = torch.randn(shape, generator=generator).to(sample.dtype)
    return [sample, other.to(sample.device)]


def graph_intact(copy: Path, record: dict) -> bool:
    """A cached graph is loaded only when its bytes are those that were checked (its record's
    ``onnx_sha256``)."""
    return isinstance(record.get("onnx_sha256"), str) and sha256_file(copy) == record["onnx_sha256"]

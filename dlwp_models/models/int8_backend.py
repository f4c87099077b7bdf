"""The int8 backend (``backend="onnxruntime-int8"``): a network's float32 ONNX graph (the ONNX
Runtime backend's, :meth:`.onnx_backend.OnnxRunner.cached_graph`) quantized statically — QDQ
format, weights int8 per output channel, activations uint8 with ranges calibrated on the user's
own photos — and run by ONNX Runtime's integer kernels on the CPU (VNNI where the CPU has it).

The quantized graph is made once by ``dlwp quantize`` (:mod:`dlwp_models.quantize`, which also
holds its accuracy gate) and cached beside the weight file as a derived copy
(:func:`dlwp_models.weights.derived.derived_copy`)::

    <weights>.int8.torch<v>.ort<v>.<H>x<W>.<method>.<calibration digest>.onnx

keyed by the weight file's sha256 (in its record), the torch and onnxruntime versions, the input
size, the calibration method and the digest of the calibration photos; its record holds the
sha256 of the graph (a truncated or foreign file is never loaded) and the gate's report. At run
time the newest sound quantized graph of the weight file and input size is used; without one the
backend refuses, naming the command that makes it.

This module knows no model family: the families whose registration says ``int8`` call it."""

from __future__ import annotations

import contextlib
import glob
import io
import logging
import tempfile
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import QuantizationError
from ..weights import derived, store
from .onnx_graphs import graph_intact, import_onnxruntime, onnx_versions, run_session, session_for

__all__ = ["INT8", "METHODS", "Int8Runner", "artefact_suffix", "quantize_graph", "quantized_graph"]

log = logging.getLogger(__name__)

#: the backend's name
INT8 = "onnxruntime-int8"
#: calibration methods (onnxruntime.quantization.CalibrationMethod): the activation range is the
#: observed extremes ("minmax"), the 99.999th percentile of the values' histogram ("percentile"),
#: or the range that keeps the histogram's information best ("entropy")
METHODS = ("percentile", "entropy", "minmax")
LOCK_TIMEOUT = 900.0
_SESSIONS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, Any]] = weakref.WeakKeyDictionary()


def _prefix(size: tuple[int, int]) -> tuple[str, ...]:
    torch_version, ort_version = onnx_versions()
    return ("int8", f"torch{torch_version}", f"ort{ort_version}", f"{size[0]}x{size[1]}")


def artefact_suffix(size: tuple[int, int], method: str, calibration: str) -> str:
    """The derived-copy suffix of the quantized graph at ``size`` calibrated by ``method`` on the
    photos whose digest is ``calibration``."""
    return store.onnx_suffix(*_prefix(size), method, calibration[:16])


def quantize_graph(fp32: Path, out: Path, batches: Iterable[np.ndarray], method: str, *, input_name: str) -> None:
    """Quantize the float32 graph ``fp32`` into ``out`` (static, QDQ, per-channel int8 weights,
    uint8 activations), calibrating activation ranges by ``method`` on ``batches`` (float arrays
    of the graph's input)."""
    import_onnxruntime()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    chosen = {"percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}.get(
        method, CalibrationMethod.MinMax
    )
    chatter = io.StringIO()  # the calibrators print their progress; dlwp logs it
    with tempfile.TemporaryDirectory(prefix="dlwp-int8-") as folder, contextlib.redirect_stdout(chatter):
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(
            str(prepared),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=chosen,
        )
    log.debug("onnxruntime.quantization: %s", chatter.getvalue().strip())


def quantized_graph(weight_file: store.CachedFile, size: tuple[int, int]) -> tuple[Path, dict] | None:
    """The newest sound quantized graph of ``weight_file`` at ``size`` (for this torch and
    onnxruntime), and its record; None when there is none. A damaged one is passed over, and its
    record removed so it is never used again."""
    pattern = f"{glob.escape(weight_file.path.name)}{store.onnx_suffix(*_prefix(size))[:-5]}.*.onnx"
    candidates = []
    for copy in weight_file.path.parent.glob(pattern):
        record = store.current_record(copy)
        if record is not None:
            candidates.append((float(record.get("created", 0)), copy))
    for _, copy in sorted(candidates, reverse=True):
        suffix = copy.name[len(weight_file.path.name) :]
        found = derived.derived_copy(
            weight_file, suffix, lambda _tmp: None, lock_timeout=LOCK_TIMEOUT, validate=graph_intact
        )
        if found is not None:
            return found
    return None


class Int8Runner:
    """Calls a module's network through its quantized graph: ``runner(x)`` for a float
    (N, 3, H, W) batch on the CPU. ``command`` is what makes the graph (for the refusal)."""

    def __init__(
        self,
        model: nn.Module,
        weight_file: store.CachedFile | None,
        *,
        command: str,
        size: tuple[int, int] | None = None,
    ) -> None:
        """``size``: the one input size the caller will use, checked now (a missing graph is then
        refused before any photo is decoded)."""
        import_onnxruntime()
        param = next(model.parameters(), None)
        if param is not None and param.device.type != "cpu":
            raise QuantizationError(
                f"the {INT8} backend runs on the CPU (ONNX Runtime's integer kernels); this model is on "
                f"{param.device}. Use --device cpu, or backend 'onnxruntime' (float32) on the GPU."
            )
        if weight_file is None or weight_file.sha256 is None:
            raise QuantizationError(
                f"the {INT8} backend runs weight sets quantized with `{command}`; this model's weights "
                "are not a verified weight set's (random, a one-off file, or a new head). Save them as a "
                "weight set (dlwp finetune writes one) and quantize that."
            )
        self.model, self.weight_file, self.command = model, weight_file, command
        if size is not None:
            self._session(size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return run_session(self._session((int(x.shape[2]), int(x.shape[3]))), x)

    def _session(self, size: tuple[int, int]) -> Any:
        sessions = _SESSIONS.setdefault(self.model, {})
        if size not in sessions:
            found = quantized_graph(self.weight_file, size)
            if found is None:
                raise QuantizationError(
                    f"no int8 graph of {self.weight_file.name} at {size[0]}x{size[1]} for this torch and "
                    f"onnxruntime yet; make it once with `{self.command}` (it checks the accuracy), then "
                    f"use backend '{INT8}'."
                )
            log.info("int8 backend: using %s (%s)", found[0].name, found[1].get("report", {}).get("summary", ""))
            sessions[size] = session_for(found[0], torch.device("cpu"))
        return sessions[size]

"""``dlwp quantize``: a classifier's int8 graph, calibrated on the user's photos and kept only when
it holds its accuracy.

1. Build the weight set's model; take the float32 graph of its network (the ONNX Runtime
   backend's, cached beside the weight file).
2. Calibrate activation ranges on the photos of ``--calibrate`` (each through the weights'
   evaluation transform, as ``predict`` prepares it) by ``--method``, and quantize statically
   (:func:`dlwp_models.models.int8_backend.quantize_graph`).
3. Measure on ``--eval`` (labelled photos, one folder per class) or, without it, on every fifth
   calibration photo, held out of the calibration: the top-1 agreement with the float32 model
   (eager PyTorch, the default backend), the mean difference of the top-1 percentage, and with
   labels acc@1 of both.
4. The gate: the graph is kept (a derived copy beside the weight file, keyed by the weight file's
   sha256, the calibration photos' digest, the method, the input size and the library versions;
   the report in its record) only when the agreement is at least ``min_agreement`` % and the
   acc@1 drop at most ``max_drop`` points; otherwise :class:`~dlwp_models.errors.QuantizationError`
   says why and nothing is kept. The same key again reuses the kept graph without work.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError, QuantizationError
from .evaluation.data import files_under, model_indices, read_labelled
from .hub import build
from .inputs.images import load_image
from .models.int8_backend import INT8, METHODS, artefact_suffix, quantize_graph
from .models.onnx_backend import OnnxRunner
from .models.onnx_graphs import graph_intact, onnx_versions, run_session, session_for
from .models.registry import family_info
from .weights import derived
from .weights.integrity import sha256_file

__all__ = ["quantize", "HOLD_OUT"]

log = logging.getLogger(__name__)

#: without --eval, every HOLD_OUT-th calibration photo is held out for the measurement
HOLD_OUT = 5
LOCK_TIMEOUT = 1800.0


def _photos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"--calibrate {folder} is not a folder of photos.")
    found = files_under(folder)
    if not found:
        raise DataError(f"--calibrate {folder} holds no files; give a folder of your own photos (a few hundred).")
    return found


def _crops(model: torch.nn.Module, paths: list[Path], skipped: list[str]) -> tuple[list[torch.Tensor], list[Path]]:
    crops, kept = [], []
    for path in paths:
        try:
            crops.append(model.transforms.crop_pixels(load_image(path)))
            kept.append(path)
        except (OSError, ValueError) as exc:
            skipped.append(f"{path}: {exc}")
            log.warning("skipped %s: %s", path, exc)
    return crops, kept


def _batches(model: torch.nn.Module, crops: list[torch.Tensor], size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(crops), size):
        batch = model.transforms.collate(crops[start : start + size], torch.device("cpu"), torch.float32)
        yield batch.contiguous().numpy()


def _measure(model, session, crops, labels: list[int] | None, batch_size: int) -> dict[str, Any]:
    eager, int8 = [], []
    with torch.inference_mode():
        for batch in _batches(model, crops, batch_size):
            x = torch.from_numpy(batch)
            eager.append(model(x.contiguous(memory_format=torch.channels_last)).float())
            int8.append(run_session(session, x).float())
    p32, p8 = (torch.softmax(torch.cat(t), dim=1) * 100 for t in (eager, int8))
    top32, top8 = p32.argmax(1), p8.argmax(1)
    rows = torch.arange(len(top32))
    report: dict[str, Any] = {
        "photos": len(crops),
        "top1_agreement": round(100.0 * float((top32 == top8).float().mean()), 4),
        "mean_abs_delta_top1_percent": round(float((p32[rows, top32] - p8[rows, top32]).abs().mean()), 4),
    }
    if labels is not None:
        truth = torch.tensor(labels)
        report["acc@1_fp32"] = round(100.0 * float((top32 == truth).float().mean()), 4)
        report["acc@1_int8"] = round(100.0 * float((top8 == truth).float().mean()), 4)
    return report


def quantize(
    model_name: str,
    *,
    calibrate: str | Path,
    weights: str | None = None,
    eval_dir: str | Path | None = None,
    method: str = "percentile",
    max_drop: float = 0.5,
    min_agreement: float = 99.0,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[str, Any]:
    """Make (or reuse) the int8 graph of ``model_name``'s weight set; returns its report (with
    ``"artefact"``, the graph's path, and ``"reused"``). See the module docstring."""
    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {method!r}.")
    if not family_info(model_name).int8:
        raise QuantizationError(f"the {INT8} backend runs the classifiers; {model_name!r} is not one.")
    model = build(model_name, weights=weights or "DEFAULT", progress=progress, map_location="cpu").eval()
    size = (model.transforms.crop, model.transforms.crop)
    skipped: list[str] = []
    photos = _photos(Path(calibrate))
    if eval_dir is None:
        held = photos[::HOLD_OUT]
        calibration = [p for i, p in enumerate(photos) if i % HOLD_OUT]
        if not calibration:
            raise DataError(f"--calibrate {calibrate} has {len(photos)} photo(s); give more, or --eval PHOTOS.")
        data = None
    else:
        data = read_labelled(eval_dir)
        mapped = model_indices(data.classes, model.categories, data.source)
        calibration = photos
    # the key: the calibration files' bytes (an existing graph is found without decoding a photo)
    digest = hashlib.sha256("".join(sorted(sha256_file(p) for p in calibration)).encode()).hexdigest()
    made: list[dict] = []
    eval_source = f"{len(held)} held-out calibration photos" if data is None else data.source

    def evaluation_set() -> tuple[list[torch.Tensor], list[int] | None]:
        if data is None:
            return _crops(model, held, skipped)[0], None
        crops, kept = _crops(model, [p for p, _ in data.samples], skipped)
        truth = dict(data.samples)
        return crops, [mapped[truth[p]] for p in kept]

    def make(tmp: Path) -> dict:
        fp32 = OnnxRunner(model, model.weight_file, any_size=False, meaning="logits").cached_graph(size)
        if fp32 is None:
            raise QuantizationError(
                f"{model.weights.name}: the float32 graph could not be kept beside the weight file (a read-only or "
                "full cache?); the int8 graph is made from it."
            )
        eval_crops, labels = evaluation_set()
        calib_crops, _ = _crops(model, calibration, skipped)
        if not calib_crops or not eval_crops:
            raise DataError("no calibration or evaluation photo could be read as an image; see the skipped files.")
        start = time.perf_counter()
        # the calibrators stack every batch's activations: batches of one size (a divisor of the count)
        even = max(d for d in range(1, batch_size + 1) if len(calib_crops) % d == 0)
        quantize_graph(fp32, tmp, _batches(model, calib_crops, even), method, input_name="input")
        seconds = time.perf_counter() - start
        report = _measure(model, session_for(tmp, torch.device("cpu")), eval_crops, labels, batch_size)
        report.update(eval_source=eval_source, calibration_photos=len(calib_crops), method=method)
        report["quantize_seconds"] = round(seconds, 2)
        _gate(report, min_agreement, max_drop)
        torch_version, ort_version = onnx_versions()
        made.append(report)
        return {
            "onnx_sha256": sha256_file(tmp),
            "created": time.time(),
            "report": report,
            "calibration_sha256": digest,
            "torch": torch_version,
            "onnxruntime": ort_version,
        }

    suffix = artefact_suffix(size, method, digest)
    found = derived.derived_copy(model.weight_file, suffix, make, lock_timeout=LOCK_TIMEOUT, validate=graph_intact)
    if found is None:
        raise QuantizationError("the int8 graph could not be kept beside the weight file (a read-only or full cache?).")
    path, record = found
    report = dict(record["report"])
    if not made:  # a kept graph answers to this run's gate, and to this run's photos when they differ
        if report.get("eval_source") != eval_source:
            eval_crops, labels = evaluation_set()
            if not eval_crops:
                raise DataError("no evaluation photo could be read as an image; see the skipped files.")
            measured = _measure(model, session_for(path, torch.device("cpu")), eval_crops, labels, batch_size)
            report = {**{k: report[k] for k in ("calibration_photos", "method") if k in report}, **measured}
            report["eval_source"] = eval_source
        _gate(report, min_agreement, max_drop, kept=True)
    return {**report, "artefact": str(path), "reused": not made, "skipped": skipped}


def _gate(report: dict[str, Any], min_agreement: float, max_drop: float, *, kept: bool = False) -> None:
    problems = []
    if report["top1_agreement"] < min_agreement:
        problems.append(f"top-1 agreement with float32 {report['top1_agreement']:.2f} % < {min_agreement:g} %")
    if "acc@1_fp32" in report and report["acc@1_fp32"] - report["acc@1_int8"] > max_drop:
        drop = report["acc@1_fp32"] - report["acc@1_int8"]
        problems.append(f"acc@1 drops {drop:.2f} points ({report['acc@1_fp32']:.2f} → {report['acc@1_int8']:.2f})")
    report["summary"] = f"top-1 agreement {report['top1_agreement']:.2f} % on {report['photos']} photos" + (
        f", acc@1 {report['acc@1_fp32']:.2f} → {report['acc@1_int8']:.2f} %" if "acc@1_fp32" in report else ""
    )
    if problems:
        raise QuantizationError(
            f"the int8 graph fails its accuracy gate: {'; '.join(problems)} (measured on {report['eval_source']}, "
            f"calibrated by {report.get('method')} on {report.get('calibration_photos')} photos); "
            + (
                "the graph kept earlier stays, but this run refuses it (the int8 backend still uses it: remove it with "
                "the weights' cache folder, or calibrate anew). "
                if kept
                else "nothing was kept. "
            )
            + "Calibrate on more (and more typical) photos, try another --method, or keep the float32 backend."
        )

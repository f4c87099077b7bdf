"""The ``int8`` task of ``_worker.py`` (kept apart so each module stays small); ``args["step"]`` is

* ``quantize``  one ``dlwp_models.quantize.quantize`` call in this fresh process, timed, with the
                process's resident memory before it and its peak (``ru_maxrss``); a refusal by the
                accuracy gate (``QuantizationError``) is an answer, not a failure;
* ``speed``     on the same photos, same process, alternating rounds: the book's loop (where the
                model has one in ``_book.py``), eager ``predict``, ``predict(backend="onnxruntime")``
                and ``predict(backend="onnxruntime-int8")``; the predictions compared;
* ``first``     a fresh process: the model built (not timed), then its first ``predict`` of one
                image on ``backend`` (the cached graph found, hashed, its session made), and a
                second call of the same image for comparison.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

INT8 = "onnxruntime-int8"


def _rss() -> int:
    text = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) * 1024 for line in text.splitlines() if line.startswith("VmRSS:"))


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def step_quantize(args: dict) -> dict:
    from dlwp_models.errors import QuantizationError
    from dlwp_models.quantize import quantize

    before = _rss()
    t0 = time.perf_counter()
    report: dict | None = None
    refused = None
    try:
        report = quantize(
            args["model"],
            calibrate=args["calibrate"],
            eval_dir=args.get("eval_dir"),
            method=args.get("method", "percentile"),
            min_agreement=args.get("min_agreement", 99.0),
            max_drop=args.get("max_drop", 0.5),
        )
    except QuantizationError as exc:
        refused = str(exc)
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {
        "seconds": seconds,
        "report": report,
        "refused": refused,
        "rss_before": before,
        "peak_rss": _peak_rss(),
    }
    if report is not None:
        out["artefact_mb"] = Path(report["artefact"]).stat().st_size / 1e6
    return out


def _top1_stats(reference: list, other: list) -> dict:
    """Top-1 agreement of two lists of top-5 predictions, the same top-5 set, and the largest
    difference of the top-1 percentage where the top-1 labels agree."""
    agree = [a[0][0] == b[0][0] for a, b in zip(reference, other)]
    same_set = [{lab for lab, _ in a} == {lab for lab, _ in b} for a, b in zip(reference, other)]
    deltas = [abs(a[0][1] - b[0][1]) for a, b, ok in zip(reference, other, agree) if ok]
    return {
        "n": len(agree),
        "top1_agree": sum(agree),
        "same_top5_set": sum(same_set),
        "max_top1_delta_points": max(deltas) if deltas else None,
        "mean_top1_delta_points": sum(deltas) / len(deltas) if deltas else None,
    }


def step_speed(args: dict, hub_load: Callable[[str], Any], compare: Callable[[list, list], dict]) -> dict:
    import _book
    import onnxruntime
    import torch

    name, paths, reps = args["model"], args["paths"], args["reps"]
    ours = hub_load(name)
    labels = list(ours.categories)
    runs: dict[str, Callable[[], list]] = {}
    if args.get("book"):
        base = _book.torchvision_load(name).eval()
        preprocess = _book.book_transform()
        runs["book"] = lambda: [_book.book_classify(base, p, preprocess, labels) for p in paths]
        _book.book_classify(base, paths[0], preprocess, labels)  # warm-up
    runs["predict"] = lambda: [list(p) for p in ours.predict(paths)]
    runs["onnxruntime"] = lambda: [list(p) for p in ours.predict(paths, backend="onnxruntime")]
    runs["int8"] = lambda: [list(p) for p in ours.predict(paths, backend=INT8)]
    for backend in ("eager", "onnxruntime", INT8):  # warm-up: sessions made, graphs found
        ours.predict(paths[:2], backend=backend)
    order = list(runs)
    times: dict[str, list[float]] = {k: [] for k in order}
    outputs: dict[str, list] = {}
    for r in range(reps):
        for key in order if r % 2 == 0 else order[::-1]:  # alternate: the machine drifts
            t0 = time.perf_counter()
            outputs[key] = runs[key]()
            times[key].append(time.perf_counter() - t0)
    from dlwp_models.models.int8_backend import quantized_graph

    graph, record = quantized_graph(ours.weight_file, (ours.transforms.crop, ours.transforms.crop))
    return {
        "n": len(paths),
        "times": times,
        "int8_graph": graph.name,
        "int8_graph_mb": graph.stat().st_size / 1e6,
        "int8_report": record.get("report", {}),
        "int8_vs_predict": _top1_stats(outputs["predict"], outputs["int8"]),
        "int8_vs_predict_top5": compare(outputs["predict"], outputs["int8"]),
        "int8_vs_onnxruntime": _top1_stats(outputs["onnxruntime"], outputs["int8"]),
        "onnxruntime_vs_predict": compare(outputs["predict"], outputs["onnxruntime"]),
        "onnxruntime": onnxruntime.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def step_first(args: dict, hub_load: Callable[[str], Any]) -> dict:
    import logging

    name, image, backend = args["model"], args["image"], args["backend"]
    messages: list[str] = []  # what the library says it did (graph used, exported, ...)
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(f"{record.levelname}: {record.getMessage()}"[:300])
    library = logging.getLogger("dlwp_models")
    library.addHandler(handler)
    library.setLevel(logging.INFO)
    t0 = time.perf_counter()
    model = hub_load(name)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = model.predict(image, backend=backend)
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.predict(image, backend=backend)
    second_s = time.perf_counter() - t0
    return {
        "build_s": build,
        "first_s": first_s,
        "second_s": second_s,
        "prediction": list(first)[:1],
        "log": messages,
    }


def task_int8(args: dict, hub_load: Callable[[str], Any], compare: Callable[[list, list], dict]) -> dict:
    """``hub_load`` and ``compare`` are ``_worker.py``'s (the throughput task's load and comparison)."""
    step = args["step"]
    if step == "quantize":
        return step_quantize(args)
    if step == "speed":
        return step_speed(args, hub_load, compare)
    if step == "first":
        return step_first(args, hub_load)
    raise ValueError(f"unknown int8 step {step!r}")

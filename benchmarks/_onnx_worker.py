"""The ``onnx`` task of ``_worker.py`` (kept apart so each module stays small): on the same
photos, same process, alternating rounds,

* the book's loop (PIL open → Resize, CenterCrop, ToTensor, Normalize → model, one at a time);
* eager ``model.predict(paths)``;
* ``model.predict(paths, backend="onnxruntime")``;
* ONNX Runtime "by hand": the graph exported once, then ``session.run`` per image on the book's
  preprocessing (what a user who exports and runs it themselves would write);

plus the one-time costs: the first backend call (export, check by ONNX Runtime, session) and
the first call of a second model object (the cached graph: hash, check, session)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch


def _top5(logits: torch.Tensor, labels: list[str]) -> list:
    percent = torch.softmax(logits.float(), dim=1)[0] * 100
    values, indices = percent.topk(5)
    return [(labels[i], v) for i, v in zip(indices.tolist(), values.tolist())]


def task_onnx(args: dict, hub_load: Callable[[str], Any], compare: Callable[[list, list], dict]) -> dict:
    """``hub_load`` and ``compare`` are ``_worker.py``'s (the throughput task's load and comparison)."""
    import _book
    import onnxruntime
    from PIL import Image

    name, paths, reps = args["model"], args["paths"], args["reps"]
    ours = hub_load(name)
    base = _book.torchvision_load(name).eval()
    labels = list(ours.categories)
    preprocess = _book.book_transform()

    t0 = time.perf_counter()
    ours.predict(paths[:1], backend="onnxruntime")
    first_call = time.perf_counter() - t0  # export + check + session + one image
    second = hub_load(name)
    t0 = time.perf_counter()
    second.predict(paths[:1], backend="onnxruntime")
    cached_call = time.perf_counter() - t0  # hash + check + session + one image
    del second
    graph = next(ours.weight_file.path.parent.glob(f"{ours.weight_file.name}.*.onnx"))

    def by_hand(session: Any):
        out = []
        for p in paths:
            x = preprocess(Image.open(p)).unsqueeze(0).numpy()
            out.append(_top5(torch.from_numpy(session.run(None, {input_name: x})[0]), labels))
        return out

    runs = {
        "book": lambda: [_book.book_classify(base, p, preprocess, labels) for p in paths],
        "predict": lambda: [list(p) for p in ours.predict(paths)],
        "backend": lambda: [list(p) for p in ours.predict(paths, backend="onnxruntime")],
    }
    order = list(runs)
    _book.book_classify(base, paths[0], preprocess, labels)  # warm-up
    ours.predict(paths[:2])
    ours.predict(paths[:2], backend="onnxruntime")
    times: dict[str, list[float]] = {k: [] for k in (*order, "by_hand")}
    outputs: dict[str, list] = {}
    for r in range(reps):
        for key in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            outputs[key] = runs[key]()
            times[key].append(time.perf_counter() - t0)
    # ONNX Runtime by hand, as a user would run it (a session with default options), measured last:
    # its worker threads spin-wait between runs by default, which would slow every side measured
    # while the session exists
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    by_hand(session)  # warm-up
    for _ in range(reps):
        t0 = time.perf_counter()
        outputs["by_hand"] = by_hand(session)
        times["by_hand"].append(time.perf_counter() - t0)
    del session
    return {
        "n": len(paths),
        "times": times,
        "first_backend_call_s": first_call,
        "cached_backend_call_s": cached_call,
        "graph_mb": graph.stat().st_size / 1e6,
        "onnxruntime": onnxruntime.__version__,
        "torch_threads": torch.get_num_threads(),
        "backend_vs_predict": compare(outputs["predict"], outputs["backend"]),
        "backend_vs_book": compare(outputs["book"], outputs["backend"]),
        "by_hand_vs_book": compare(outputs["book"], outputs["by_hand"]),
    }

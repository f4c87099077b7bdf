"""Issue 16: images/s of ``model.predict(paths, backend="onnxruntime")`` against eager
``predict``, the book's loop and ONNX Runtime used by hand (the graph exported once, then
``session.run`` per image on the book's preprocessing), on the same generated 1280×720 JPEGs, same
process, alternating, medians; the one-time export cost beside, and the predictions compared.

    python benchmarks/bench_onnx.py [--quick]
"""

from __future__ import annotations

from _setup import Row, log, median, run_worker, yes_no

#: backend ≥ 1.2× eager predict (resnet101 only: the forward pass alone is 1.27× faster), ≥ 1.5×
#: the book's loop, ≥ 1.2× ONNX Runtime by hand
TARGETS = {"resnet101": {"predict": 1.2, "book": 1.5, "by_hand": 1.2}, "alexnet": {"book": 1.5, "by_hand": 1.2}}
NAMES = {"predict": "eager predict", "book": "the book's loop", "by_hand": "ONNX Runtime by hand"}
MAX_POINTS = 0.05  # the backend's percentages against eager predict's (same top-5 in order)


def run(ws, *, reps: int, paths: list[str], models=("resnet101", "alexnet")) -> tuple[list[Row], dict]:
    rows: list[Row] = []
    raw = {}
    env = ws.env(offline=True)
    for model in models:
        log(f"[onnx] {model}: {len(paths)} photos, {reps} rounds (book loop, predict, backend, by hand)")
        res = run_worker("onnx", {"model": model, "paths": paths, "reps": reps}, env, timeout=1200)
        raw[model] = res
        n = res["n"]
        ips = {k: n / median(v) for k, v in res["times"].items()}
        for other in ("predict", "book", "by_hand"):
            ratio = ips["backend"] / ips[other]
            target = TARGETS[model].get(other)
            rows.append(
                Row(
                    f'onnx, {model}, predict(backend="onnxruntime") vs {NAMES[other]} '
                    f"({n} 1280×720 JPEGs, median of {reps})",
                    f"{ips['backend']:.2f} img/s",
                    f"{ips[other]:.2f} img/s",
                    f"{ratio:.2f}×",
                    f"≥ {target:g}×" if target else "—",
                    yes_no(ratio >= target) if target else "—",
                )
            )
        cmp = res["backend_vs_predict"]
        rows.append(
            Row(
                f"onnx, {model}, backend's predictions vs eager predict's",
                f"same top-5 in order: {cmp['same_labels_in_order']}; max |Δ%| {cmp['max_percent_diff']:.1e}",
                "eager predict",
                "—",
                f"same top-5, ≤ {MAX_POINTS:g} points",
                yes_no(cmp["same_labels_in_order"] and cmp["max_percent_diff"] <= MAX_POINTS),
            )
        )
        rows.append(
            Row(
                f"onnx, {model}, one-time cost: first backend call (export, check, session, 1 image)",
                f"{res['first_backend_call_s']:.1f} s",
                "—",
                "—",
                "reported",
                "—",
                f"a later process's first call (cached graph: hash, check, session, 1 image): "
                f"{res['cached_backend_call_s']:.2f} s; graph {res['graph_mb']:.0f} MB; "
                f"onnxruntime {res['onnxruntime']}",
            )
        )
        log(
            f"[onnx] {model}: backend {ips['backend']:.2f}, predict {ips['predict']:.2f}, book {ips['book']:.2f}, "
            f"by hand {ips['by_hand']:.2f} img/s; first call {res['first_backend_call_s']:.1f} s; equal: {cmp}"
        )
    return rows, raw

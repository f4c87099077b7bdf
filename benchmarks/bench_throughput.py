"""Target 3: images/s of ``model.predict(list_of_paths)`` versus the book's loop (PIL open →
Resize(256), CenterCrop(224), ToTensor, Normalize → model, one image at a time under no_grad) on
generated 1280×720 JPEGs, same process, alternating, medians; predictions compared. Two prototypes
that are NOT in dlwp are measured beside them: JPEG draft-mode decoding, and decoding/transforming in
a thread pool.

    python benchmarks/bench_throughput.py [--quick]
"""

from __future__ import annotations

from _setup import Row, log, median, run_worker, yes_no

TARGETS = {"resnet101": 1.5, "alexnet": 3.0}
PROTOTYPES = ["batched", "batched_threads", "batched_threads_cl", "batched_threads_draft"]
LABELS = {
    "batched": "prototype A: PIL part per image, ONE ToTensor+Normalize per batch",
    "batched_threads": "prototype B: A with decode/resize/crop in 2 threads",
    "batched_threads_cl": "prototype C: B, batches of 16 passed channels-last (model unchanged)",
    "batched_threads_draft": "prototype D: B with JPEG draft decoding",
}


def _identical(cmp: dict) -> bool:
    return cmp["same_labels_in_order"] and cmp["max_percent_diff"] <= 1e-3


def run(ws, *, reps: int, paths: list[str], models=("resnet101", "alexnet")) -> tuple[list[Row], dict]:
    rows: list[Row] = []
    raw = {}
    env = ws.env(offline=True)
    for model in models:
        log(f"[throughput] {model}: {len(paths)} photos, {reps} rounds (book loop, predict, prototypes)")
        res = run_worker("throughput", {"model": model, "paths": paths, "reps": reps, "prototypes": PROTOTYPES},
                         env, timeout=900)
        raw[model] = res
        n = res["n"]
        ips = {k: n / median(v) for k, v in res["times"].items()}
        ratio = ips["predict"] / ips["book"]
        target = TARGETS[model]
        cmp = res["compare_predict"]
        rows.append(Row(f"throughput, {model}, predict(list of {n} 1280×720 JPEGs) vs book loop "
                        f"(median of {reps})", f"{ips['predict']:.2f} img/s", f"{ips['book']:.2f} img/s",
                        f"{ratio:.2f}×", f"≥ {target:g}×", yes_no(ratio >= target)))
        rows.append(Row(f"predictions equal to the book loop, {model}",
                        f"same top-5 in order: {cmp['same_labels_in_order']}; max |Δ%| {cmp['max_percent_diff']:.1e}"
                        f"{'; bitwise' if cmp['bitwise_equal'] else ''}",
                        "book loop", "—", "identical", yes_no(_identical(cmp))))
        for proto in PROTOTYPES:
            c, v = res[f"compare_{proto}"], res[f"vs_predict_{proto}"]
            r = ips[proto] / ips["book"]
            note = (f"vs book: same top-5 in order {c['same_labels_in_order']}, same top-5 set {c['same_top5_set']}, "
                    f"max |Δ%| {c['max_percent_diff']:.2g}; vs predict: bitwise equal {v['bitwise_equal']}")
            if proto == "batched":
                note += f"; network input bitwise equal to predict's: {res.get('batched_input_bitwise_equal')}"
            if "draft" in proto:
                d = res["draft_input_diff_levels"]
                note += (f"; input moves by max {d['max']:.0f} / mean {d['mean']:.2f} 8-bit levels; "
                         f"draft rule (same top-5 set, ≤ 0.5 points): "
                         f"{'within' if c['same_top5_set'] and c['max_percent_diff'] <= 0.5 else 'OUTSIDE'}")
            rows.append(Row(f"{LABELS[proto]}, {model}", f"{ips[proto]:.2f} img/s", f"{ips['book']:.2f} img/s",
                            f"{r:.2f}× ({ips[proto] / ips['predict']:.2f}× predict)", "not in dlwp", "—", note))
        log(f"[throughput] {model}: predict {ips['predict']:.2f} img/s vs book {ips['book']:.2f} img/s = {ratio:.2f}× "
            f"(target {target}×); " + ", ".join(f"{p} {ips[p]:.2f}" for p in PROTOTYPES) + f"; equal: {cmp}")
    return rows, raw


if __name__ == "__main__":
    import run as runner

    runner.main(default_only=["throughput"])

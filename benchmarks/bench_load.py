"""Target 1: warm load (weights cached) of resnet101, alexnet, cyclegan and neuraltalk2 through
``torch.hub.load(<checkout>, name, source="local", pretrained=True)`` versus the plain way
(torchvision's builder with its weights enum for the classifiers; build normally + ``torch.load`` +
``load_state_dict`` for the others). Each timed load runs in a fresh process that has already
imported torch and torchvision; the two sides alternate; medians. Also: cold-process time to the
first prediction, peak resident memory of the load step (VmHWM after resetting it, minus the RSS
before the step), and a same-process identity check (state, outputs, ordinary parameters).

    python benchmarks/bench_load.py [--quick] [--models resnet101,alexnet]
"""

from __future__ import annotations

from _setup import MB, Row, fmt_s, log, median, run_worker, yes_no

MODELS = ("resnet101", "alexnet", "cyclegan", "neuraltalk2")
SPEEDUP_TARGET = 4.0
RSS_SLACK = 1.25


def run(ws, *, runs: int, models=MODELS, images: dict[str, str]) -> tuple[list[Row], dict]:
    rows: list[Row] = []
    raw: dict = {}
    env = ws.env(offline=True)
    for model in models:
        image = images[model]
        args = {"model": model, "image": image, "files": {k: str(v) for k, v in ws.cached(model).items()}}
        log(f"[load] {model}: identity check (also the warm-up), then {runs} runs per side in fresh processes")
        check = run_worker("check-load", args, env)  # both loads: page cache and .pyc files are warm after it
        results: dict[str, list[dict]] = {"ours": [], "baseline": []}
        for r in range(runs):
            for side in ("ours", "baseline") if r % 2 == 0 else ("baseline", "ours"):
                results[side].append(run_worker("load", {**args, "side": side}, env))
        raw[model] = {"results": results, "check": check}

        def med(side: str, key, results: dict[str, list[dict]] = results) -> float:
            return median(key(x) for x in results[side])

        load_o, load_b = med("ours", lambda x: x["load_s"]), med("baseline", lambda x: x["load_s"])
        cold_o = med("ours", lambda x: x["t_pred"] - x["t_spawn"])
        cold_b = med("baseline", lambda x: x["t_pred"] - x["t_spawn"])
        imports = median(x["t_imported"] - x["t_spawn"] for side in results for x in results[side])
        peak_o = max(x["peak_rss_delta"] for x in results["ours"])
        peak_b = max(x["peak_rss_delta"] for x in results["baseline"])
        size = ws.file_sizes[model]
        limit = size * RSS_SLACK
        speedup = load_b / load_o
        naive = (
            "torchvision builder + weights enum"
            if model in ("resnet101", "alexnet")
            else "build + torch.load + load_state_dict"
        )
        rows.append(
            Row(
                f"warm load step, {model} (median of {runs}; baseline: {naive})",
                fmt_s(load_o),
                fmt_s(load_b),
                f"{speedup:.1f}× faster",
                f"≥ {SPEEDUP_TARGET:g}×",
                yes_no(speedup >= SPEEDUP_TARGET),
            )
        )
        rows.append(
            Row(
                f"cold process → first prediction, {model} (median; imports ≈ {imports:.1f} s)",
                fmt_s(cold_o),
                fmt_s(cold_b),
                f"{cold_b / cold_o:.2f}× faster",
                "report",
                "—",
            )
        )
        rows.append(
            Row(
                f"peak RSS of the load step, {model} (max of {runs}; files {size / MB:.0f} MB)",
                f"{peak_o / MB:.0f} MB",
                f"{peak_b / MB:.0f} MB",
                f"{peak_o / peak_b:.2f}× of baseline; {peak_o / size:.2f}× file size",
                f"≤ {limit / MB:.0f} MB (file + 25 %)",
                yes_no(peak_o <= limit),
            )
        )
        same = check["same_values"] and check["same_outputs"] and not check["ordinary_params"] and check["writable"]
        detail = (
            f"state equal: {check['same_values']}, outputs equal: {check['same_outputs']}, "
            f"parameters ordinary: {not check['ordinary_params']}, writable: {check['writable']}"
        )
        rows.append(Row(f"identical to a normal load, {model}", detail, "normal load", "—", "identical", yes_no(same)))
        log(
            f"[load] {model}: ours {load_o:.3f}s vs {load_b:.3f}s ({speedup:.1f}×); cold {cold_o:.2f}s vs "
            f"{cold_b:.2f}s; peak RSS {peak_o / MB:.0f} MB vs {peak_b / MB:.0f} MB (file {size / MB:.0f} MB); "
            f"identical: {same}"
        )
    return rows, raw

"""Run the performance benchmarks of issue 7 and write benchmarks/RESULTS.md.

    python benchmarks/run.py            # everything (about 5 minutes on a 2-core machine)
    python benchmarks/run.py --quick    # fewer repetitions; figures are rougher
    python benchmarks/run.py --only load,list --no-write

Every figure is measured against its baseline in the same run (the machine is shared and noisy),
printed as a ratio with both absolute numbers, and summarised in a table. Weight files are
generated (random values in the upstream formats, served once from 127.0.0.1 and fetched through
dlwp); nothing is downloaded from elsewhere and nothing here ran with the real weights.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _setup import BENCH_DIR, Row, Workspace, log, make_photos

BENCHES = ("load", "list", "throughput", "onnx", "int8", "batch", "caption", "download")


def _table(rows: list[Row]) -> str:
    head = "| figure | ours | baseline | ratio | target | met? |\n|---|---|---|---|---|---|\n"
    lines = []
    for r in rows:
        note = f"<br><sub>{r.note}</sub>" if r.note else ""
        lines.append(f"| {r.figure}{note} | {r.ours} | {r.baseline} | {r.ratio} | {r.target} | {r.met} |")
    return head + "\n".join(lines) + "\n"


def _machine() -> str:
    import torch
    import torchvision

    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{os.cpu_count()} CPUs ({cpu}), torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"torchvision {torchvision.__version__}, Python {platform.python_version()}"
    )


def _loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def main(default_only: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (rougher figures)")
    parser.add_argument(
        "--only", default=",".join(default_only or BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}"
    )
    parser.add_argument(
        "--models", default="resnet101,alexnet,cyclegan,neuraltalk2", help="models for the load benchmark"
    )
    parser.add_argument("--runs", type=int, help="fresh-process runs per side (default 5; 3 with --quick)")
    parser.add_argument("--download-mb", type=int, default=200)
    parser.add_argument(
        "--encoder-format",
        choices=("legacy", "zip"),
        default="legacy",
        help="container format of the generated captioning encoder (upstream's is a 2017 legacy torch.save file)",
    )
    parser.add_argument("--results", default=str(BENCH_DIR / "RESULTS.md"))
    parser.add_argument("--no-write", action="store_true", help="print the table, do not write RESULTS.md")
    parser.add_argument("--workdir", default=None, help="parent folder of the temporary workspace")
    parser.add_argument("--keep", action="store_true", help="keep the workspace (generated files) afterwards")
    opts = parser.parse_args()
    only = [b.strip() for b in opts.only.split(",") if b.strip()]
    unknown = set(only) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHES}")
    runs = opts.runs or (3 if opts.quick else 5)
    list_runs = 5 if opts.quick else 9
    reps = 1 if opts.quick else 3
    models = [m.strip() for m in opts.models.split(",") if m.strip()]

    started = time.time()
    load_start = _loadavg()
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    log(f"dlwp benchmarks: {', '.join(only)} ({'quick' if opts.quick else 'full'}); {_machine()}")

    caption_skip = None
    if "caption" in only:
        from bench_caption import caption_ready

        caption_skip = caption_ready()
        if caption_skip:
            log(f"[caption] skipped: {caption_skip}")
    need = set()
    if "load" in only:
        need |= set(models)
    if "throughput" in only or "onnx" in only or "int8" in only or "batch" in only:
        need |= {"resnet101", "alexnet"}
    if "caption" in only and not caption_skip:
        need.add("neuraltalk2")
    if caption_skip:
        models = [m for m in models if m != "neuraltalk2"]
        need.discard("neuraltalk2")

    ws = Workspace.create(opts.workdir, keep=opts.keep)
    rows: list[Row] = []
    raw: dict = {}
    failures: list[str] = []
    timings: list[tuple[str, float, str, str]] = []
    try:
        log(f"workspace {ws.root}")
        order = [m for m in ("resnet101", "alexnet", "cyclegan", "neuraltalk2") if m in need]
        if order:
            ws.publish(order, encoder_format=opts.encoder_format)
        photos = make_photos(ws.root / "photos", 32, 1280, 720)
        small = make_photos(ws.root / "photos_small", 8, 640, 480, seed0=100)
        images = {
            "resnet101": photos[0],
            "alexnet": photos[0],
            "cyclegan": make_photos(ws.root / "horse", 1, 400, 300, 50)[0],
            "neuraltalk2": small[0],
        }

        def attempt(name: str, fn) -> None:
            t0 = time.time()
            load_before = _loadavg()
            try:
                new_rows, data = fn()
                rows.extend(new_rows)
                raw[name] = data
            except Exception as exc:
                import traceback

                traceback.print_exc()
                failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
            timings.append((name, time.time() - t0, load_before, _loadavg()))
            log(f"  ({name} took {time.time() - t0:.0f}s; load average {load_before} -> {_loadavg()})")

        if "load" in only:
            import bench_load

            attempt("load", lambda: bench_load.run(ws, runs=runs, models=models, images=images))
        if "list" in only:
            import bench_list

            attempt("list", lambda: bench_list.run(ws, runs=list_runs))
        if "throughput" in only:
            import bench_throughput

            attempt("throughput", lambda: bench_throughput.run(ws, reps=reps, paths=photos))
        if "onnx" in only:
            import bench_onnx

            attempt("onnx", lambda: bench_onnx.run(ws, reps=reps, paths=photos))
        if "int8" in only:
            import bench_int8

            attempt("int8", lambda: bench_int8.run(ws, reps=reps, paths=photos, quick=opts.quick))
        if "batch" in only:
            import bench_batch

            many = make_photos(ws.root / "photos_batch", 100 if opts.quick else 500, 1280, 720, seed0=1000)
            tiny = make_photos(ws.root / "photos_batch_small", 2100, 96, 96, seed0=5000)
            attempt("batch", lambda: bench_batch.run(ws, paths=many, small=tiny))
        if "caption" in only and not caption_skip:
            import bench_caption

            attempt("caption", lambda: bench_caption.run(ws, reps=reps, paths=small, size_label="640×480"))
            if not opts.quick:
                tiny = make_photos(ws.root / "photos_tiny", 8, 320, 240, seed0=200)
                attempt("caption-320", lambda: bench_caption.run(ws, reps=reps, paths=tiny, size_label="320×240"))
        if "download" in only:
            import bench_download

            attempt("download", lambda: bench_download.run(ws, runs=3 if opts.quick else 5, size_mb=opts.download_mb))
    finally:
        ws.close()

    elapsed = time.time() - started
    table = _table(rows)
    print("\n" + table)
    if caption_skip:
        print(f"caption: skipped ({caption_skip})")
    for failure in failures:
        print(f"FAILED {failure}")
    met = sum(r.met == "yes" for r in rows)
    judged = sum(r.met in ("yes", "no") for r in rows)
    print(f"{met} of {judged} targets met; {elapsed / 60:.1f} min")

    if not opts.no_write:
        stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        text = [
            "# Benchmark results (issue 7)\n",
            f"Produced by `{command}` on {stamp} in {elapsed / 60:.1f} min.  ",
            f"Machine: {_machine()}; load average {load_start} at the start, {_loadavg()} at the end "
            "(shared machine: figures are ratios against a baseline measured in the same run).\n",
            "Weights are **generated** (random values in each upstream file format, served once from "
            "127.0.0.1 and fetched through dlwp); no figure was measured with the real weights. "
            "Speed ratios are baseline time / our time (higher is better); memory ratios are ours / baseline.\n",
            table,
        ]
        if caption_skip:
            text.append(f"\nCaptioning was skipped: {caption_skip}.\n")
        if failures:
            text.append("\nFailed benchmarks:\n\n" + "\n".join(f"- {f}" for f in failures) + "\n")
        text.append(f"\n{met} of {judged} targets met.\n")
        text.append(
            "\n| benchmark | wall time | load average (1, 5, 15 min) before → after |\n|---|---|---|\n"
            + "\n".join(f"| {n} | {s:.0f} s | {a} → {b} |" for n, s, a, b in timings)
            + "\n"
        )
        raw_path = Path(opts.results).with_name("results.json")
        text.append(f"\nRaw measurements of this run: `{raw_path.name}`.\n")
        Path(opts.results).write_text("\n".join(text), encoding="utf-8")
        raw_path.write_text(json.dumps({"command": command, "date": stamp, "raw": raw}, default=str, indent=1))
        log(f"wrote {opts.results} and {raw_path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

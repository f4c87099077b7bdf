"""The int8 backend: images/s of ``model.predict(paths, backend="onnxruntime-int8")`` against eager
``predict``, ``predict(backend="onnxruntime")`` (float32) and the book's loop, on the same generated
1280×720 JPEGs as ``bench_onnx.py`` (same process, alternating rounds, medians); the one-time cost
of ``dlwp quantize`` (export, calibration, quantization, the accuracy measurement) in a fresh
process with its peak memory; the cached int8 graph's first use in a new process; and the top-1
agreement of int8 with float32 on held-out generated photos.

    python benchmarks/bench_int8.py [--quick] [--json FILE]
    python benchmarks/run.py --only int8 [--quick]

The weights are generated (random values, calibrated as in ``_setup.py``), so the agreement
figures say how a *random* network's top-1 survives int8, not how a trained one's does, and acc@1
on the generated labelled photos (class folders named after ImageNet WordNet ids) is meaningless;
both are reported as measured. When the default gate (top-1 agreement ≥ 99 %) refuses a graph,
the benchmark quantizes again with ``min_agreement=0`` for the speed rows and says so.

Calibration keeps every activation of every calibration photo in memory (onnxruntime's
calibrator), so each ``quantize`` worker runs under a resident-memory watchdog: a run that passes
``--rss-limit-gb`` is killed, reported, and the model is calibrated on fewer photos.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _setup import REPO_DIR, WORKER, Row, WorkerError, Workspace, log, make_photos, median, run_worker, yes_no

MODELS = ("resnet101", "alexnet", "resnet50")
BOOK = ("resnet101", "alexnet")  # the models _book.py loads the torchvision way
#: int8 ≥ 3× eager predict and ≥ 4× the book's loop (resnet101), ≥ 4× the book's loop (alexnet),
#: ≥ 2× ONNX Runtime float32 (resnet50)
TARGETS = {"resnet101": {"predict": 3.0, "book": 4.0}, "alexnet": {"book": 4.0}, "resnet50": {"onnxruntime": 2.0}}
NAMES = {"predict": "eager predict", "book": "the book's loop", "onnxruntime": 'predict(backend="onnxruntime") fp32'}
GATE = 99.0  # dlwp quantize's default --min-agreement
CALIBRATION = (256, 64)  # photos: the asked-for count, then the fallback when its memory runs out
CALIBRATION_QUICK = (32, 16)
PROBE, PROBE_QUICK = 32, 8  # photos of a second, smaller calibration: the memory per photo
CAL_SIZE = (640, 480)
LABELLED = (5, 20)  # classes (ImageNet WordNet ids), photos per class
LABELLED_QUICK = (5, 4)
GB = 1 << 30


# --------------------------------------------------------------------------- the machine


def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "?"


def vnni() -> list[str]:
    """The VNNI flags of the CPU (``grep -o -m1 'avx512_vnni\\|avx_vnni' /proc/cpuinfo``)."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return [f for f in flags if f in ("avx512_vnni", "avx_vnni")]


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def mem_available() -> int:
    try:
        text = Path("/proc/meminfo").read_text()
        return int(re.search(r"^MemAvailable:\s+(\d+) kB", text, re.M).group(1)) * 1024
    except (OSError, AttributeError):
        return 8 * GB


# --------------------------------------------------------------------------- weights, photos, cache


def publish_resnet50(ws: Workspace) -> None:
    """resnet50's default weight set, generated (calibrated random values in torchvision's zip
    format), served once from 127.0.0.1 and fetched through dlwp (verified, cached)."""
    if not any(e["model"] == "resnet50" for e in ws.entries):
        ws.publish(["resnet50"])


def calibration_folders(ws: Workspace, counts: tuple[int, ...]) -> dict[int, str]:
    """``counts[0]`` generated photos (CAL_SIZE, quality 90) in one folder, and the first
    ``count`` of them (hard links) in a folder of their own for each smaller count."""
    photos = make_photos(ws.root / f"int8_calibrate_{counts[0]}", counts[0], *CAL_SIZE, seed0=3000)
    folders = {counts[0]: str(Path(photos[0]).parent)}
    for count in counts[1:]:
        folder = ws.root / f"int8_calibrate_{count}"
        folder.mkdir(exist_ok=True)
        for path in photos[:count]:
            link = folder / Path(path).name
            if not link.exists():
                os.link(path, link)
        folders[count] = str(folder)
    return folders


def labelled_folder(ws: Workspace, classes: int, per_class: int) -> str:
    """Held-out generated photos (never calibrated on), one folder per class named after an
    ImageNet WordNet id; the labels mean nothing to random weights."""
    from dlwp_models.evaluation.data import imagenet_wnids

    root = ws.root / "int8_labelled"
    for k, wnid in enumerate(imagenet_wnids()[:classes]):
        make_photos(root / wnid, per_class, *CAL_SIZE, seed0=6000 + 100 * k)
    return str(root)


def forget_fp32_graph(ws: Workspace, model: str) -> None:
    """Remove the cached float32 graph of ``model``'s weight file (and its record), so that the
    next ``quantize`` pays for the export as a user's first one does."""
    weight = ws.cached(model)["state_dict"]
    for copy in weight.parent.glob(f"{glob.escape(weight.name)}.torch*.onnx"):
        copy.unlink()
        copy.with_name(copy.name + ".verified").unlink(missing_ok=True)


# --------------------------------------------------------------------------- a worker under a memory watchdog


def _rss_of(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) * 1024 if match else 0


def run_guarded(task: str, args: dict, env: dict[str, str], *, timeout: float, rss_limit: int) -> dict:
    """``_worker.py task`` in a fresh interpreter, killed (its answer then ``{"killed": True}``)
    when its resident memory passes ``rss_limit`` bytes; its highest resident memory seen (every
    0.1 s) is in ``watchdog_peak``."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), task, json.dumps(args)],
            env=env,
            cwd=REPO_DIR,
            stdout=out,
            stderr=err,
            text=True,
        )
        peak = 0
        while proc.poll() is None:
            rss = _rss_of(proc.pid)
            peak = max(peak, rss)
            if rss > rss_limit or time.perf_counter() - t0 > timeout:
                proc.kill()
                proc.wait()
                if rss > rss_limit:
                    return {"killed": True, "seconds": time.perf_counter() - t0, "watchdog_peak": peak}
                raise WorkerError(f"worker {task} {args} ran past {timeout:.0f} s")
            time.sleep(0.1)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise WorkerError(f"worker {task} {args} failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise WorkerError(f"worker {task} printed no result:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    result = json.loads(lines[-1])
    result.update(killed=False, watchdog_peak=peak)
    return result


class OtherJobs:
    """Other jobs that would skew the timings (test runs, the fine-tune benchmark): ``/proc``
    sampled every 5 s; ``seen`` maps a pid to (the step running then, the time, its command)."""

    PATTERNS = (b"pytest", b"bench_finetune")

    def __init__(self) -> None:
        self.seen: dict[int, tuple[str, str, str]] = {}
        self.step = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(5):
            self.sample()

    def sample(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) in self.seen:
                continue
            try:
                cmd = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            if any(p in cmd for p in self.PATTERNS):
                text = cmd.replace(b"\0", b" ").decode(errors="replace").strip()
                self.seen[int(entry.name)] = (self.step, time.strftime("%H:%M:%S"), text[:120])


# --------------------------------------------------------------------------- the steps


def quantize_model(
    ws: Workspace, model: str, folders: dict[int, str], probe: tuple[int, str], eval_dir: str, rss_limit: int
) -> dict:
    """Quantize ``model`` from scratch (no cached float32 graph) with the default gate on each
    calibration folder in turn until one fits in memory; when the gate refuses, again with
    ``min_agreement=0`` (same photos; the graph the speed rows then use). Then the memory probe:
    the same from scratch on ``probe`` (fewer photos) with ``min_agreement=101``, which the gate
    always refuses after all the work (nothing is kept), for the memory each photo adds."""
    env = ws.env(offline=True)
    attempts = []
    for count, folder in folders.items():
        forget_fp32_graph(ws, model)
        log(f"[int8] {model}: quantize, {count} calibration photos, default gate (from scratch: export included)")
        args = {"step": "quantize", "model": model, "calibrate": folder, "eval_dir": eval_dir}
        res = run_guarded("int8", args, env, timeout=3600, rss_limit=rss_limit)
        res["photos"] = count
        attempts.append(res)
        if res["killed"]:
            log(
                f"[int8] {model}: killed at {res['watchdog_peak'] / GB:.1f} GiB resident after {res['seconds']:.0f} s "
                f"(limit {rss_limit / GB:.1f} GiB)"
            )
            continue
        log(
            f"[int8] {model}: {res['seconds']:.1f} s, peak RSS {res['peak_rss'] / GB:.2f} GiB; "
            + (f"refused: {res['refused']}" if res["refused"] else res["report"]["summary"])
        )
        ungated = None
        if res["refused"]:
            log(f"[int8] {model}: again with min_agreement=0 (the graph for the speed rows)")
            ungated = run_guarded(
                "int8", {**args, "min_agreement": 0.0, "max_drop": 100.0}, env, timeout=3600, rss_limit=rss_limit
            )
            if ungated["killed"] or ungated["refused"]:
                raise WorkerError(f"{model}: quantize with min_agreement=0 did not keep a graph: {ungated}")
            log(f"[int8] {model}: kept: {ungated['report']['summary']} ({ungated['seconds']:.1f} s)")
        kept = ungated or res
        forget_fp32_graph(ws, model)
        log(f"[int8] {model}: memory probe, {probe[0]} calibration photos (min_agreement=101: nothing kept)")
        args = {"step": "quantize", "model": model, "calibrate": probe[1], "eval_dir": eval_dir, "min_agreement": 101.0}
        probed = run_guarded("int8", args, env, timeout=3600, rss_limit=rss_limit)
        probed["photos"] = probe[0]
        if not probed["killed"]:
            log(f"[int8] {model}: probe peak RSS {probed['peak_rss'] / GB:.2f} GiB ({probed['seconds']:.1f} s)")
        return {
            "attempts": attempts,
            "ungated": ungated,
            "kept": kept,
            "folder": folder,
            "photos": count,
            "probe": probed,
        }
    raise WorkerError(f"{model}: every calibration set ran out of memory: {attempts}")


def _ratio_rows(model: str, res: dict, reps: int) -> tuple[list[Row], dict[str, float]]:
    n = res["n"]
    ips = {k: n / median(v) for k, v in res["times"].items()}

    def spread(key: str) -> str:  # the rounds' img/s, lowest to highest
        return "–".join(f"{n / t:.1f}" for t in (max(res["times"][key]), min(res["times"][key])))

    rows = []
    for other in ("predict", "book", "onnxruntime"):
        if other not in ips:
            continue
        ratio = ips["int8"] / ips[other]
        target = TARGETS[model].get(other)
        rows.append(
            Row(
                f'int8, {model}, predict(backend="onnxruntime-int8") vs {NAMES[other]} '
                f"({n} 1280×720 JPEGs, median of {reps})",
                f"{ips['int8']:.2f} img/s",
                f"{ips[other]:.2f} img/s",
                f"{ratio:.2f}×",
                f"≥ {target:g}×" if target else "—",
                yes_no(ratio >= target) if target else "—",
                f"rounds: {spread('int8')} vs {spread(other)} img/s" if reps > 1 else "",
            )
        )
    return rows, ips


def run(
    ws: Workspace,
    *,
    reps: int,
    paths: list[str],
    quick: bool = False,
    models: tuple[str, ...] = MODELS,
    rss_limit_gb: float | None = None,
) -> tuple[list[Row], dict]:
    """The int8 rows and raw measurements. ``ws`` has resnet101 and alexnet published (run.py
    does it); resnet50 is published here."""
    if "resnet50" in models:
        publish_resnet50(ws)
    counts = CALIBRATION_QUICK if quick else CALIBRATION
    classes, per_class = LABELLED_QUICK if quick else LABELLED
    rss_limit = int(rss_limit_gb * GB) if rss_limit_gb else int(min(16 * GB, mem_available() - 4 * GB))
    probe = PROBE_QUICK if quick else PROBE
    folders = calibration_folders(ws, (*counts, probe))
    probe_folder = (probe, folders.pop(probe))
    eval_dir = labelled_folder(ws, classes, per_class)
    held_out = classes * per_class
    env = ws.env(offline=True)
    raw: dict = {
        "cpu": cpu_model(),
        "vnni": vnni(),
        "cores": os.cpu_count(),
        "rss_limit": rss_limit,
        "calibration_counts": counts,
        "held_out": held_out,
        "loadavg_start": loadavg(),
    }
    rows: list[Row] = [
        Row(
            "int8, the CPU",
            f"{cpu_model()}, {os.cpu_count()} cores",
            "—",
            "—",
            "reported",
            "—",
            "VNNI: " + (", ".join(vnni()) or "none") + " (`grep -o -m1 'avx512_vnni\\|avx_vnni' /proc/cpuinfo`)",
        )
    ]
    # 1. the one-time cost and the gate, per model (fresh processes, from scratch)
    monitor = OtherJobs()
    monitor.start()
    monitor.step = "quantize"
    quantized = {m: quantize_model(ws, m, folders, probe_folder, eval_dir, rss_limit) for m in models}
    raw["quantize"] = quantized
    # 2. the speed rows, one process per model
    speed = {}
    for model in models:
        log(f"[int8] {model}: {len(paths)} photos, {reps} rounds (book loop, predict, onnxruntime fp32, int8)")
        monitor.step = f"speed {model}"
        speed[model] = run_worker(
            "int8", {"step": "speed", "model": model, "paths": paths, "reps": reps, "book": model in BOOK}, env, 1800
        )
    raw["speed"] = speed
    # 3. the cached graph's first use in a new process (resnet101), alternating with the fp32 graph's
    first: dict[str, list] = {"onnxruntime-int8": [], "onnxruntime": []}
    monitor.step = "first use"
    if "resnet101" in models:
        for _ in range(1 if quick else 3):
            for backend in first:
                args = {"step": "first", "model": "resnet101", "image": paths[0], "backend": backend}
                first[backend].append(run_worker("int8", args, env, 600))
    raw["first"] = first
    # 4. reuse: the same quantize call again (default gate) finds the kept graph
    reuse = None
    if "resnet101" in models:
        log("[int8] resnet101: quantize again, same photos, default gate (reuse)")
        args = {"step": "quantize", "model": "resnet101", "calibrate": quantized["resnet101"]["folder"]}
        reuse = run_guarded("int8", {**args, "eval_dir": eval_dir}, env, timeout=1800, rss_limit=rss_limit)
    raw["reuse"] = reuse
    raw["loadavg_end"] = loadavg()
    monitor.stop()
    raw["other_jobs_seen"] = monitor.seen
    if monitor.seen:
        steps = sorted({step for step, _, _ in monitor.seen.values()})
        rows[0].note += (
            f"; OTHER JOBS RAN during this run (steps: {', '.join(steps)}): those figures are skewed: "
            + "; ".join(f"{t} {cmd[:60]}" for _, t, cmd in list(monitor.seen.values())[:3])
        )
        log(f"[int8] other jobs seen during the run: {monitor.seen}")
    else:
        rows[0].note += "; no test run or other benchmark seen during this run (sampled every 5 s)"

    for model in models:
        res, q = speed[model], quantized[model]
        new_rows, ips = _ratio_rows(model, res, reps)
        kept = q["kept"]
        if q["ungated"] is not None:
            for row in new_rows:
                row.note = "; ".join(
                    filter(
                        None,
                        [
                            row.note,
                            f"int8 graph kept with min_agreement=0: the default gate (≥ {GATE:g} %) refused it on "
                            f"random weights ({q['kept']['report']['top1_agreement']:.1f} % top-1 agreement)",
                        ],
                    )
                )
        rows += new_rows
        log(
            f"[int8] {model}: "
            + ", ".join(f"{k} {v:.2f}" for k, v in ips.items())
            + f" img/s; int8 vs predict top-1 {res['int8_vs_predict']['top1_agree']}/{res['n']}"
        )
        cmp = res["int8_vs_predict"]
        delta = cmp["max_top1_delta_points"]
        rows.append(
            Row(
                f"int8, {model}, its predictions vs eager predict's (the same {res['n']} JPEGs)",
                f"top-1 agrees on {cmp['top1_agree']}/{cmp['n']}; same top-5 set {cmp['same_top5_set']}/{cmp['n']}",
                "eager predict",
                "—",
                "reported",
                "—",
                f"max |Δ top-1 %| where top-1 agrees: {delta:.2f} points" if delta is not None else "",
            )
        )
        report = kept["report"]
        gate_ok = report["top1_agreement"] >= GATE and (
            "acc@1_fp32" not in report or report["acc@1_fp32"] - report["acc@1_int8"] <= 0.5
        )
        rows.append(
            Row(
                f"int8, {model}, top-1 agreement with float32 on {report['photos']} held-out generated photos "
                f"(calibrated by {report['method']} on {report['calibration_photos']} others)",
                f"{report['top1_agreement']:.1f} %",
                "float32 (eager)",
                "—",
                f"≥ {GATE:g} % (the default gate)",
                yes_no(gate_ok),
                f"mean |Δ top-1 %| {report['mean_abs_delta_top1_percent']:.2f} points; acc@1 fp32 / int8 "
                f"{report.get('acc@1_fp32', float('nan')):.1f} / {report.get('acc@1_int8', float('nan')):.1f} % on "
                f"{classes} classes named after WordNet ids (random weights: labels meaningless); "
                f"random weights, not a trained network",
            )
        )
        killed = [a for a in q["attempts"] if a["killed"]]
        done = q["attempts"][-1]
        note = [f"calibration + quantization alone {done['report']['quantize_seconds'] if done['report'] else '?'} s"]
        if done["refused"]:
            agreement = re.search(r"agreement with float32 ([\d.]+) %", done["refused"])
            note = [
                f"calibration + quantization {kept['report']['quantize_seconds']} s (from the rerun)",
                f"refused by the gate ({agreement.group(1) if agreement else '?'} % agreement)",
            ]
        probed = q["probe"]
        note.append(f"peak RSS {done['peak_rss'] / GB:.2f} GiB (before the call {done['rss_before'] / GB:.2f} GiB)")
        per_photo = None
        if not probed["killed"] and probed["photos"] != done["photos"]:
            per_photo = (done["peak_rss"] - probed["peak_rss"]) / (done["photos"] - probed["photos"])
            note.append(
                f"{probed['peak_rss'] / GB:.2f} GiB with {probed['photos']} photos: "
                f"{per_photo / 2**20:.0f} MiB more per calibration photo"
            )
        for a in killed:
            need = (
                f"; ≈ {(done['peak_rss'] + per_photo * (a['photos'] - done['photos'])) / GB:.0f} GiB needed"
                if per_photo
                else ""
            )
            note.append(
                f"**with {a['photos']} photos: killed by the watchdog at {a['watchdog_peak'] / GB:.1f} GiB resident "
                f"after {a['seconds']:.0f} s** (limit {rss_limit / GB:.1f} GiB{need})"
            )
        note.append(f"int8 graph {res['int8_graph_mb']:.0f} MB")
        rows.append(
            Row(
                f"int8, {model}, one-time cost: `quantize` in a fresh process (build, fp32 export, decoding, "
                f"calibration + quantization on {done['photos']} {CAL_SIZE[0]}×{CAL_SIZE[1]} photos, measuring "
                f"{held_out} held-out)",
                f"{done['seconds']:.1f} s",
                "—",
                "—",
                "reported",
                "—",
                "; ".join(note),
            )
        )
    if first["onnxruntime-int8"]:
        f8, f32 = first["onnxruntime-int8"], first["onnxruntime"]
        rows.append(
            Row(
                "int8, resnet101, the cached int8 graph in a new process: first predict of one image after the "
                f"build (find + hash the graph, session, 1 image; median of {len(f8)})",
                f"{median(r['first_s'] for r in f8):.2f} s",
                f"{median(r['first_s'] for r in f32):.2f} s (fp32 graph)",
                "—",
                "reported",
                "—",
                f"a second call of the same image: {median(r['second_s'] for r in f8):.3f} s int8, "
                f"{median(r['second_s'] for r in f32):.3f} s fp32; build (not counted) "
                f"{median(r['build_s'] for r in f8):.2f} s",
            )
        )
    if reuse is not None and not reuse["killed"]:
        q = quantized["resnet101"]
        if reuse["refused"]:
            outcome = f"refused again ({reuse['refused'][:120]}…)"
        else:
            outcome = f"reused: {reuse['report']['reused']}; {reuse['report']['summary']}"
        rows.append(
            Row(
                "int8, resnet101, `quantize` again with the same photos (default gate)",
                f"{reuse['seconds']:.2f} s",
                "—",
                "—",
                "reported",
                "—",
                outcome
                + (
                    " — after the graph was kept with min_agreement=0: the reuse does not apply the gate again"
                    if q["ungated"] is not None and not reuse["refused"]
                    else ""
                ),
            )
        )
    ort = speed[models[0]]["onnxruntime"]
    raw["onnxruntime"] = ort
    return rows, raw


def table(rows: list[Row]) -> str:
    head = "| figure | ours | baseline | ratio | target | met? |\n|---|---|---|---|---|---|\n"
    lines = []
    for r in rows:
        note = f"<br><sub>{r.note}</sub>" if r.note else ""
        lines.append(f"| {r.figure}{note} | {r.ours} | {r.baseline} | {r.ratio} | {r.target} | {r.met} |")
    return head + "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 32/16 calibration photos, 20 held out")
    parser.add_argument("--models", default=",".join(MODELS), help=f"a subset of {','.join(MODELS)}")
    parser.add_argument(
        "--rss-limit-gb",
        type=float,
        help="kill a quantize worker above this many GiB (default: min(16, available - 4))",
    )
    parser.add_argument("--json", help="also write the raw measurements to this file")
    parser.add_argument("--workdir", default=None, help="parent folder of the temporary workspace")
    parser.add_argument("--keep", action="store_true", help="keep the workspace (weights, photos, graphs)")
    opts = parser.parse_args()
    models = tuple(m.strip() for m in opts.models.split(",") if m.strip())
    if set(models) - set(MODELS):
        parser.error(f"--models: choose from {','.join(MODELS)}")

    import platform

    import onnxruntime
    import torch

    started = time.time()
    load_start = loadavg()
    machine = (
        f"{os.cpu_count()} CPUs ({cpu_model()}; VNNI: {', '.join(vnni()) or 'none'}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__}, "
        f"Python {platform.python_version()}"
    )
    log(f"dlwp int8 benchmark ({'quick' if opts.quick else 'full'}); {machine}; load {load_start}")
    ws = Workspace.create(opts.workdir, keep=opts.keep)
    try:
        log(f"workspace {ws.root}")
        ws.publish([m for m in ("resnet101", "alexnet") if m in models])
        photos = make_photos(ws.root / "photos", 32, 1280, 720)  # bench_onnx's photos
        reps = 1 if opts.quick else 3
        rows, raw = run(ws, reps=reps, paths=photos, quick=opts.quick, models=models, rss_limit_gb=opts.rss_limit_gb)
    finally:
        ws.close()
    elapsed = time.time() - started
    print("\n" + table(rows))
    met = sum(r.met == "yes" for r in rows)
    judged = sum(r.met in ("yes", "no") for r in rows)
    print(
        f"{met} of {judged} targets met; {elapsed / 60:.1f} min. Machine: {machine}; load average {load_start} at "
        f"the start, {loadavg()} at the end."
    )
    if opts.json:
        raw.update(machine=machine, elapsed_s=elapsed, command=" ".join(sys.argv))
        Path(opts.json).write_text(json.dumps(raw, default=str, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Batch jobs (issue 13): the local engine against ``predict`` on the same list, its resident memory
as records come in, and the Ray engine on this one machine against the local engine.

* throughput: ``python -m dlwp_models classify FOLDER --output r.jsonl`` (resnet101) against a
  process that builds the same model and calls ``model.predict(list_of_paths)`` (both whole
  processes: imports, model load and the work; both offline on the same cached weights);
  target ≥ 0.95× (the writing must cost next to nothing);
* memory: the same command (alexnet, small JPEGs), its resident memory sampled while it runs and
  matched to the number of records written: at 200 and at 2,000 records (flat: within 50 MB);
* Ray: ``--engine ray --num-workers 2`` against the local engine, same inputs (target ≥ 0.7×;
  one machine only shows the overhead), and the per-actor throughput for the cluster estimate in
  benchmarks/README.md.

    python benchmarks/bench_batch.py [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from _setup import REPO_DIR, Row, log, yes_no

TARGET_LOCAL = 0.95
TARGET_RAY = 0.7
FLAT_MB = 50.0
PREDICT = (
    "import sys, time\nfrom dlwp_models.hub import build\n"
    "paths = [l for l in open(sys.argv[1]).read().split()]\n"
    "model = build(sys.argv[2], weights='DEFAULT', progress=False)\n"
    "model.predict(paths)\n"
)


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


def _timed(
    args: list[str], env: dict[str, str], *, output: Path | None = None
) -> tuple[float, list[tuple[float, int, float]]]:
    """Run a command; its wall time and (seconds since the start, records written, resident MB)
    samples every 50 ms."""
    samples: list[tuple[float, int, float]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=env, cwd=REPO_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            rss = _rss_mb(proc.pid)
            if rss is not None and output is not None:
                samples.append((time.perf_counter() - t0, _count_lines(output), rss))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, err = proc.communicate(timeout=1800)
    seconds = time.perf_counter() - t0
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} … failed (exit {proc.returncode}): {err[-2000:]}")
    return seconds, samples


def _rss_at(samples: list[tuple[float, int, float]], records: int) -> float:
    """The largest resident memory seen while the output held about ``records`` records."""
    near = [rss for _, count, rss in samples if records <= count <= records + max(50, records // 20)]
    if not near:
        raise RuntimeError(
            f"no memory sample near {records} records (samples up to {samples[-1][1] if samples else 0})"
        )
    return max(near)


def _steady(samples: list[tuple[float, int, float]], seconds: float, total: int) -> tuple[float, float]:
    """(seconds until the first record, records/s from the first record to the end): the job's
    rate once started, without the fixed cost of starting (imports, model load, Ray start)."""
    first = next((t, n) for t, n, _ in samples if n > 0)
    return first[0], (total - first[1]) / (seconds - first[0])


def run(
    ws, *, paths: list[str], small: list[str], model: str = "resnet101", small_model: str = "alexnet"
) -> tuple[list[Row], dict]:
    env = ws.env(offline=True)
    work = ws.root / "batch"
    work.mkdir(exist_ok=True)
    listing = work / "paths.txt"
    listing.write_text("\n".join(paths) + "\n")
    raw: dict = {"n": len(paths), "n_small": len(small)}
    cli = [sys.executable, "-m", "dlwp_models", "classify"]

    log(f"[batch] predict vs the local engine: {model}, {len(paths)} photos")
    raw["predict_s"], _ = _timed([sys.executable, "-c", PREDICT, str(listing), model], env)
    out = work / "local.jsonl"
    raw["local_s"], local_samples = _timed(
        [*cli, f"@{listing}", "--model", model, "--output", str(out), "-q"], env, output=out
    )
    assert _count_lines(out) == len(paths), "the local engine wrote one record per input"
    raw["local_first_s"], raw["local_steady_ips"] = _steady(local_samples, raw["local_s"], len(paths))
    log(f"[batch] Ray engine (2 workers) vs local: {model}, {len(paths)} photos")
    ray_out = work / "ray.jsonl"
    raw["ray_s"], ray_samples = _timed(
        [
            *cli,
            f"@{listing}",
            "--model",
            model,
            "--output",
            str(ray_out),
            "--engine",
            "ray",
            "--num-workers",
            "2",
            "-q",
        ],
        env,
        output=ray_out,
    )
    assert _count_lines(ray_out) == len(paths)
    raw["ray_first_s"], raw["ray_steady_ips"] = _steady(ray_samples, raw["ray_s"], len(paths))
    log("[batch] Ray Data's own cost per block and per actor call (functions that do nothing)")
    overhead = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("_ray_overhead.py"))],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    raw["ray_overhead"] = json.loads(overhead.stdout.strip().splitlines()[-1])
    raw["estimate"] = cluster_estimate(
        raw["ray_steady_ips"] / 2, raw["ray_overhead"]["per_block_ms"], raw["ray_overhead"]["per_batch_ms"]
    )

    log(f"[batch] resident memory: {small_model}, {len(small)} small photos")
    small_list = work / "small.txt"
    small_list.write_text("\n".join(small) + "\n")
    mem_out = work / "memory.jsonl"
    raw["memory_s"], samples = _timed(
        [*cli, f"@{small_list}", "--model", small_model, "--output", str(mem_out), "--batch-size", "32", "-q"],
        env,
        output=mem_out,
    )
    raw["rss_200_mb"], raw["rss_end_mb"] = _rss_at(samples, 200), _rss_at(samples, len(small) - 100)
    raw["samples"] = samples[:: max(1, len(samples) // 200)]

    n = len(paths)
    predict_ips, local_ips, ray_ips = n / raw["predict_s"], n / raw["local_s"], n / raw["ray_s"]
    growth = raw["rss_end_mb"] - raw["rss_200_mb"]
    rows = [
        Row(
            f"batch job, local engine, {model}, {n} JPEGs 1280×720 (whole process) vs predict on the same list",
            f"{local_ips:.2f} img/s",
            f"{predict_ips:.2f} img/s",
            f"{local_ips / predict_ips:.2f}×",
            f"≥ {TARGET_LOCAL}×",
            yes_no(local_ips / predict_ips >= TARGET_LOCAL),
            f"{raw['local_s']:.1f} s vs {raw['predict_s']:.1f} s, both including imports and the model load",
        ),
        Row(
            f"batch job, resident memory at 200 and ~{len(small) - 100} records ({small_model}, small JPEGs)",
            f"{raw['rss_end_mb']:.0f} MB",
            f"{raw['rss_200_mb']:.0f} MB",
            f"+{growth:.0f} MB",
            f"≤ +{FLAT_MB:.0f} MB",
            yes_no(growth <= FLAT_MB),
        ),
        Row(
            f"batch job, Ray engine (local Ray, 2 actors) vs local engine, {model}, {n} JPEGs (whole process)",
            f"{ray_ips:.2f} img/s",
            f"{local_ips:.2f} img/s",
            f"{ray_ips / local_ips:.2f}×",
            f"≥ {TARGET_RAY}× (one machine shows the overhead)",
            yes_no(ray_ips / local_ips >= TARGET_RAY),
            f"{raw['ray_s']:.1f} s vs {raw['local_s']:.1f} s; the first record after {raw['ray_first_s']:.1f} s "
            f"vs {raw['local_first_s']:.1f} s (starting Ray and the actors vs loading the model)",
        ),
        Row(
            f"batch job, Ray engine vs local engine once running (first record → last), {model}",
            f"{raw['ray_steady_ips']:.2f} img/s",
            f"{raw['local_steady_ips']:.2f} img/s",
            f"{raw['ray_steady_ips'] / raw['local_steady_ips']:.2f}×",
            "— (informative)",
            "—",
            f"Ray Data's own cost: {raw['ray_overhead']['per_block_ms']:.1f} ms per block, "
            f"{raw['ray_overhead']['per_batch_ms']:.2f} ms per actor call; estimate: "
            + ", ".join(f"{nodes} nodes ≈ {ips:,.0f} img/s" for nodes, ips in raw["estimate"].items()),
        ),
    ]
    log("[batch] " + json.dumps({k: v for k, v in raw.items() if k != "samples"}))
    return rows, raw


def cluster_estimate(
    per_core_ips: float,
    per_block_ms: float,
    per_batch_ms: float,
    *,
    cores: int = 2,
    images_per_block: int = 100,
    batch_size: int = 16,
) -> dict[int, float]:
    """images/s on 8 and 64 nodes of ``cores`` cores (one actor per core, as measured here: each
    core decoding and running the model at ``per_core_ips``), capped by what one driver can
    schedule: a block (``images_per_block`` images; the engine makes blocks of 100 images for
    jobs of 100,000) costs ``per_block_ms``, an actor call (``batch_size`` images)
    ``per_batch_ms``. See benchmarks/README.md."""
    driver_ips = 1000 / (per_block_ms / images_per_block + per_batch_ms / batch_size)
    return {nodes: min(nodes * cores * per_core_ips, driver_ips) for nodes in (8, 64)}

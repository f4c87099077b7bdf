"""`dlwp serve` under load, on loopback: throughput and p50/p99 latency at 1, 4 and 16 concurrent
clients for alexnet and resnet101, with batching (`--max-batch 16 --max-wait-ms 10`) and without
(`--max-batch 1`: one forward pass per request, as the book's Flask server); then 20 s at 4× the
measured capacity: only 200 and 503 answers, /healthz throughout, and the server's resident memory.

Memory under overload is compared with the server's peak at full load: a closed loop of
2 × max-batch clients, whose batches are full (the mean batch size, read from /metrics, is
reported), so that the forward pass of a full batch has set its working set. The 16-client run is
not that reference: its clients come back a few at a time and form batches of about half the
maximum, so against it the overload's growth would be the working set of the larger batches, not
a cost of the overload. The growth over the idle server before the overload is reported as well.

    python benchmarks/bench_serve.py [--seconds 15] [--overload-seconds 20] [--models alexnet,resnet101]

Each client level runs 15 s by default: a full resnet101 batch takes about a second on 2 cores, and
a 6-s window (a handful of batches) gave resnet101's batching ratio anywhere from 1.05× to 1.39×
over runs of the same code.

Weights are generated (random values in torchvision's format, served once from 127.0.0.1 and
fetched through dlwp); photos are random 640×480 JPEGs. Each client is a thread with one keep-alive
connection, sending its next photo when the previous answer arrives (a closed loop); the overload
phase sends at a fixed rate from a bounded pool of connections.
"""

from __future__ import annotations

import argparse
import io
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _setup import REPO_DIR, Workspace, log, photo

CLIENTS = (1, 4, 16)
MAX_BATCH = 16
MODES = {"batched": ["--max-batch", str(MAX_BATCH), "--max-wait-ms", "10"], "unbatched": ["--max-batch", "1"]}
FULL_LOAD_CLIENTS = 2 * MAX_BATCH  # enough waiting requests for every batch to be full


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    photo(640, 480, seed).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class Server:
    def __init__(self, workspace: Workspace, model: str, args: list[str], queue: int = 64) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dlwp_models",
                "serve",
                "--models",
                model,
                "--port",
                str(self.port),
                "--max-queue",
                str(queue),
                *args,
            ],
            env=workspace.env(),
            cwd=REPO_DIR,
            stdout=subprocess.PIPE,
            text=True,
        )
        if "ready" not in self.process.stdout.readline():
            raise RuntimeError("the server did not start")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> int:
        self.process.terminate()
        code = self.process.wait(30)
        self.process.stdout.close()
        return code


def batch_counts(server: Server, model: str) -> tuple[float, float]:
    """(requests, forward passes) so far, from the server's dlwp_batch_size histogram."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    total, count = (
        float(re.search(rf'dlwp_batch_size_{part}{{model="{model}"}} (\S+)', text).group(1))
        for part in ("sum", "count")
    )
    return total, count


def closed_loop(server: Server, model: str, clients: int, seconds: float, photos: list[bytes]) -> dict:
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(index: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            n = index
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = http.post(
                    f"/v1/classify?model={model}",
                    content=photos[n % len(photos)],
                    headers={"Content-Type": "image/jpeg"},
                )
                with lock:
                    latencies.append(time.perf_counter() - started)
                    statuses.append(response.status_code)
                n += clients

    peak = [server.rss_mb()]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], server.rss_mb())

    watcher = threading.Thread(target=watch)
    watcher.start()
    requests_before, batches_before = batch_counts(server, model)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - started
    done.set()
    watcher.join()
    requests_after, batches_after = batch_counts(server, model)
    ok = statuses.count(200)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0]] * 99
    return {
        "throughput": ok / elapsed,
        "p50": quantiles[49],
        "p99": quantiles[98],
        "requests": len(statuses),
        "non_200": len(statuses) - ok,
        "rss_peak_mb": peak[0],
        "mean_batch": (requests_after - requests_before) / max(1.0, batches_after - batches_before),
    }


def overload(
    server: Server, model: str, rate: float, seconds: float, photos: list[bytes], full_load_peak_mb: float
) -> dict:
    statuses: dict[int, int] = {}
    health: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()
    rss_before = server.rss_mb()
    rss_peak = [rss_before]

    def watch() -> None:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    ok = http.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                health.append(time.perf_counter() - started if ok else float("inf"))
                rss_peak[0] = max(rss_peak[0], server.rss_mb())
                stop.wait(0.25)

    local = threading.local()

    def send(n: int) -> None:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=server.url, timeout=60)
        try:
            status = local.http.post(
                f"/v1/classify?model={model}", content=photos[n % len(photos)], headers={"Content-Type": "image/jpeg"}
            ).status_code
        except httpx.HTTPError:
            status = -1
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

    watcher = threading.Thread(target=watch)
    watcher.start()
    requests_before, batches_before = batch_counts(server, model)
    with ThreadPoolExecutor(128) as pool:  # bounded: at most 128 requests in flight
        start = time.perf_counter()
        for n in range(int(rate * seconds)):
            time.sleep(max(0.0, start + n / rate - time.perf_counter()))
            pool.submit(send, n)
    stop.set()
    watcher.join()
    requests_after, batches_after = batch_counts(server, model)
    return {
        "statuses": statuses,
        "rss_growth_mb": rss_peak[0] - full_load_peak_mb,
        "rss_over_idle_mb": rss_peak[0] - rss_before,
        "healthz_max_s": max(health),
        "healthz_p50_s": statistics.median(health),
        "mean_batch": (requests_after - requests_before) / max(1.0, batches_after - batches_before),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="per client level (default 15)")
    parser.add_argument("--overload-seconds", type=float, default=20.0)
    parser.add_argument("--models", default="alexnet,resnet101")
    args = parser.parse_args()
    models = args.models.split(",")
    photos = [jpeg(seed) for seed in range(16)]
    workspace = Workspace.create()
    try:
        workspace.publish(models)
        rows = []
        for model in models:
            results = {}
            for mode, flags in MODES.items():
                server = Server(workspace, model, flags)
                try:
                    closed_loop(server, model, 2, 2.0, photos)  # warm-up
                    for clients in CLIENTS:
                        results[mode, clients] = r = closed_loop(server, model, clients, args.seconds, photos)
                        log(
                            f"{model} {mode:9} {clients:2} clients: {r['throughput']:.2f} req/s, p50 "
                            f"{r['p50'] * 1000:.0f} ms, p99 {r['p99'] * 1000:.0f} ms ({r['non_200']} not 200), "
                            f"mean batch {r['mean_batch']:.1f}, RSS peak {r['rss_peak_mb']:.0f} MB"
                        )
                    if mode == "batched":
                        capacity = max(results[mode, c]["throughput"] for c in CLIENTS)
                        results["full"] = f = closed_loop(server, model, FULL_LOAD_CLIENTS, args.seconds, photos)
                        log(
                            f"{model} full load, {FULL_LOAD_CLIENTS} clients: {f['throughput']:.2f} req/s, mean batch "
                            f"{f['mean_batch']:.1f}, RSS peak {f['rss_peak_mb']:.0f} MB"
                        )
                        results["overload"] = o = overload(
                            server, model, 4 * capacity, args.overload_seconds, photos, f["rss_peak_mb"]
                        )
                        log(f"{model} overload at {4 * capacity:.1f} req/s: {o}")
                finally:
                    log(f"{model} {mode}: server exit status after SIGTERM {server.stop()}")
            rows.append((model, results))
        print(report(rows))
    finally:
        workspace.close()
    return 0


def report(rows: list) -> str:
    lines = [
        "| model | clients | batched req/s | unbatched req/s | ratio | batched p50 / p99 ms | unbatched p50 / p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, results in rows:
        for clients in CLIENTS:
            b, u = results["batched", clients], results["unbatched", clients]
            lines.append(
                f"| {model} | {clients} | {b['throughput']:.2f} | {u['throughput']:.2f} | "
                f"{b['throughput'] / u['throughput']:.2f}× | {b['p50'] * 1000:.0f} / {b['p99'] * 1000:.0f} | "
                f"{u['p50'] * 1000:.0f} / {u['p99'] * 1000:.0f} |"
            )
        f, o = results["full"], results["overload"]
        lines.append(
            f"| {model} | overload 4× | answers {o['statuses']} (mean batch {o['mean_batch']:.1f}) | RSS peak "
            f"{o['rss_growth_mb']:+.0f} MB vs at full load ({FULL_LOAD_CLIENTS} clients, mean batch "
            f"{f['mean_batch']:.1f}; {o['rss_over_idle_mb']:+.0f} MB vs idle; 16 clients' mean batch "
            f"{results['batched', CLIENTS[-1]]['mean_batch']:.1f}) | | "
            f"/healthz max {o['healthz_max_s'] * 1000:.0f} ms | |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""Target 5: loopback download of a 200 MB file through dlwp's fetcher (streaming, sha256 while
downloading, per-file lock, atomic move) versus ``torch.hub.download_url_to_file`` (with
``hash_prefix``, so it hashes too) from the same 127.0.0.1 server, alternating in one process,
medians; and the bytes a download transfers in all when the connection is cut at 50 %
(dlwp resumes with HTTP Range; torch's function has no resume, so its figure is the failed try plus
a second full download).

    python benchmarks/bench_download.py [--quick] [--download-mb 200]
"""

from __future__ import annotations

from _setup import MB, Row, fmt_s, log, median, run_worker, sha256_hex, yes_no

SPEED_TARGET = 0.8
RESUME_LIMIT = 1.55


def run(ws, *, runs: int, size_mb: int = 200) -> tuple[list[Row], dict]:
    import numpy as np
    from loopback import Fault, LoopbackServer

    size = size_mb * 1000 * 1000
    data = np.random.default_rng(7).bytes(size)
    sha = sha256_hex(data)
    name = f"blob-{size_mb}mb.bin"
    server = LoopbackServer()
    try:
        url = server.serve(name, memoryview(data))
        env = ws.env(offline=False)
        args = {"url": url, "sha256": sha, "size": size, "name": name}
        log(
            f"[download] {size_mb} MB from {server.base}: {runs} downloads per side, alternating, in one "
            "process that imported torch, torchvision and dlwp"
        )
        res = run_worker("download", {**args, "runs": runs}, env)
        for side in ("ours", "baseline"):
            bad = [x["error"] for x in res[side] if not x["ok"]]
            if bad:
                raise RuntimeError(f"{side} download failed: {bad[0]}")
        secs = {side: [x["seconds"] for x in res[side]] for side in ("ours", "baseline")}
        mbps_o = size / MB / median(secs["ours"])
        mbps_b = size / MB / median(secs["baseline"])
        ratio = mbps_o / mbps_b

        # a cut at 50 %: dlwp resumes
        before = server.bytes_sent(name)
        server.inject(name, Fault("drop", after=size // 2))
        res_o = run_worker("download", {**args, "side": "ours"}, env)
        total_o = server.bytes_sent(name) - before
        # torch: the cut download fails its hash check (or raises); the user runs it again
        before = server.bytes_sent(name)
        server.inject(name, Fault("drop", after=size // 2))
        first = run_worker("download", {**args, "side": "baseline"}, env)
        second = run_worker("download", {**args, "side": "baseline"}, env)
        total_b = server.bytes_sent(name) - before
    finally:
        server.close()
    rows = [
        Row(
            f"download {size_mb} MB over 127.0.0.1 (median of {runs}; both hash sha256, dlwp also locks)",
            f"{mbps_o:.0f} MB/s ({fmt_s(median(secs['ours']))})",
            f"{mbps_b:.0f} MB/s ({fmt_s(median(secs['baseline']))})",
            f"{ratio:.2f}×",
            f"≥ {SPEED_TARGET}×",
            yes_no(ratio >= SPEED_TARGET),
        ),
        Row(
            "bytes transferred when cut at 50 % (dlwp resumes; torch: failed try + full retry)",
            f"{total_o / size:.3f}× file ({'ok' if res_o['ok'] else 'FAILED: ' + str(res_o['error'])})",
            f"{total_b / size:.3f}× file (1st try: {'ok' if first['ok'] else 'failed'}; retry: "
            f"{'ok' if second['ok'] else 'failed'})",
            f"{total_o / total_b:.2f}×",
            f"≤ {RESUME_LIMIT}× file",
            yes_no(res_o["ok"] and total_o <= RESUME_LIMIT * size),
            f"torch's first try: {first['error'] or 'no error'}"[:160],
        ),
    ]
    log(
        f"[download] ours {mbps_o:.0f} MB/s vs torch {mbps_b:.0f} MB/s = {ratio:.2f}×; resume {total_o / size:.3f}× "
        f"(torch {total_b / size:.3f}×)"
    )
    return rows, {"secs": secs, "resume_ours": total_o, "resume_torch": total_b, "size": size}

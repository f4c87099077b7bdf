"""Ctrl-C ends dlwp at once: during a weight download (no half-written file is left in place, and
a later run fetches and verifies the file) and while ``predict`` fetches slow image URLs in its
worker threads (the process does not wait for them)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
from conftest import REPO_DIR, sha256_of
from PIL import Image

import dlwp_models

DRIP_SECONDS = 0.5  # per 64 KiB: a file of 1 MiB takes 8 s to arrive
GRACE = 2.0  # the bound on the time from SIGINT to exit


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_DIR), **env},
    )


def interrupt(process: subprocess.Popen) -> tuple[float, int, str]:
    """SIGINT ``process``; (seconds until it exited, its exit status, its stderr)."""
    t0 = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    finally:
        process.kill()
    _, err = process.communicate()
    return time.monotonic() - t0, process.returncode, err


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the child process"
        time.sleep(0.05)


def test_ctrl_c_during_a_weight_download_exits_at_once_and_a_later_run_verifies(weight_server, make_manifest, hub_home):
    data = os.urandom(1 << 20)
    name = "interrupted-download.pth"
    weight_server.serve(name, data)
    weight_server.delay_per_chunk[name] = DRIP_SECONDS
    make_manifest(
        [
            {
                "name": "testnet.v1",
                "model": "testnet",
                "default": True,
                "format": "torchvision",
                "files": {
                    "state_dict": {
                        "filename": name,
                        "urls": [weight_server.url(name)],
                        "sha256": sha256_of(data),
                        "size": len(data),
                    }
                },
            }
        ]
    )
    env = {"TORCH_HOME": str(hub_home), "DLWP_MANIFEST": os.environ["DLWP_MANIFEST"]}
    process = start(["-m", "dlwp_models", "fetch", "testnet.v1", "-q"], env)
    cache = hub_home / "hub" / "checkpoints" / "dlwp"
    wait_for(lambda: process.poll() is not None or any(cache.rglob(f"{name}.resume")))  # bytes arriving
    time.sleep(1.0)  # some bytes are in, most are not
    assert process.poll() is None, "the download ended before it was interrupted"
    seconds, status, err = interrupt(process)
    assert seconds < GRACE, f"took {seconds:.2f}s to exit after Ctrl-C"
    assert status == 130 and "interrupted" in err and "Traceback" not in err
    assert [p for p in cache.rglob(name) if p.is_file()] == []  # nothing half-written in place
    kept = next(cache.rglob(f"{name}.resume")).stat().st_size  # the bytes so far, kept to resume from
    assert 0 < kept < len(data)
    del weight_server.delay_per_chunk[name]
    paths = dlwp_models.fetch("testnet.v1", progress=False)
    assert paths["state_dict"].read_bytes() == data
    assert weight_server.hits_for(name)[-1].range == f"bytes={kept}-"  # continued, not restarted
    assert json.loads(paths["state_dict"].with_name(name + ".verified").read_text())["sha256"] == sha256_of(data)


def test_ctrl_c_while_predict_fetches_slow_image_urls_exits_at_once(weight_server, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")  # ~1 MiB: 16 slow chunks
    urls = []
    for i in range(2):  # two URLs: decoded in worker threads
        name = f"interrupted-{i}.png"
        urls.append(weight_server.serve(name, buffer.getvalue(), "image/png"))
        weight_server.delay_per_chunk[name] = DRIP_SECONDS
    code = (
        "import sys\nfrom hubconf import squeezenet1_1\n"
        "model = squeezenet1_1()\nprint('ready', flush=True)\nmodel.predict(sys.argv[1:])\n"
    )
    process = start(["-c", code, *urls], {"TORCH_HOME": str(tmp_path)})
    assert process.stdout.readline().strip() == "ready"
    time.sleep(1.5)  # both workers are mid-download
    assert process.poll() is None, "predict ended before it was interrupted"
    seconds, status, err = interrupt(process)
    assert seconds < GRACE, f"took {seconds:.2f}s to exit after Ctrl-C"
    assert "KeyboardInterrupt" in err

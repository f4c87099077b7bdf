"""A running ``dlwp serve`` for the server and web-page tests (fixtures registered by conftest.py):
generated weights in the upstream formats (squeezenet1_1 and resnet18, the cyclegan generator,
neuraltalk2 with a random decoder over a small vocabulary), served from 127.0.0.1, fetched by the
server through the normal path; and the same models built in this process through the hub, to
compare answers with."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from random_weights import generated_entry

REPO_DIR = Path(__file__).resolve().parents[1]
SERVED = ("squeezenet1_1", "resnet18", "cyclegan", "neuraltalk2")
#: the server's settings in these tests: small batches and queue, a long wait so that batches fill
SERVER_ARGS = (
    "--max-batch",
    "4",
    "--max-wait-ms",
    "150",
    "--max-queue",
    "6",
    "--max-upload-mb",
    "1",
    "--cors-origin",
    "http://lab.example",
)
CAPTION_WORDS = {
    i: w
    for i, w in enumerate(
        "a the horse dog cat person riding on in with beach field grass near two standing white brown "
        "black small large of sitting next to UNK".split(),
        start=1,
    )
}


@dataclass
class ServeEnv:
    """The TORCH_HOME and manifest the server and the comparisons share."""

    home: Path
    manifest: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DLWP_")}
        env.update(TORCH_HOME=str(self.home), DLWP_MANIFEST=str(self.manifest), PYTHONPATH=str(REPO_DIR))
        return env

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TORCH_HOME", str(self.home))
            mp.setenv("DLWP_MANIFEST", str(self.manifest))
            yield

    def build(self, name: str) -> torch.nn.Module:
        from dlwp_models.hub import build

        with self.active():
            return build(name, pretrained=True, progress=False)


@pytest.fixture(scope="session")
def serve_env(weight_server, tmp_path_factory) -> ServeEnv:
    import torchvision
    from models.test_captioning import coco_fc_entry, infos_pickle, random_caffe_state_dict, zip_save
    from upstream_code import legacy_cuda_save

    from dlwp_models.models.captioning import DecoderConfig, FCDecoder
    from dlwp_models.models.cyclegan import ResNetGenerator

    torch.manual_seed(0)
    entries = [
        generated_entry(
            "squeezenet1_1.imagenet1k_v1",
            torchvision.models.squeezenet1_1().state_dict(),
            weight_server,
            prefix="serve",
        ),
        generated_entry(
            "resnet18.imagenet1k_v1", torchvision.models.resnet18().state_dict(), weight_server, prefix="serve"
        ),
        generated_entry("cyclegan.horse2zebra", ResNetGenerator().state_dict(), weight_server, prefix="serve"),
    ]
    decoder = FCDecoder(DecoderConfig(vocab_size=len(CAPTION_WORDS), input_encoding_size=32, rnn_size=32))
    with torch.no_grad():  # sharper word choices: captions depend on the image
        decoder.img_embed.weight.mul_(40)
        decoder.logit.weight.mul_(4)
    entries.append(
        coco_fc_entry(
            weight_server,
            encoder=zip_save(random_caffe_state_dict()),
            decoder=legacy_cuda_save(decoder.state_dict()),
            vocab=infos_pickle(CAPTION_WORDS),
        )
    )
    folder = tmp_path_factory.mktemp("serve")
    (folder / "home").mkdir()
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"schema_version": 1, "weights": entries}), encoding="utf-8")
    return ServeEnv(folder / "home", manifest)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    """``python -m dlwp_models serve`` in a subprocess on 127.0.0.1 and a free port."""

    def __init__(self, env: ServeEnv, models: tuple[str, ...], *args: str, timeout: float = 180) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = env.home.parent / f"server-{self.port}.log"
        self._log_file = open(self.log, "w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dlwp_models",
                "serve",
                "--models",
                ",".join(models),
                "--port",
                str(self.port),
                *args,
            ],
            env=env.env(),
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
        )
        self.ready_line = self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> str:
        line = self.process.stdout.readline()  # printed once every model is loaded
        if "ready; open" not in line:
            self.stop()
            raise RuntimeError(f"the server did not start: {line!r}\n{self.log.read_text()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return line
            time.sleep(0.1)
        raise RuntimeError(f"the server was not ready within {timeout} s:\n{self.log.read_text()}")

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of /metrics with exactly these labels (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        for match in re.finditer(rf"^{re.escape(name)}(?:{{(.*)}})? (\S+)$", text, re.MULTILINE):
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
            if found == labels:
                return float(match.group(2))
        return 0.0

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()
        self.process.stdout.close()
        return self.process.returncode


@pytest.fixture(scope="session")
def server(serve_env) -> Iterator[RunningServer]:
    running = RunningServer(serve_env, SERVED, *SERVER_ARGS)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def python_models(serve_env, server) -> dict[str, torch.nn.Module]:
    """The served models built here through the hub (after the server has cached the files)."""
    return {name: serve_env.build(name) for name in SERVED}

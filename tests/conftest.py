"""Shared fixtures: an isolated torch hub home for every test, loopback weight servers, and
helpers to write manifests that point at files those servers hold."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loopback import LoopbackServer
from serve_support import python_models, serve_env, server  # noqa: F401  (dlwp serve fixtures)

REPO_DIR = Path(__file__).resolve().parents[1]
DLWP_VARS = (
    "DLWP_MANIFEST",
    "DLWP_MIRROR",
    "DLWP_OFFLINE",
    "DLWP_LOCK_TIMEOUT",
    "DLWP_MAX_DOWNLOAD_BYTES",
    "DLWP_STALL_BYTES_PER_S",
    "DLWP_STALL_SECONDS",
    "DLWP_MAX_RESIZED_PIXELS",
)


@pytest.fixture(autouse=True)
def hub_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every test gets its own TORCH_HOME (so its own cache) and no DLWP_* settings."""
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    for var in DLWP_VARS:
        monkeypatch.delenv(var, raising=False)
    return home


#: the loopback servers of this session (each test's faults and delays are dropped after it)
_SERVERS: list[LoopbackServer] = []


@pytest.fixture(autouse=True)
def isolated_servers():
    """Faults a test injected and did not use, and its per-chunk delays, end with it: the servers
    live for the session, so without this they would reach the next test serving that name."""
    yield
    for loopback in _SERVERS:
        loopback.forget_faults()


@pytest.fixture(scope="session")
def weight_server() -> LoopbackServer:
    loopback = LoopbackServer()
    _SERVERS.append(loopback)
    yield loopback
    _SERVERS.remove(loopback)
    loopback.close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throw-away self-signed certificate for 127.0.0.1."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="session")
def https_server(tls_files: tuple[Path, Path]) -> LoopbackServer:
    loopback = LoopbackServer(*tls_files)
    _SERVERS.append(loopback)
    yield loopback
    _SERVERS.remove(loopback)
    loopback.close()


@pytest.fixture
def trust_https(monkeypatch: pytest.MonkeyPatch, tls_files: tuple[Path, Path]) -> None:
    """Make requests trust the loopback certificate (and nothing else)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files[0]))


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def one_weight_set(transforms: dict | None = None, **file: object):
    """Weight set 't.v1' (model 't') parsed from an in-memory manifest named test.json: one file
    'net.pth' from https://a.test/net.pth (no URL when it has ``parts``), with ``file``'s fields
    (its pins) and, when given, ``transforms``."""
    from dlwp_models.weights.manifest import parse_manifest

    fields = {"filename": "net.pth", **({} if "parts" in file else {"urls": ["https://a.test/net.pth"]}), **file}
    entry = {"name": "t.v1", "model": "t", "default": True, "format": "torchvision", "files": {"state_dict": fields}}
    if transforms is not None:
        entry["transforms"] = transforms
    return parse_manifest({"schema_version": 1, "weights": [entry]}, "test.json")[0]


def one_file_spec(**file: object):
    """The FileSpec of :func:`one_weight_set`'s file."""
    return one_weight_set(**file).files["state_dict"]


def kept_partial(spec, url: str, data: bytes) -> Path:
    """Bytes an earlier run left for ``spec`` from ``url`` (a resumable partial and its record)."""
    from dlwp_models.weights import resume, store

    store.cached_path(spec).parent.mkdir(parents=True, exist_ok=True)  # made by the lock in a download
    path = resume.start_resumable(spec, url)
    path.write_bytes(data)
    return path


@pytest.fixture
def file_entry(weight_server: LoopbackServer) -> Callable[..., dict]:
    """Serve ``data`` as ``name`` and return a file spec pinned by sha256 and size."""

    def make(name: str, data: bytes, **extra) -> dict:
        spec = {
            "filename": name,
            "urls": [weight_server.serve(name, data)],
            "sha256": sha256_of(data),
            "size": len(data),
        }
        spec.update(extra)
        return spec

    return make


@pytest.fixture
def make_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[list[dict]], Path]:
    """Write a manifest with these entries and layer it over the bundled one via DLWP_MANIFEST."""
    counter = iter(range(10_000))

    def make(entries: list[dict]) -> Path:
        path = tmp_path / f"manifest-{next(counter)}.json"
        path.write_text(json.dumps({"schema_version": 1, "weights": entries}), encoding="utf-8")
        monkeypatch.setenv("DLWP_MANIFEST", str(path))
        return path

    return make


@pytest.fixture(scope="session")
def batch_env(weight_server: LoopbackServer, tmp_path_factory: pytest.TempPathFactory):
    """squeezenet1_1, cyclegan and neuraltalk2 with generated weights, fetched once into a TORCH_HOME
    of their own (the batch-job tests of tests/batch share it)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "batch"))
    from batch_files import make_batch_env

    return make_batch_env(weight_server, tmp_path_factory.mktemp("batch"))


@pytest.fixture(scope="session")
def finetune_env(weight_server: LoopbackServer, tmp_path_factory: pytest.TempPathFactory):
    """resnet18 and squeezenet1_1 with generated weights and a TORCH_HOME of their own (tests/train)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "train"))
    from finetune_env import make_env

    return make_env(weight_server, tmp_path_factory.mktemp("finetune"))


@pytest.fixture(scope="session")
def finetune_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated photos of four classes in train/ and val/ (tests/train)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "train"))
    from photos import make_photos

    return make_photos(tmp_path_factory.mktemp("photos"), {"train": 16, "val": 6})


@pytest.fixture(scope="session")
def finetune_run(finetune_env, finetune_photos) -> Path:
    """One head-only fine-tune of resnet18 on ``finetune_photos``, through the command line."""
    from finetune_env import make_run

    return make_run(finetune_env, finetune_photos)

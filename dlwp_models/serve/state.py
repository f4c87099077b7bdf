"""What one server holds: its settings, the models (loaded in a background thread, so /healthz
answers while they load), each model's task and batcher, and the metrics."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from torch import nn

from ..errors import ApiError
from ..inputs.pipeline import usable_cores
from ..models.registry import family_info
from ..tasks import ModelSpec, Task, backend_for, error_text, task_named
from .batching import Batcher
from .metrics import Metrics
from .uploads import UploadBudget

__all__ = ["ServeSettings", "ServerState", "Served", "DEFAULT_MODELS"]

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("resnet101", "cyclegan", "neuraltalk2")


@dataclass(frozen=True)
class ServeSettings:
    """The ``serve`` command's options (every default is documented in docs/serving.md)."""

    models: tuple[str, ...] = DEFAULT_MODELS
    weights: dict[str, str] = field(default_factory=dict)  # model -> weight tag or name
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 16
    max_wait_ms: float = 10.0
    max_queue: int = 64
    max_upload_mb: float = 20.0
    device: str = "cpu"
    cors_origins: tuple[str, ...] = ()
    backend: str = "eager"  # for the models that can run on it: --backend
    max_pixels: int = Image.MAX_IMAGE_PIXELS or 89_478_485  # PIL's decompression-bomb limit
    #: the memory one upload may take while it is decoded (pixels x depth x channels, and copies)
    max_image_mb: float = 512.0
    #: the memory all uploads being decoded at once may take: decode_slots follows from it
    decode_memory_mb: float = 2048.0
    #: uploads decoded at the same time: 2 per core, at most decode_memory_mb / max_image_mb
    decode_slots: int | None = None
    #: bytes of the request bodies being received at once (beyond: 503 before reading)
    max_uploading_mb: float = 128.0
    max_parts: int = 8  # parts of a multipart form
    header_timeout_s: float = 10.0  # to send a request's headers, from the connection (or the last answer)
    body_timeout_s: float = 60.0  # to send a request's body, from its headers
    keep_alive_s: float = 5.0  # an idle connection after an answer
    max_connections: int = 512  # open at once (and always below the open-file limit)
    drain_s: float = 30.0  # on SIGTERM: time for the batches running to finish
    #: the Host names the server answers (against DNS rebinding); empty: the bound host and
    #: localhost's names; "*" allows any
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.decode_slots is None:
            by_memory = int(self.decode_memory_mb // self.max_image_mb) if self.max_image_mb > 0 else 1
            object.__setattr__(self, "decode_slots", max(1, min(2 * usable_cores(), by_memory)))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_image_bytes(self) -> int:
        return int(self.max_image_mb * 2**20)

    @property
    def max_uploading_bytes(self) -> int:
        return int(self.max_uploading_mb * 2**20)

    def hosts(self) -> frozenset[str]:
        """The Host names answered (lower case, without the port)."""
        if self.allowed_hosts:
            return frozenset(h.strip().lower().strip("[]") for h in self.allowed_hosts)
        return frozenset({self.host.lower().strip("[]"), "localhost", "127.0.0.1", "::1"})

    def batching(self) -> dict[str, float]:
        return {"max_batch": self.max_batch, "max_wait_ms": self.max_wait_ms, "max_queue": self.max_queue}


def build_model(name: str, weights: str | None, device: str) -> nn.Module:
    """``name`` built as every application builds a task's model (:meth:`ModelSpec.build`)."""
    return ModelSpec(name, weights, device).build()


@dataclass
class Served:
    """One loaded model: its name, the task it does and the backend that runs its network."""

    name: str
    model: nn.Module
    task: type[Task]
    backend: str = "eager"

    @property
    def weights(self) -> str | None:
        """The weight set's name (None for random weights)."""
        weights = getattr(self.model, "weights", None)
        return None if weights is None else weights.name

    def run_batch(self, key: Hashable, items: Sequence[Any]) -> list[Any]:
        """One batch of prepared inputs sharing ``key`` = (the requests' task, its batch key)."""
        task: Task = key[0]  # type: ignore[index]
        return task.run(self.model, list(items), backend=self.backend)


class ServerState:
    """The models, their tasks and batchers. :meth:`start_loading` loads them in a thread;
    ``loaded`` is set when that ends, ``failure`` then holds the error message if one failed."""

    def __init__(
        self, settings: ServeSettings, build: Callable[[str, str | None, str], nn.Module] = build_model
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.served: dict[str, Served] = {}
        self.batchers: dict[str, Batcher] = {}
        self.loaded = threading.Event()
        self.failure: str | None = None
        #: uploads decoded and preprocessed at the same time (each may take max_image_mb)
        self.decode_slots = asyncio.Semaphore(settings.decode_slots or 1)
        #: bytes of the request bodies being received
        self.uploads = UploadBudget(settings.max_uploading_bytes)
        self._build = build
        self._lock = threading.Lock()
        self._closed = False

    @property
    def ready(self) -> bool:
        return self.loaded.is_set() and self.failure is None

    def start_loading(self) -> None:
        threading.Thread(target=self._load_all, name="dlwp-serve-load", daemon=True).start()

    def _load_all(self) -> None:
        try:
            for name in self.settings.models:
                log.info("loading %s", name)
                model = self._build(name, self.settings.weights.get(name), self.settings.device)
                task, backend = task_named(family_info(name).task), backend_for(name, self.settings.backend)
                task.ready(model, backend)  # e.g. an int8 graph that was never made: refused at load
                self.add(Served(name, model, task, backend))
        except Exception as exc:  # reported by the command, which then stops the server
            log.debug("loading failed", exc_info=True)
            self.failure = error_text(exc)
        finally:
            self.loaded.set()

    def add(self, served: Served) -> None:
        """Serve a loaded model: its batcher starts, its queue is watched."""
        with self._lock:
            if self._closed:
                return
            batcher = Batcher(
                served.name,
                served.run_batch,
                max_batch=self.settings.max_batch,
                max_wait_s=self.settings.max_wait_ms / 1000,
                max_queue=self.settings.max_queue,
                on_batch=self.metrics.batch_observer(served.name),
            )
            self.metrics.watch_queue(served.name, batcher.depth)
            self.served[served.name], self.batchers[served.name] = served, batcher

    def find(self, kind: str, name: str | None) -> tuple[Served, Batcher]:
        """The model ``name`` (default: the first loaded one doing ``kind``), or a 404 / 503."""
        if name is None:
            names = [n for n, s in self.served.items() if s.task.name == kind]
            if not names:
                wanted = [n for n in self.settings.models if n not in self.served]
                if wanted and not self.loaded.is_set():
                    raise ApiError(503, "the models are still loading; retry in a few seconds.", {"Retry-After": "5"})
                raise ApiError(404, f"no loaded model does {kind}; this server has {', '.join(self.served) or 'none'}.")
            name = names[0]
        served = self.served.get(name)
        if served is None:
            if name in self.settings.models and not self.loaded.is_set():
                raise ApiError(503, f"{name} is still loading; retry in a few seconds.", {"Retry-After": "5"})
            raise ApiError(
                404, f"unknown model {name!r}; this server has {', '.join(self.served) or 'none'} (see /v1/models)."
            )
        if served.task.name != kind:
            raise ApiError(404, f"{name} does not {kind} (it does {served.task.name}); use /v1/{served.task.name}.")
        return served, self.batchers[name]

    def drain(self, seconds: float) -> None:
        """The server stops (SIGTERM): admit nothing more (new requests are answered 503), let what
        was admitted run for at most ``seconds``, then answer what is still queued 503. Blocks up
        to ``seconds``; the batches running then finish on their own threads."""
        with self._lock:
            batchers = list(self.batchers.values())
        for batcher in batchers:
            batcher.stop_admitting()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not all(b.idle() for b in batchers):
            time.sleep(0.05)
        for batcher in batchers:
            batcher.drain()

    def close(self, timeout: float = 2.0) -> bool:
        """Take no new requests, finish the queued ones and stop the workers, waiting at most
        ``timeout`` seconds in all; whether every worker stopped (the workers are daemon threads:
        a batch still running then ends with the process)."""
        with self._lock:
            self._closed = True
            batchers = list(self.batchers.values())
        deadline = time.monotonic() + timeout
        for batcher in batchers:
            batcher.close(max(0.0, deadline - time.monotonic()))
        return not any(batcher.running() for batcher in batchers)

"""The server's memory bound under overload: a model's ``--max-queue`` counts the requests still
being decoded, the surplus is refused before any decode, and at most ``decode_slots`` uploads are
decoded at once. In process (the app on httpx's ASGI transport), with a stand-in task whose
preparation and batches are observable."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

pytest.importorskip("fastapi", reason='the [serve] extra: pip install -e ".[serve]"')

import httpx
import numpy as np

from dlwp_models.errors import BatcherClosed, QueueFull
from dlwp_models.inputs.predictions import Prediction
from dlwp_models.serve import app as app_module
from dlwp_models.serve.batching import Batcher
from dlwp_models.serve.state import Served, ServerState, ServeSettings
from dlwp_models.tasks.classify import Classify


class StandInModel:
    """What the classify task checks of a model: its labels (enough for the default top 5)."""

    categories = ["horse", "zebra", "donkey", "okapi", "tapir"]
    weights = None


class SlowWork:
    """A classify model's preparation that takes 0.2 s and counts how many run at once, and
    batches that wait for ``release``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.preparing = self.most_preparing = self.prepared = 0
        self.release = threading.Event()

    def prepare(self, body: bytes) -> np.ndarray:
        with self.lock:
            self.preparing += 1
            self.prepared += 1
            self.most_preparing = max(self.most_preparing, self.preparing)
        time.sleep(0.2)
        with self.lock:
            self.preparing -= 1
        return np.zeros((4, 4, 3), dtype=np.uint8)

    def run(self, key, items):
        assert self.release.wait(30)
        return [Prediction([("zebra", 100.0)], [1]) for _ in items]


def stand_in() -> tuple[ServeSettings, ServerState, SlowWork]:
    """A server's state with the stand-in model loaded: batches of 2, 5 places, 2 decode slots."""
    settings = ServeSettings(models=("stand-in",), max_batch=2, max_wait_ms=0, max_queue=5, decode_slots=2)
    state = ServerState(settings)
    task = SlowWork()
    state.served["stand-in"] = Served("stand-in", StandInModel(), Classify)
    state.batchers["stand-in"] = Batcher("stand-in", task.run, max_batch=2, max_wait_s=0, max_queue=5)
    state.loaded.set()
    return settings, state, task


def test_surplus_requests_are_refused_undecoded_and_decodes_are_bounded(monkeypatch):
    settings, state, task = stand_in()
    monkeypatch.setattr(app_module, "_prepare", lambda served, classify, body, max_pixels: task.prepare(body))
    app = app_module.create_app(settings, state)

    async def requests() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            sent = [
                client.post("/v1/classify", content=b"photo %d" % i, headers={"Content-Type": "image/jpeg"})
                for i in range(12)
            ]
            loop = asyncio.get_running_loop()
            loop.call_later(1.5, task.release.set)
            return await asyncio.gather(*sent)

    try:
        responses = asyncio.run(requests())
    finally:
        task.release.set()
        state.close()
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [503] * 7, statuses  # 5 places in the queue, decoding included
    assert task.prepared == 5  # a refused upload is never decoded
    assert task.most_preparing == 2  # decode_slots at a time, no more
    assert state.batchers["stand-in"].pending() == 0  # every place was given back


def test_a_place_is_given_back_when_preparation_fails_and_closing_refuses_new_ones():
    batcher = Batcher("m", lambda key, items: list(items), max_batch=1, max_wait_s=0, max_queue=2)

    async def scenario() -> None:
        with pytest.raises(ValueError):
            with batcher.admit():
                assert batcher.pending() == 1
                raise ValueError("a damaged upload")
        assert batcher.pending() == 0
        with batcher.admit() as first, batcher.admit():
            assert batcher.pending() == 2
            with pytest.raises(QueueFull):
                with batcher.admit():
                    pass
            with pytest.raises(QueueFull):
                batcher.check_room()  # the same answer, asked before an upload is read
            assert batcher.pending() == 2
            assert await first.submit("k", 7).future == 7
        assert batcher.pending() == 0
        batcher.check_room()  # room: no exception, and no place taken
        assert batcher.pending() == 0
        with batcher.admit() as late:
            batcher.close(5)
            with pytest.raises(BatcherClosed):
                late.submit("k", 8)
        assert batcher.pending() == 0
        with pytest.raises(BatcherClosed):
            with batcher.admit():
                pass
        with pytest.raises(BatcherClosed):
            batcher.check_room()

    asyncio.run(scenario())


def test_a_request_during_shutdown_is_refused_before_its_upload_is_read(monkeypatch):
    settings, state, task = stand_in()
    read = []

    async def read_upload(request, max_bytes):
        read.append(max_bytes)
        return b"photo"

    monkeypatch.setattr(app_module, "read_upload", read_upload)
    app = app_module.create_app(settings, state)
    state.batchers["stand-in"].close(5)

    async def request() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            return await client.post("/v1/classify", content=b"photo", headers={"Content-Type": "image/jpeg"})

    try:
        response = asyncio.run(request())
    finally:
        state.close()
    assert (response.status_code, response.headers["Retry-After"]) == (503, "5")
    assert "the server is shutting down; retry on another instance." in response.text
    assert read == [] and task.prepared == 0

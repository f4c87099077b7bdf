"""``dlwp serve``: the real server (uvicorn in a subprocess on 127.0.0.1) on generated weights.

Every endpoint and status code of the API, answers equal to the Python API on the same bytes,
batching, the event loop's responsiveness during a batch, client disconnects, the full queue, and
SIGTERM. The fixtures (the server, its weights, the same models built here) are in
``tests/serve_support.py``."""

from __future__ import annotations

import io
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image
from serve_support import SERVER_ARGS, RunningServer, free_port

LEAKS = ("Traceback", 'File "', "/tmp/", "/work/", "site-packages")


def photo(width: int = 130, height: int = 90, seed: int = 0, fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def as_image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` × ``height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def post(server, route: str, data: bytes, content_type: str = "image/jpeg", **kwargs) -> httpx.Response:
    return httpx.post(
        f"{server.url}{route}",
        content=data,
        headers={"Content-Type": content_type, **kwargs.pop("headers", {})},
        timeout=120,
        **kwargs,
    )


def assert_error(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["status"] == status
    assert words in body["error"]["message"], body
    assert not any(leak in response.text for leak in LEAKS), response.text


# --------------------------------------------------------------------------- endpoints


def test_health_readiness_models_page_docs_and_metrics(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    models = {m["name"]: m for m in httpx.get(f"{server.url}/v1/models").json()["models"]}
    batching = {"max_batch": 4, "max_wait_ms": 150.0, "max_queue": 6}
    assert models["squeezenet1_1"] == {
        "name": "squeezenet1_1",
        "task": "classify",
        "categories": 1000,
        "weights": "squeezenet1_1.imagenet1k_v1",
        "batching": batching,
    }
    assert models["cyclegan"]["task"] == "translate" and models["cyclegan"]["weights"] == "cyclegan.horse2zebra"
    assert models["neuraltalk2"]["vocabulary_size"] == 26 and models["neuraltalk2"]["task"] == "caption"
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script" in page.text and 'src="http' not in page.text and 'href="http' not in page.text
    docs = httpx.get(f"{server.url}/docs").text  # the server's own page: no CDN, works offline
    assert "/v1/classify" in docs and "/v1/translate" in docs and "/v1/caption" in docs
    assert "/v1/classify" in httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert 'dlwp_queue_depth{model="cyclegan"}' in httpx.get(f"{server.url}/metrics").text
    assert server.ready_line.startswith("dlwp serve: ") and f"http://127.0.0.1:{server.port}/" in server.ready_line


def test_cors_answers_only_the_configured_origin(server):
    preflight = httpx.options(
        f"{server.url}/v1/classify", headers={"Origin": "http://lab.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://lab.example"
    other = httpx.get(f"{server.url}/healthz", headers={"Origin": "http://elsewhere.example"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("model", ["squeezenet1_1", "resnet18"])
@pytest.mark.parametrize("form", [False, True])
def test_classify_answers_equal_predict_on_the_same_bytes(server, python_models, tmp_path, model, form):
    data = photo(seed=3)
    if form:
        response = httpx.post(
            f"{server.url}/v1/classify",
            params={"model": model, "topk": 3},
            files={"image": ("bobby.jpg", data, "image/jpeg")},
            timeout=60,
        )
    else:
        response = post(server, f"/v1/classify?model={model}&topk=3", data)
    assert response.status_code == 200, response.text
    body = response.json()
    (tmp_path / "bobby.jpg").write_bytes(data)
    expected = python_models[model].predict(str(tmp_path / "bobby.jpg"), topk=3)
    categories = python_models[model].categories
    assert body["model"] == model and body["weights"] == f"{model}.imagenet1k_v1"
    assert [p["label"] for p in body["predictions"]] == expected.labels
    assert [p["index"] for p in body["predictions"]] == [categories.index(label) for label in expected.labels]
    assert np.allclose([p["percent"] for p in body["predictions"]], expected.percents, rtol=0, atol=1e-4)


def test_classify_defaults_to_the_first_classifier_and_top_5_and_is_counted(server):
    labels = {"route": "/v1/classify", "method": "POST", "status": "200"}
    before = server.metric("dlwp_requests_total", **labels)
    body = post(server, "/v1/classify", photo(fmt="PNG"), "application/octet-stream").json()
    assert body["model"] == "squeezenet1_1" and len(body["predictions"]) == 5
    assert server.metric("dlwp_requests_total", **labels) == before + 1
    assert server.metric("dlwp_request_seconds_count", route="/v1/classify") >= 1


@pytest.mark.parametrize("accept, fmt", [("image/png", "PNG"), ("image/jpeg", "JPEG"), ("*/*", "PNG")])
def test_translate_answers_the_pixels_of_translate(server, python_models, accept, fmt):
    data = photo(seed=5)
    response = post(server, "/v1/translate?size=64", data, headers={"Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == f"image/{fmt.lower()}"
    zebra = Image.open(io.BytesIO(response.content))
    assert zebra.format == fmt and zebra.size == (92, 64)  # 130×90 at a shorter side of 64
    expected = python_models["cyclegan"].translate(as_image(data), size=64)
    if fmt == "PNG":
        assert np.array_equal(np.asarray(zebra.convert("RGB")), np.asarray(expected))
    else:
        buffer = io.BytesIO()
        expected.save(buffer, format="JPEG", quality=95)
        assert np.array_equal(np.asarray(zebra.convert("RGB")), np.asarray(as_image(buffer.getvalue())))


@pytest.mark.parametrize("beam_size", [1, 3])
def test_caption_is_word_for_word_caption(server, python_models, beam_size):
    sentences = set()
    for seed in (1, 2):
        data = photo(seed=seed, width=96, height=80)
        body = post(server, f"/v1/caption?beam_size={beam_size}", data).json()
        assert body["model"] == "neuraltalk2" and body["weights"] == "neuraltalk2.coco_fc"
        assert body["caption"] == python_models["neuraltalk2"].caption(as_image(data), beam_size=beam_size)
        sentences.add(body["caption"])
    assert all(sentences)


# --------------------------------------------------------------------------- status codes


HTML = b"<!doctype html><html><body>not a photo</body></html>"


@pytest.mark.parametrize(
    "route, data, content_type, status, words",
    [
        ("/v1/classify", photo()[:400], "image/jpeg", 400, "damaged or truncated"),
        ("/v1/classify", HTML, "image/jpeg", 400, "not an image"),
        ("/v1/caption", b"", "image/png", 400, "body is empty"),
        ("/v1/classify", photo(), "text/plain", 415, "unsupported content type 'text/plain'"),
        ("/v1/classify", photo(), "", 415, "unsupported content type '(none)'"),
        ("/v1/classify?model=resnet9000", photo(), "image/jpeg", 404, "unknown model 'resnet9000'"),
        ("/v1/classify?model=cyclegan", photo(), "image/jpeg", 404, "cyclegan does not classify"),
        ("/v1/translate?model=resnet18", photo(), "image/jpeg", 404, "resnet18 does not translate"),
        ("/v1/segment", photo(), "image/jpeg", 404, "no such route: POST /v1/segment"),
        ("/v1/classify?topk=0", photo(), "image/jpeg", 422, "topk"),
        ("/v1/classify?topk=1001", photo(), "image/jpeg", 422, "topk must be between 1 and 1000"),
        ("/v1/classify?topk=five", photo(), "image/jpeg", 422, "topk"),
        ("/v1/translate?size=-3", photo(), "image/jpeg", 422, "size"),
        ("/v1/translate?size=4", photo(), "image/jpeg", 422, "size"),
        ("/v1/caption?beam_size=100", photo(), "image/jpeg", 422, "beam_size"),
        ("/v1/classify", png_header(10_000, 10_000), "image/png", 413, "too many pixels (10000×10000)"),
        ("/v1/classify", png_header(20_000, 20_000), "image/png", 413, "too many pixels"),
        ("/v1/translate?size=1024", photo(width=1200, height=20), "image/jpeg", 413, "megapixels"),
    ],
    ids=lambda value: value if isinstance(value, (str, int)) else "body",
)
def test_bad_requests_get_the_documented_status_and_a_json_message(server, route, data, content_type, status, words):
    assert_error(post(server, route, data, content_type), status, words)


def test_multipart_without_an_image_field_is_400_and_wrong_method_is_405(server):
    response = httpx.post(f"{server.url}/v1/classify", files={"photo": ("a.jpg", photo(), "image/jpeg")})
    assert_error(response, 400, "no field named 'image'")
    assert_error(httpx.get(f"{server.url}/v1/classify"), 405, "does not take GET")
    assert_error(httpx.get(f"{server.url}/nothing/here"), 404, "no such route: GET /nothing/here")


def raw_request(server, headers: str, body: bytes = b"", *, close_after: float | None = None) -> bytes:
    """Send a request on a plain socket; return the answer (or b"" after closing early)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    with sock:
        sock.sendall(headers.replace("\n", "\r\n").encode() + b"\r\n" + body)
        if close_after is not None:
            time.sleep(close_after)
            return b""
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and b"}" in answer:
                break
        return answer


def test_an_upload_over_the_limit_is_refused_from_its_length_without_reading_it(server):
    started = time.monotonic()
    answer = raw_request(
        server,
        f"POST /v1/classify HTTP/1.1\nHost: 127.0.0.1\nContent-Type: image/jpeg\nContent-Length: {200 * 2**20}\n",
        b"\xff\xd8" + b"\0" * 65536,
    )
    assert answer.startswith(b"HTTP/1.1 413 ") and b"larger than the server's limit of 1 MiB" in answer
    assert time.monotonic() - started < 5  # 64 KiB of the announced 200 MiB were ever sent


def test_a_chunked_upload_over_the_limit_is_refused_while_reading(server):
    def chunks():
        for _ in range(20):
            yield b"\0" * 65536  # 1.25 MiB in all, no Content-Length

    response = httpx.post(f"{server.url}/v1/classify", content=chunks(), headers={"Content-Type": "image/jpeg"})
    assert_error(response, 413, "larger than the server's limit")


# --------------------------------------------------------------------------- batching and the event loop


def concurrently(calls) -> list:
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_concurrent_requests_are_batched_and_answers_are_unchanged(server, python_models):
    images = [photo(seed=10 + i) for i in range(6)]  # no more than --max-queue: none may be refused
    before = server.metric("dlwp_batch_size_count", model="cyclegan")
    responses = concurrently([lambda d=d: post(server, "/v1/translate?size=32", d) for d in images])
    passes = server.metric("dlwp_batch_size_count", model="cyclegan") - before
    assert [r.status_code for r in responses] == [200] * 6
    assert passes < 6  # some requests shared a forward pass
    for data, response in zip(images, responses):
        expected = python_models["cyclegan"].translate(as_image(data), size=32)
        assert np.array_equal(np.asarray(as_image(response.content)), np.asarray(expected))


def test_healthz_answers_within_100_ms_while_a_batch_runs(server):
    with ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(post, server, "/v1/translate?size=160", photo(seed=20 + i)) for i in range(4)]
        time.sleep(0.4)  # past --max-wait-ms: the batch is running
        latencies = []
        with httpx.Client(base_url=server.url, timeout=5) as client:
            while not all(f.done() for f in pending):
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.05)
        assert [f.result().status_code for f in pending] == [200] * 4
    assert len(latencies) >= 3, "the batch finished before /healthz could be measured; make it larger"
    assert max(latencies) < 0.1, latencies


def test_clients_that_disconnect_cost_the_others_nothing(server, python_models):
    data = photo(seed=30)
    request = (
        f"POST /v1/translate?size=192 HTTP/1.1\nHost: 127.0.0.1\nContent-Type: image/jpeg\n"
        f"Content-Length: {len(data)}\n"
    )
    before = server.metric("dlwp_client_disconnects_total", model="cyclegan")
    with ThreadPoolExecutor(3) as pool:
        # one leaves while its request waits for the batch, one while the batch runs (a batch
        # of two at 192 px takes seconds on 2 cores)
        gone = [pool.submit(raw_request, server, request, data, close_after=after) for after in (0.05, 0.8)]
        kept = pool.submit(post, server, "/v1/translate?size=192", data)
        expected = np.asarray(python_models["cyclegan"].translate(as_image(data), size=192))
        assert np.array_equal(np.asarray(as_image(kept.result().content)), expected)
        for future in gone:
            future.result()
    deadline = time.monotonic() + 20
    while server.metric("dlwp_client_disconnects_total", model="cyclegan") - before < 2:
        assert time.monotonic() < deadline, "the server did not notice both disconnects"
        time.sleep(0.1)
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert "internal" not in server.log.read_text()


def test_a_full_queue_answers_503_with_retry_after(server, python_models):
    data = photo(seed=40)
    responses = concurrently([lambda: post(server, "/v1/translate?size=96", data) for _ in range(16)])
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 503}, statuses  # 4 running + 6 queued at most
    expected = np.asarray(python_models["cyclegan"].translate(as_image(data), size=96))
    for response in responses:
        if response.status_code == 503:
            assert_error(response, 503, "too busy")
            assert response.headers["retry-after"] == "1"
        else:
            assert np.array_equal(np.asarray(as_image(response.content)), expected)
    assert server.metric("dlwp_queue_full_total", model="cyclegan") >= statuses.count(503)


# --------------------------------------------------------------------------- lifecycle


def test_sigterm_finishes_what_is_in_flight_and_exits_0(serve_env):
    own = RunningServer(serve_env, ("cyclegan",), *SERVER_ARGS)
    try:
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(post, own, "/v1/translate?size=160", photo(seed=50))
            time.sleep(0.3)
            own.process.send_signal(signal.SIGTERM)
            assert in_flight.result().status_code == 200
        assert own.process.wait(10) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{own.url}/healthz")
    finally:
        own.stop()


def test_a_model_that_cannot_load_ends_the_command_with_its_message(tmp_path):
    from serve_support import REPO_DIR

    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_DIR), "TORCH_HOME": str(tmp_path), "DLWP_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "dlwp_models", "serve", "--models", "squeezenet1_1", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "dlwp: error: " in result.stderr and "not in the cache" in result.stderr
    assert "Traceback" not in result.stderr and "ready" not in result.stdout


def test_readyz_is_503_until_every_model_is_loaded(python_models):
    import uvicorn

    from dlwp_models.serve.app import create_app
    from dlwp_models.serve.state import ServerState, ServeSettings

    release = threading.Event()

    def build(name: str, weights: str | None, device: str):
        release.wait(30)
        return python_models[name]

    settings = ServeSettings(models=("squeezenet1_1",))
    state = ServerState(settings, build=build)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, state), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 30
            while not server.started:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert client.get("/healthz").status_code == 200
            response = client.get("/readyz")
            assert_error(response, 503, "loading models: 0 of 1 ready")
            assert response.headers["retry-after"] == "5"
            loading = client.post("/v1/classify", content=photo(), headers={"Content-Type": "image/jpeg"})
            assert_error(loading, 503, "still loading")
            release.set()
            assert state.loaded.wait(30)
            assert client.get("/readyz").json() == {"status": "ready", "models": ["squeezenet1_1"]}
            answer = client.post("/v1/classify", content=photo(), headers={"Content-Type": "image/jpeg"})
            assert answer.status_code == 200
    finally:
        release.set()
        server.should_exit = True
        thread.join(30)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--weights", "resnet101"], "--weights takes MODEL=TAG"),
        (["--models", "cyclegan", "--weights", "resnet101=IMAGENET1K_V2"], "which --models does not serve"),
    ],
)
def test_serve_refuses_bad_arguments_before_loading_anything(argv, words, capsys):
    from dlwp_models.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["serve", *argv])
    assert info.value.code == 2 and words in capsys.readouterr().err


def test_serve_refuses_an_unknown_model(capsys):
    from dlwp_models.cli.main import main

    assert main(["serve", "--models", "resnet9000"]) == 1
    assert "unknown model 'resnet9000'" in capsys.readouterr().err

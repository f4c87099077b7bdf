"""The FastAPI application: the routes of the HTTP API, JSON errors, the web page.

Handlers stay thin: each route is one task (:mod:`dlwp_models.tasks`) with its query options, and
:func:`_answer` is the one path from a request to that task's answer (find the model, check the
options, read the upload, take a place in the model's queue or answer 503 at once, decode the
upload and let the task prepare it in a worker thread, at most ``decode_slots`` at a time, queue
it for its batch, wait for the answer or the client's disconnect). A slow upload holds no place
in a queue.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import __version__
from ..errors import ApiError, BatcherClosed, ImageInputError, ImageTooLargeError, QueueFull
from ..models.cyclegan import MIN_SIDE
from ..tasks import Task
from ..tasks.caption import Caption
from ..tasks.classify import Classify
from ..tasks.translate import Translate
from .metrics import MetricsMiddleware
from .security import SecurityMiddleware, offline_docs
from .state import Served, ServerState, ServeSettings
from .uploads import Upload, decode_image, image_bytes, read_upload

__all__ = ["create_app", "MAX_SIZE", "MAX_BEAM"]

log = logging.getLogger(__name__)

#: the largest ``size`` (shorter side) /v1/translate accepts
MAX_SIZE = 1024
#: the widest beam /v1/caption accepts
MAX_BEAM = 10

_PAGE = Path(__file__).resolve().parent / "static" / "index.html"
_UPLOAD_DOC = (
    "The body is the image file's bytes (any `image/*` or `application/octet-stream` content type), "
    "or a multipart form with the field `image`."
)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status, headers=headers)


def create_app(settings: ServeSettings, state: ServerState | None = None) -> FastAPI:
    """The application serving ``settings.models``; models load in the background at startup."""
    state = state or ServerState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start_loading()
        yield
        await run_in_threadpool(state.close)

    app = FastAPI(
        title="dlwp serve",
        version=__version__,
        lifespan=lifespan,
        description="The models of chapter 2 of *Deep Learning with PyTorch* behind an HTTP API.",
        docs_url=None,  # Swagger UI loads from a CDN: /docs is a page of our own that works offline
        redoc_url=None,
    )
    app.state.dlwp = state
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Accept"],
        )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_middleware(SecurityMiddleware, hosts=settings.hosts(), page=_PAGE.read_text(encoding="utf-8"))
    _add_error_handlers(app)

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(offline_docs(app.openapi()))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_PAGE.read_text(encoding="utf-8"))

    @app.get("/healthz", summary="200 while the process serves")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="200 once every model is loaded, 503 before")
    async def readyz() -> Response:
        if state.ready:
            return JSONResponse({"status": "ready", "models": list(state.served)})
        if state.failure is not None:
            return _error(503, "a model failed to load; see the server's output.")
        return _error(
            503, f"loading models: {len(state.served)} of {len(settings.models)} ready.", {"Retry-After": "5"}
        )

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", summary="the loaded models: task, weights, size, batching")
    async def models() -> dict[str, Any]:
        return {
            "models": [
                {
                    "name": name,
                    "task": served.task.name,
                    "weights": served.weights,
                    **served.task.describe(served.model),
                    "batching": settings.batching(),
                }
                for name, served in state.served.items()
            ]
        }

    @app.post("/v1/classify", summary="top-k labels of one image", description=_UPLOAD_DOC)
    async def classify(
        request: Request, model: str | None = None, topk: int = Query(5, ge=1, description="how many labels")
    ) -> dict[str, Any]:
        served, task, answer = await _answer(state, request, model, Classify(topk=topk))
        return {"model": served.name, "weights": served.weights, **task.answer(answer)}

    @app.post(
        "/v1/translate",
        summary="horse → zebra: a PNG (or JPEG) of the resized image's size",
        description=_UPLOAD_DOC,
        response_class=Response,
        responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}},
    )
    async def translate(
        request: Request,
        model: str | None = None,
        size: int = Query(256, ge=MIN_SIDE, le=MAX_SIZE, description="shorter side after resizing"),
    ) -> Response:
        served, _, image = await _answer(state, request, model, Translate(size=size))
        jpeg = _wants_jpeg(request.headers.get("accept", ""))
        data = await run_in_threadpool(_encode, image, "JPEG" if jpeg else "PNG")
        return Response(
            data,
            media_type="image/jpeg" if jpeg else "image/png",
            headers={"X-Model": served.name, "X-Weights": served.weights or ""},
        )

    @app.post("/v1/caption", summary="a sentence describing one image", description=_UPLOAD_DOC)
    async def caption(
        request: Request,
        model: str | None = None,
        beam_size: int = Query(2, ge=1, le=MAX_BEAM, description="1: greedy"),
    ) -> dict[str, Any]:
        served, task, sentence = await _answer(state, request, model, Caption(beam_size=beam_size))
        return {"model": served.name, "weights": served.weights, **task.answer(sentence)}

    return app


async def _answer(state: ServerState, request: Request, model: str | None, task: Task) -> tuple[Served, Task, Any]:
    """The one request path: model → options → upload → the task's preparation → batch → answer."""
    served, batcher = state.find(task.name, model)
    try:
        task.check(served.model)
    except (ValueError, TypeError) as exc:
        raise ApiError(422, f"bad parameters for {served.name}: {exc}") from None
    try:
        batcher.check_room()  # refuse before spending time on the upload
    except (QueueFull, BatcherClosed) as exc:
        raise _refused(state, served.name, batcher.max_queue, exc) from None
    try:
        upload = await read_upload(request, max_bytes=state.settings.max_upload_bytes, budget=state.uploads)
    except ClientDisconnect:
        state.metrics.disconnects.labels(served.name).inc()
        raise ApiError(499, "the client closed the connection while sending.") from None
    try:
        with batcher.admit() as admission:  # a place in the queue before the body is parsed or decoded, or 503
            async with state.decode_slots:  # decoded photos in memory: at most one per slot
                prepared = await run_in_threadpool(_prepare, served, task, upload, state.settings)
            upload.release()
            job = admission.submit((task, task.batch_key(prepared)), prepared)
    except (QueueFull, BatcherClosed) as exc:  # the queue filled (or closed) during the upload
        raise _refused(state, served.name, batcher.max_queue, exc) from None
    finally:
        upload.release()
    disconnected = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({job.future, disconnected}, return_when=asyncio.FIRST_COMPLETED)
        if not job.future.done():
            state.metrics.disconnects.labels(served.name).inc()
            raise ApiError(499, "the client closed the connection.")
        try:
            return served, task, job.future.result()
        except BatcherClosed as exc:  # queued when the server began to stop
            raise _refused(state, served.name, batcher.max_queue, exc) from None
    finally:
        disconnected.cancel()
        if not job.future.done():  # the client left, or the handler was cancelled at shutdown
            batcher.cancel(job)


def _prepare(served: Served, task: Task, upload: Upload, settings: ServeSettings) -> Any:
    """The upload's image (its multipart form parsed now, after admission), decoded within the
    memory limit, then prepared by the task for the model (in a worker thread). Every fault of the
    image is a 4xx."""
    image = decode_image(image_bytes(upload, settings.max_parts), settings.max_pixels, settings.max_image_bytes)
    try:
        return task.prepare(served.model, image)
    except ImageTooLargeError as exc:
        raise ApiError(413, str(exc)) from None
    except ImageInputError as exc:
        raise ApiError(400, str(exc)) from None


def _refused(state: ServerState, model: str, max_queue: int, exc: QueueFull | BatcherClosed) -> ApiError:
    """The 503 for a request the model's queue has no place for, or that came during shutdown."""
    if isinstance(exc, BatcherClosed):
        return ApiError(503, "the server is shutting down; retry on another instance.", {"Retry-After": "5"})
    state.metrics.rejected.labels(model).inc()
    return ApiError(503, f"{model} is too busy ({max_queue} requests queued); retry in a moment.", {"Retry-After": "1"})


async def _disconnect(request: Request) -> None:
    """Returns when the client goes away (the body has been read, so only a disconnect comes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _wants_jpeg(accept: str) -> bool:
    kinds = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return "image/jpeg" in kinds and ("image/png" not in kinds or kinds.index("image/jpeg") < kinds.index("image/png"))


def _encode(image: Any, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": {"status": N, "message": "..."}}``, never a traceback or a path."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no such route: {request.method} {request.url.path}; see /docs for the API."
        elif exc.status_code == 405:
            message = f"{request.url.path} does not take {request.method}; see /docs for the API."
        else:
            message = str(exc.detail)
        return _error(exc.status_code, message, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        )
        return _error(422, f"bad parameters: {problems}.")

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal server error; the server's log has the details.")

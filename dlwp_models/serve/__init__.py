"""The models behind an HTTP API with request batching, and a web page to try them
(``python -m dlwp_models serve``, or :func:`create_app` in your own ASGI server).

:mod:`.runner` runs uvicorn, :mod:`.app` holds the routes (one per task), :mod:`.batching` the
per-model queue and worker, :mod:`.uploads` request decoding, :mod:`.state` the loaded models,
:mod:`.metrics` the Prometheus metrics, and ``static/index.html`` the page. Needs the ``serve``
extra (FastAPI, uvicorn, python-multipart, prometheus_client)."""

from __future__ import annotations

from .app import create_app
from .runner import serve
from .state import DEFAULT_MODELS, ServeSettings

__all__ = ["create_app", "serve", "ServeSettings", "DEFAULT_MODELS"]

"""``python -m dlwp_models serve``: the models behind an HTTP API with request batching, and a web
page to try them. :mod:`.runner` runs uvicorn, :mod:`.app` holds the routes, :mod:`.batching` the
per-model queue and worker, :mod:`.tasks` each model's preprocessing, :mod:`.uploads` request
decoding, :mod:`.state` the loaded models, :mod:`.metrics` the Prometheus metrics, and
``static/index.html`` the page. Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart,
prometheus_client); the command-line layer imports this package only for ``serve``."""

from __future__ import annotations

from .runner import serve
from .state import DEFAULT_MODELS, ServeSettings

__all__ = ["serve", "ServeSettings", "DEFAULT_MODELS"]

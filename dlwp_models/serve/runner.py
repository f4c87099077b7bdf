"""Running the server: uvicorn on the app, the models loading meanwhile, the URL printed once
they are ready, and a clean exit (status 0) on SIGTERM or Ctrl-C after what is in flight."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Iterator

import uvicorn
from PIL import Image

from .app import create_app
from .state import ServerState, ServeSettings

__all__ = ["serve", "GRACEFUL_SECONDS"]

log = logging.getLogger(__name__)

#: seconds SIGTERM / Ctrl-C waits for requests in flight before closing their connections
GRACEFUL_SECONDS = 8


class _Server(uvicorn.Server):
    """uvicorn's server, except that after SIGTERM or Ctrl-C and the graceful shutdown it returns
    (uvicorn re-raises the signal, which would end the process with the signal's status)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        saved = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)


def serve(settings: ServeSettings) -> int:
    """Run the server until SIGTERM or Ctrl-C (then 0, after finishing what is in flight), or until
    a model fails to load or the port cannot be bound (then 1)."""
    # uploads over settings.max_pixels are refused before decoding; PIL's warning would only repeat it
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    state = ServerState(settings)
    config = uvicorn.Config(
        create_app(settings, state),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        server_header=False,
        access_log=False,
        lifespan="on",
    )
    server = _Server(config)
    failed = threading.Event()
    threading.Thread(
        target=_announce, args=(server, state, settings, failed), daemon=True, name="dlwp-serve-announce"
    ).start()
    server.run()
    return 1 if failed.is_set() or not server.started else 0


def _announce(server: _Server, state: ServerState, settings: ServeSettings, failed: threading.Event) -> None:
    """Print the URL once the models are loaded and the socket is bound; stop on a load failure."""
    state.loaded.wait()
    if state.failure is not None:
        print(f"dlwp: error: {state.failure}", file=sys.stderr, flush=True)
        failed.set()
        server.should_exit = True
        return
    while not server.started and not server.should_exit:
        threading.Event().wait(0.05)
    if server.started:
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        print(
            f"dlwp serve: {', '.join(settings.models)} ready; open http://{host}:{settings.port}/ (Ctrl-C to stop)",
            flush=True,
        )

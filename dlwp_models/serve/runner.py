"""Running the server: the socket bound first (a port in use is one clear error), uvicorn on the app
with the guarded protocol (timeouts, a connection cap below the open-file limit), the models
loading meanwhile, the URL printed once they are ready, one log line per distinct cause, and a
graceful stop at any load: on SIGTERM or Ctrl-C the server stops admitting (503 JSON with
``Retry-After``), answers the queued requests 503, lets the running batches finish within
``drain_s`` seconds and exits 0."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from PIL import Image

from .app import create_app
from .protocol import guarded_protocol
from .state import ServerState, ServeSettings

__all__ = ["serve", "connection_cap"]

log = logging.getLogger(__name__)

#: seconds after the drain for the last answers (503 to what was still queued) to be sent
_ANSWER_SECONDS = 5
#: file descriptors kept free for everything but client connections (models, logs, the listener)
_RESERVED_FILES = 64


class _Server(uvicorn.Server):
    """uvicorn's server, except that SIGTERM and Ctrl-C first start the drain (so requests are
    answered 503 JSON, not cut), and that after the graceful shutdown it returns (uvicorn re-raises
    the signal, which would end the process with the signal's status)."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            threading.Thread(
                target=self.state.drain, args=(self.state.settings.drain_s,), name="dlwp-serve-drain", daemon=True
            ).start()
        super().handle_exit(sig, frame)

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


class _OncePerCause(logging.Filter):
    """Lets the first record of each cause through (logger, message template and exception type),
    then one a minute saying how many more came: a flood of one failure is one line, not 100,000."""

    def __init__(self, window: float = 60.0) -> None:
        super().__init__()
        self.window = window
        self.seen: dict[tuple, list[float]] = {}  # cause -> [when last shown, how many since]

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        cause = (record.name, str(record.msg), exc)
        now = time.monotonic()
        entry = self.seen.get(cause)
        if entry is None or now - entry[0] >= self.window:
            if entry is not None and entry[1]:
                record.msg = f"{record.msg} (and {int(entry[1])} more like it in the last {self.window:.0f} s)"
            self.seen[cause] = [now, 0]
            return True
        entry[1] += 1
        return False


def connection_cap(settings: ServeSettings) -> int:
    """How many connections may be open at once: ``max_connections``, and below the open-file limit
    (raised to its hard limit first, where the OS allows)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else soft, hard))
                soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except ImportError:  # not on a Unix
        return settings.max_connections
    return max(1, min(settings.max_connections, soft - _RESERVED_FILES))


def _bind(settings: ServeSettings) -> socket.socket:
    """The listening socket, or a :class:`OSError` that says what to do."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    # IPPROTO_TCP named, so that asyncio sets TCP_NODELAY on every accepted connection (with protocol 0
    # it does not, and an answer's headers and body then wait for the client's delayed ACK: +40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(
                exc.errno,
                f"port {settings.port} on {settings.host} is in use by another program; "
                "stop it or pick another --port.",
            ) from None
        raise OSError(
            exc.errno,
            f"cannot listen on {settings.host}:{settings.port} ({exc.strerror or exc}); check --host and --port.",
        ) from None
    sock.set_inheritable(True)
    return sock


def serve(
    settings: ServeSettings,
    *,
    on_ready: Callable[[str], None] | None = None,
    on_failure: Callable[[str], None] | None = None,
) -> int:
    """Run the server until SIGTERM or Ctrl-C (then 0, after the drain), or until a model fails to
    load (then 1). ``on_ready(url)`` is called once every model is loaded and the socket serves,
    ``on_failure(message)`` when a model fails to load (default: both logged). A port that cannot
    be bound raises an OSError before anything is loaded."""
    # uploads over settings.max_pixels are refused before decoding; PIL's warning would only repeat it
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    sock = _bind(settings)
    state = ServerState(settings)
    protocol = guarded_protocol(
        header_timeout=settings.header_timeout_s,
        body_timeout=settings.body_timeout_s,
        max_connections=connection_cap(settings),
        on_close=lambda cause: state.metrics.closed.labels(cause).inc(),
    )
    config = uvicorn.Config(
        create_app(settings, state),
        http=protocol,
        log_level="warning",
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        # the handlers of the requests still queued when the drain ends answer 503 within _ANSWER_SECONDS
        timeout_graceful_shutdown=max(1, round(settings.drain_s)) + _ANSWER_SECONDS,
        server_header=False,
        access_log=False,
        lifespan="on",
    )
    once = _OncePerCause()  # after uvicorn.Config, which sets up uvicorn's loggers
    for name in ("asyncio", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).addFilter(once)
    for handler in logging.getLogger().handlers:  # dlwp's own loggers propagate to the root's
        handler.addFilter(once)
    server = _Server(config, state)
    failed = threading.Event()
    threading.Thread(
        target=_announce,
        args=(server, state, settings, sock, failed, on_ready or _log_ready, on_failure or log.error),
        daemon=True,
        name="dlwp-serve-announce",
    ).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if failed.is_set() or not server.started:
        return 1
    if not state.close(timeout=settings.drain_s):
        # a batch is still running after the drain time: end now, without running the interpreter's
        # teardown under a forward pass (that is how torch's threads abort the process)
        log.warning("a batch was still running %.0f s after the stop signal; exiting without it", settings.drain_s)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _log_ready(url: str) -> None:
    log.info("ready: %s", url)


def _announce(
    server: _Server,
    state: ServerState,
    settings: ServeSettings,
    sock: socket.socket,
    failed: threading.Event,
    on_ready: Callable[[str], None],
    on_failure: Callable[[str], None],
) -> None:
    """Say the URL once the models are loaded and the socket is serving; stop on a load failure."""
    state.loaded.wait()
    if state.failure is not None:
        on_failure(state.failure)
        failed.set()
        server.should_exit = True
        return
    while not server.started and not server.should_exit:
        threading.Event().wait(0.05)
    if server.started:
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        on_ready(f"http://{host}:{sock.getsockname()[1]}/")

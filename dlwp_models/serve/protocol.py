"""The HTTP protocol the server speaks: uvicorn's h11 protocol with the limits it lacks.

* **A connection must send its request headers** within ``header_timeout`` seconds of opening
  (or of its last answer, on a kept-alive connection), else it is closed: idle sockets and
  slow-header clients do not pile up.
* **A request must send its whole body** within ``body_timeout`` seconds of its headers, else
  the connection is closed (the handler sees a disconnect): a body that drips, or stops short of
  its ``Content-Length``, does not hold memory and a task forever.
* **At most ``max_connections`` connections** are open at once, below the process's open-file
  limit: one more is closed as soon as it is accepted, so the accept loop never runs out of file
  descriptors and ``/healthz`` stays answerable.

Each close is counted by cause (``on_close(cause)``, for the metrics). uvicorn's own keep-alive
timeout closes a connection idle after an answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["guarded_protocol"]


def guarded_protocol(
    *, header_timeout: float, body_timeout: float, max_connections: int, on_close: Callable[[str], None]
) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with these limits (pass it as ``uvicorn.Config(http=...)``)."""

    class GuardedH11Protocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._deadline: asyncio.TimerHandle | None = None
            self._waiting_for = ""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                on_close("connections")
                transport.abort()  # the file descriptor is free again at once
                return
            self._arm("headers", header_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow()

        # ---------------------------------------------------------------- deadlines

        def _follow(self) -> None:
            """Arm the deadline the connection's state calls for: its next request's headers, the
            body of the current one, or none while the server answers."""
            if self.transport.is_closing():
                self._disarm()
                return
            state = self.conn.their_state
            if state is h11.IDLE and self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # a request without a body is being answered
            elif state is h11.IDLE:
                if self._waiting_for != "headers":
                    self._arm("headers", header_timeout)
            elif state is h11.SEND_BODY:
                if self._waiting_for != "body":
                    self._arm("body", body_timeout)
            else:  # DONE, MUST_CLOSE, CLOSED, ERROR: nothing more to wait for from the client
                self._disarm()

        def _arm(self, what: str, seconds: float) -> None:
            self._disarm()
            self._waiting_for = what
            self._deadline = self.loop.call_later(seconds, self._expired, what)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline, self._waiting_for = None, ""

        def _expired(self, what: str) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            on_close(f"{what} timeout")
            self.transport.close()

    return GuardedH11Protocol

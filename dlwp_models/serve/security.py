"""What every answer of the server carries, and what it refuses before routing.

* **A Host allow-list** (against DNS rebinding: a page on another site that resolves its own name to
  127.0.0.1 must not reach the server): a request naming another host is answered 400.
* **Security headers** on every answer: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options:
  DENY``, ``Referrer-Policy: no-referrer`` and a ``Content-Security-Policy``: for the page, only its
  own script and style (by their sha256), pictures from itself, ``blob:`` and ``data:``, and
  requests to itself; for everything else, nothing at all.
* :func:`offline_docs`: the API's page at ``/docs``, made from the OpenAPI schema on the server
  (Swagger UI would load its script from a CDN, so it would not render offline).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Callable
from typing import Any

__all__ = ["SecurityMiddleware", "offline_docs", "page_policy"]

_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_STRICT = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def _hashes(page: str, tag: str) -> str:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.DOTALL)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks)


def page_policy(page: str) -> str:
    """The Content-Security-Policy of the web page ``page`` (its inline script and style by hash)."""
    return (
        f"default-src 'none'; script-src {_hashes(page, 'script')}; style-src {_hashes(page, 'style')}; "
        "img-src 'self' blob: data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    )


def _host_of(value: str) -> str:
    """The host name of a Host header, lower case, without port or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class SecurityMiddleware:
    """Refuses requests for hosts not in ``hosts`` ("*" allows any) and adds the security headers
    (see the module docstring) to every answer; ``page`` is the web page served at ``/``."""

    def __init__(self, app: Any, hosts: frozenset[str], page: str) -> None:
        self.app, self.hosts = app, hosts
        self.page_headers = [*_COMMON, (b"content-security-policy", page_policy(page).encode())]
        self.other_headers = [*_COMMON, (b"content-security-policy", _STRICT.encode())]

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host")
        if host is not None and "*" not in self.hosts and _host_of(host.decode("latin-1")) not in self.hosts:
            await self._refuse(send, host.decode("latin-1"))
            return
        extra = self.page_headers if scope.get("path") == "/" else self.other_headers

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _refuse(self, send: Callable, host: str) -> None:
        body = json.dumps(
            {
                "error": {
                    "status": 400,
                    "message": (
                        f"this server does not answer for the host {host[:100]!r}; use its own address, or "
                        "start it with --allowed-host NAME for the names its clients use."
                    ),
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                    *self.other_headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def offline_docs(schema: dict) -> str:
    """A page describing the API from its OpenAPI ``schema``: each route, its summary and text,
    its query parameters with their limits. No script, no style, nothing loaded from elsewhere."""
    out = [
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(schema['info']['title'])} API"
        "</title><body>",
        f"<h1>{html.escape(schema['info']['title'])} {html.escape(str(schema['info'].get('version', '')))}</h1>",
        f"<p>{html.escape(schema['info'].get('description', ''))}</p>",
        '<p>Errors are JSON: <code>{"error": {"status": N, "message": "..."}}</code>. The schema '
        'itself: <a href="/openapi.json">/openapi.json</a>.</p>',
    ]
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            out.append(f"<h2><code>{method.upper()} {html.escape(path)}</code></h2>")
            out.append(f"<p>{html.escape(op.get('summary', ''))}. {html.escape(op.get('description', ''))}</p>")
            params = op.get("parameters", [])
            if params:
                out.append("<ul>")
                for p in params:
                    limits = {k: v for k, v in p.get("schema", {}).items() if k in ("default", "minimum", "maximum")}
                    text = p.get("description", "")
                    out.append(
                        f"<li><code>{html.escape(p['name'])}</code> ({html.escape(p.get('in', ''))}) "
                        f"{html.escape(text)} {html.escape(json.dumps(limits)) if limits else ''}</li>"
                    )
                out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out)

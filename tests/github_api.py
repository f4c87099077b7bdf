"""A loopback stand-in for the few GitHub REST endpoints `publish` uses, checking the token.

Release downloads (``/<owner>/<repo>/releases/download/<tag>/<name>``) answer 302 to a signed-looking
URL on a :class:`loopback.LoopbackServer`, as github.com does.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from loopback import LoopbackServer, QuietHandler, QuietHTTPServer


@dataclass
class Asset:
    id: int
    name: str
    data: bytes
    state: str = "uploaded"


@dataclass
class Release:
    id: int
    tag: str
    assets: list[Asset] = field(default_factory=list)


class FakeGitHub:
    def __init__(self, files: LoopbackServer, token: str = "test-token") -> None:
        self.files = files
        self.token = token
        self.releases: dict[tuple[str, str], Release] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_next_upload = False
        self.echo_headers_next = False  # the next API call fails with a reply echoing the request headers
        self.upload_base: str | None = None  # the host a release's upload_url names (default: this server)
        self._ids = iter(range(1, 1_000_000))
        self._lock = threading.Lock()
        self.httpd = QuietHTTPServer(("127.0.0.1", 0), _handler(self))
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.api_url = f"{self.base}/api/v3"
        self.httpd.start()

    def download_url(self, repo: str, tag: str, name: str) -> str:
        return f"{self.base}/{repo}/releases/download/{tag}/{name}"

    def asset_json(self, repo: str, release: Release, asset: Asset) -> dict:
        return {
            "id": asset.id,
            "name": asset.name,
            "size": len(asset.data),
            "state": asset.state,
            "digest": f"sha256:{hashlib.sha256(asset.data).hexdigest()}" if asset.state == "uploaded" else None,
            "browser_download_url": self.download_url(repo, release.tag, asset.name),
        }

    def release_json(self, repo: str, release: Release) -> dict:
        return {
            "id": release.id,
            "tag_name": release.tag,
            "upload_url": (
                f"{self.upload_base or self.base}/uploads/repos/{repo}/releases/{release.id}/assets{{?name,label}}"
            ),
            "assets": [self.asset_json(repo, release, a) for a in release.assets],
        }

    def find(self, release_id: int) -> tuple[str, Release]:
        for (repo, _), rel in self.releases.items():
            if rel.id == release_id:
                return repo, rel
        raise KeyError(release_id)

    def close(self) -> None:
        self.httpd.stop()


def _handler(gh: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def _send(self, status: int, body: Any = None, headers: dict | None = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {gh.token}":
                self._send(401, {"message": "Bad credentials"})
                return False
            return True

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            path = url.path
            gh.calls.append((method, path))
            m = re.fullmatch(r"/([^/]+/[^/]+)/releases/download/([^/]+)/([^/]+)", path)
            if m and method == "GET":  # public download: no token needed, 302 to a signed URL
                repo, tag, name = m.groups()
                rel = gh.releases.get((repo, tag))
                asset = next((a for a in rel.assets if a.name == name and a.state == "uploaded"), None) if rel else None
                if asset is None:
                    return self._send(404, {"message": "Not Found"})
                signed = f"asset-{asset.id}-{name}"
                gh.files.serve(signed, asset.data)
                return self._send(302, None, {"Location": gh.files.url(signed) + "?X-Amz-Signature=abc"})
            if not self._authorised():
                return
            if gh.echo_headers_next:
                gh.echo_headers_next = False
                echoed = {k: v for k, v in self.headers.items()}
                return self._send(
                    500,
                    {
                        "message": f"internal error handling Authorization: "
                        f"{self.headers.get('Authorization')} and {echoed}",
                        "request": echoed,
                    },
                )
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with gh._lock:
                if (m := re.fullmatch(r"/api/v3/repos/([^/]+/[^/]+)/releases/tags/([^/]+)", path)) and method == "GET":
                    repo, tag = m.groups()
                    rel = gh.releases.get((repo, tag))
                    return (
                        self._send(200, gh.release_json(repo, rel))
                        if rel
                        else self._send(404, {"message": "Not Found"})
                    )
                if (m := re.fullmatch(r"/api/v3/repos/([^/]+/[^/]+)/releases", path)) and method == "POST":
                    repo = m.group(1)
                    tag = json.loads(body)["tag_name"]
                    if (repo, tag) in gh.releases:
                        return self._send(422, {"message": "already_exists"})
                    rel = gh.releases[(repo, tag)] = Release(next(gh._ids), tag)
                    return self._send(201, gh.release_json(repo, rel))
                if (m := re.fullmatch(r"/api/v3/repos/([^/]+/[^/]+)/releases/(\d+)/assets", path)) and method == "GET":
                    repo, rel = gh.find(int(m.group(2)))
                    page = int(parse_qs(url.query).get("page", ["1"])[0])
                    items = [gh.asset_json(repo, rel, a) for a in rel.assets] if page == 1 else []
                    return self._send(200, items)
                if (
                    m := re.fullmatch(r"/api/v3/repos/([^/]+/[^/]+)/releases/assets/(\d+)", path)
                ) and method == "DELETE":
                    for rel in gh.releases.values():
                        rel.assets = [a for a in rel.assets if a.id != int(m.group(2))]
                    return self._send(204)
                if (
                    m := re.fullmatch(r"/uploads/repos/([^/]+/[^/]+)/releases/(\d+)/assets", path)
                ) and method == "POST":
                    repo, rel = gh.find(int(m.group(2)))
                    name = parse_qs(url.query)["name"][0]
                    if any(a.name == name for a in rel.assets):
                        return self._send(422, {"message": "already_exists"})
                    if gh.fail_next_upload:  # GitHub leaves an empty "starter" asset behind
                        gh.fail_next_upload = False
                        rel.assets.append(Asset(next(gh._ids), name, b"", state="starter"))
                        return self._send(502, {"message": "upload failed"})
                    asset = Asset(next(gh._ids), name, body)
                    rel.assets.append(asset)
                    return self._send(201, gh.asset_json(repo, rel, asset))
            self._send(404, {"message": f"no route for {method} {path}"})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler

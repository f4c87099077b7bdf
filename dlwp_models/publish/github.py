"""The few GitHub REST calls publishing needs: find or create a release, list, upload and
delete its assets. ``GITHUB_API_URL`` moves the API (GitHub Enterprise, tests).

The token is sent only to the configured API's origin (and, for api.github.com, to
uploads.github.com), only over https (plain http only for a loopback test server); an upload URL
a reply names elsewhere is refused. Error messages show the status and the API's ``message``
field with anything token-like masked, never the raw reply."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from ..errors import PublishError

__all__ = ["GitHubReleases", "api_base"]

log = logging.getLogger(__name__)

TIMEOUT = (10.0, 300.0)
UPLOAD_ATTEMPTS = 3
DEFAULT_API = "https://api.github.com"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_TOKENISH = re.compile(r"(?i)\b(bearer|token|basic)\s+[^\s\"',;]+|\b(gh[pousr]_|github_pat_)[A-Za-z0-9_]+")


def api_base(api_url: str | None = None) -> str:
    """The API base URL (``api_url``, else GITHUB_API_URL, else api.github.com), refused when it
    holds credentials or is not https (plain http only for a loopback host, for tests)."""
    url = (api_url or os.environ.get("GITHUB_API_URL") or DEFAULT_API).strip().rstrip("/")
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise PublishError(
            "GITHUB_API_URL must not contain credentials (user:password@host); remove them "
            "and put the token in GITHUB_TOKEN."
        )
    host = (parts.hostname or "").lower()
    if not host or not (parts.scheme == "https" or (parts.scheme == "http" and host in _LOOPBACK)):
        raise PublishError(
            f"GITHUB_API_URL must be an https:// URL (plain http only for a loopback test "
            f"server), got {parts.scheme or '(no scheme)'}://{host}; the token is never sent "
            "in clear text."
        )
    return url


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def _mask(text: str, token: str) -> str:
    """``text`` with the token and anything token-like replaced by ``***``."""
    if token:
        text = text.replace(token, "***")
    return _TOKENISH.sub(lambda m: f"{m.group(1)} ***" if m.group(1) else "***", text)


class GitHubReleases:
    """Release assets of one repository, through the REST API with a token."""

    def __init__(self, repo: str, *, token: str | None = None, api_url: str | None = None) -> None:
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise PublishError(f"--repo must be OWNER/REPO, got {repo!r}.")
        self.repo = repo
        self.api = api_base(api_url)
        token = token if token is not None else os.environ.get("GITHUB_TOKEN")
        if not token:
            raise PublishError(
                "GITHUB_TOKEN is not set; create a token with permission to write "
                "releases (contents: write) and export GITHUB_TOKEN=... before publishing."
            )
        self._token = token
        api_origin = _origin(self.api)
        self._token_origins = {api_origin}
        if api_origin == _origin(DEFAULT_API):
            self._token_origins.add(_origin("https://uploads.github.com"))
        self.session = requests.Session()
        self.session.headers.update(
            {
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "dlwp-models-publish",
            }
        )

    # -- plumbing --------------------------------------------------------------------------
    def _auth(self, url: str, headers: dict[str, str] | None = None) -> dict[str, str]:
        """``headers`` plus the token, for a URL on an origin the token may go to (else refused)."""
        if _origin(url) not in self._token_origins:
            scheme, host, port = _origin(url)
            raise PublishError(
                f"refusing to send the GitHub token to {scheme}://{host}:{port}, which is not "
                f"the configured API ({self.api}); check GITHUB_API_URL, or report the "
                "reply that named that host."
            )
        return {**(headers or {}), "Authorization": f"Bearer {self._token}"}

    def _message(self, resp: requests.Response) -> str:
        """The API's ``message`` field of an error reply, masked and short (never the raw reply)."""
        try:
            message = resp.json().get("message")
        except (ValueError, AttributeError):
            message = None
        return _mask(str(message), self._token)[:200] if message else "(no message)"

    def _call(
        self,
        method: str,
        url: str,
        *,
        ok: tuple[int, ...] = (200,),
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        try:
            resp = self.session.request(method, url, timeout=TIMEOUT, headers=self._auth(url, headers), **kwargs)
        except requests.RequestException as exc:
            raise PublishError(
                _mask(
                    f"{method} {url} failed ({type(exc).__name__}: {exc}); check the network and GITHUB_API_URL.",
                    self._token,
                )
            ) from None
        if resp.status_code not in ok:
            hint = {
                401: "the token is missing or invalid",
                403: "the token lacks permission (contents: write)",
                404: "the repository or release does not exist, or the token cannot see it",
            }.get(resp.status_code, "see GitHub's message")
            raise PublishError(f"{method} {url} answered HTTP {resp.status_code}: {self._message(resp)} ({hint}).")
        return resp

    def _repo_url(self, path: str) -> str:
        return f"{self.api}/repos/{self.repo}{path}"

    # -- releases ---------------------------------------------------------------------------
    def release(self, tag: str, *, create: bool = True) -> dict:
        """The release for ``tag``, created (published, not a draft) when missing and ``create``."""
        resp = self._call("GET", self._repo_url(f"/releases/tags/{tag}"), ok=(200, 404))
        if resp.status_code == 200:
            return resp.json()
        if not create:
            raise PublishError(f"{self.repo} has no release {tag!r}; create it or drop create=False.")
        log.info("creating release %s in %s", tag, self.repo)
        body = {"tag_name": tag, "name": tag, "body": "Model weights published with dlwp.", "draft": False}
        return self._call("POST", self._repo_url("/releases"), ok=(201,), json=body).json()

    def assets(self, release: dict) -> list[dict]:
        assets: list[dict] = []
        page = 1
        while True:
            resp = self._call(
                "GET", self._repo_url(f"/releases/{release['id']}/assets"), params={"per_page": 100, "page": page}
            )
            batch = resp.json()
            assets.extend(batch)
            if len(batch) < 100:
                return assets
            page += 1

    def delete_asset(self, asset: dict) -> None:
        self._call("DELETE", self._repo_url(f"/releases/assets/{asset['id']}"), ok=(204,))

    def asset_sha256(self, asset: dict) -> str:
        """The asset's sha256: from GitHub's ``digest`` field when present, else by downloading it."""
        digest = asset.get("digest") or ""
        if digest.startswith("sha256:"):
            return digest.split(":", 1)[1]
        resp = self._call(
            "GET",
            self._repo_url(f"/releases/assets/{asset['id']}"),
            stream=True,
            headers={"Accept": "application/octet-stream"},
        )
        sha = hashlib.sha256()
        for chunk in resp.iter_content(1 << 20):
            sha.update(chunk)
        return sha.hexdigest()

    def upload(self, release: dict, path: Path, *, name: str, sha256: str) -> dict:
        """Upload ``path`` as asset ``name``, idempotently: the same bytes already there is
        success, different bytes is an error, an empty leftover of a failed upload is removed."""
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            existing = next((a for a in self.assets(release) if a["name"] == name), None)
            if existing is not None:
                if existing.get("state") != "uploaded" or existing.get("size", 0) == 0:
                    log.info("deleting the leftover of a failed upload of %s", name)
                    self.delete_asset(existing)
                else:
                    found = self.asset_sha256(existing)
                    if found == sha256:
                        log.info("%s is already in release %s with the same sha256", name, release.get("tag_name"))
                        return existing
                    raise PublishError(
                        f"release {release.get('tag_name')!r} of {self.repo} already has an asset {name!r} with "
                        f"different content (sha256 {found}, yours {sha256}). Publish under a new --tag, or "
                        "delete that asset on GitHub if it is wrong."
                    )
            upload_url = str(release.get("upload_url", "")).split("{", 1)[0]
            headers = self._auth(
                upload_url, {"Content-Type": "application/octet-stream", "Content-Length": str(path.stat().st_size)}
            )
            try:
                with open(path, "rb") as fh:
                    resp = self.session.post(
                        upload_url,
                        params={"name": name},
                        data=fh,
                        timeout=TIMEOUT,
                        headers=headers,
                        allow_redirects=False,
                    )
            except requests.RequestException as exc:
                log.warning(
                    "upload of %s failed (%s); attempt %d of %d",
                    name,
                    _mask(str(exc), self._token),
                    attempt,
                    UPLOAD_ATTEMPTS,
                )
            else:
                if resp.status_code == 201:
                    return resp.json()
                log.warning(
                    "upload of %s answered HTTP %d (%s); attempt %d of %d",
                    name,
                    resp.status_code,
                    self._message(resp),
                    attempt,
                    UPLOAD_ATTEMPTS,
                )
                if resp.status_code < 500 and resp.status_code not in (408, 422, 429):
                    raise PublishError(
                        f"uploading {name} answered HTTP {resp.status_code}: {self._message(resp)}. "
                        "Check the token's permissions and the release."
                    )
            time.sleep(min(2**attempt, 10) * 0.1)
        raise PublishError(f"uploading {name} to {self.repo} failed {UPLOAD_ATTEMPTS} times; try again later.")

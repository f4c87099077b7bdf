"""Hashing files and checking bytes against the pins of a :class:`~.manifest.FileSpec`: sha256
always, git's blob sha1 when the spec pins one, and the size when it is known."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .manifest import FileSpec

__all__ = ["Digests", "hash_file", "sha256_file", "mismatch", "CHUNK"]

CHUNK = 1 << 20  # file reads


class Digests:
    """Running hashes of a byte stream: sha256 always, plus git's blob sha1 when the spec pins
    one (it needs the total size up front)."""

    def __init__(self, spec: FileSpec, total: int | None) -> None:
        self.sha256 = hashlib.sha256()
        self.blob: hashlib._Hash | None = None
        self.count = 0
        if spec.git_blob_sha1 is not None and total is not None:
            self.blob = hashlib.sha1(b"blob %d\0" % total)

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        if self.blob is not None:
            self.blob.update(data)
        self.count += len(data)

    def blob_hexdigest(self, path: Path) -> str:
        """The blob sha1 of what was streamed, or of ``path`` when the size was unknown then."""
        if self.blob is not None:
            return self.blob.hexdigest()
        return hash_file(path, want_blob=True)[1] or ""


def hash_file(path: Path, *, want_blob: bool) -> tuple[str, str | None]:
    """``(sha256, git blob sha1 or None)`` of a file, read in chunks."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(b"blob %d\0" % size) if want_blob else None
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            sha256.update(chunk)
            if blob is not None:
                blob.update(chunk)
    return sha256.hexdigest(), blob.hexdigest() if blob is not None else None


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    return hash_file(path, want_blob=False)[0]


def mismatch(spec: FileSpec, size: int, sha256: str, blob: str | None) -> str | None:
    """The reason the bytes do not match the spec, or None when they do."""
    if spec.size is not None and size != spec.size:
        return f"size mismatch: expected {spec.size} bytes, got {size}"
    if spec.sha256 is not None and sha256 != spec.sha256:
        return f"sha256 mismatch: expected {spec.sha256}, got {sha256}"
    if spec.sha256_prefix is not None and not sha256.startswith(spec.sha256_prefix):
        return f"sha256 mismatch: expected prefix {spec.sha256_prefix}, got {sha256}"
    if spec.git_blob_sha1 is not None and blob != spec.git_blob_sha1:
        return f"git blob sha1 mismatch: expected {spec.git_blob_sha1}, got {blob}"
    return None

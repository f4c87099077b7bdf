"""Cache files copied from this machine rather than downloaded: the parts of a joined file, and a
file that lies beside its manifest (an entry with no URL and no parts, pinned by full sha256, such
as a fine-tuning run's ``manifest.json`` and weights). The bytes are hashed while they are copied
into a new partial file of the cache and checked against the spec; the caller moves them into
place (:func:`.store.install`). No network is involved, so DLWP_OFFLINE does not forbid it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CacheWriteError
from . import store
from .integrity import CHUNK, Digests, mismatch
from .manifest import FileSpec

__all__ = ["CopyFailed", "copy_checked", "copy_beside", "beside_advice"]

#: runs one write to the cache and turns a file-system failure into a CacheWriteError
Writer = Callable[[Callable[[], Any], FileSpec, str], Any]


class CopyFailed(Exception):
    """The local files do not hold the spec's bytes (or cannot be read); the reason goes into the
    final error, and the fetcher goes on to the next source."""


def copy_checked(spec: FileSpec, sources: list[Path], what: str, write: Writer) -> tuple[Path, str]:
    """Concatenate ``sources`` into a new partial file while hashing, check the whole against
    ``spec``; return the partial's path and sha256 (the partial is removed on any failure)."""
    digests = Digests(spec, sum(p.stat().st_size for p in sources))
    partial = write(lambda: store.new_partial(spec), spec, f"create the {what}")
    try:
        with open(partial, "r+b") as out:
            for path in sources:
                with open(path, "rb") as fh:
                    while chunk := fh.read(CHUNK):
                        write(lambda: out.write(chunk), spec, f"write the {what}")
                        digests.update(chunk)
            write(out.flush, spec, f"write the {what}")
        reason = mismatch(spec, digests.count, digests.sha256.hexdigest(), digests.blob_hexdigest(partial))
        if reason:
            raise CopyFailed(reason)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return partial, digests.sha256.hexdigest()


def copy_beside(spec: FileSpec, write: Writer) -> tuple[Path, str]:
    """:func:`copy_checked` of the file beside the manifest (``spec.beside``)."""
    assert spec.beside is not None
    try:
        return copy_checked(spec, [spec.beside], "copy of the file beside the manifest", write)
    except CacheWriteError:
        raise  # writing the cache failed, not reading the file
    except FileNotFoundError:
        raise CopyFailed("missing") from None
    except OSError as exc:
        raise CopyFailed(f"cannot be read ({exc.strerror or exc})") from None


def beside_advice(spec: FileSpec, dest: Path) -> str:
    """What to do when the file beside the manifest did not give the pinned bytes."""
    return (
        f"The file beside the manifest ({spec.beside}) was changed or removed since its manifest was "
        f"written: re-run the command that wrote them, or put back the file with the pinned bytes "
        f"there or at {dest}"
    )

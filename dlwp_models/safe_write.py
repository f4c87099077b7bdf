"""The one way dlwp writes a file that others read: never half-written, never through a planted
link, never over an existing file unless asked, and every ``OSError`` told in the project's words.

A file is written to a new temporary file beside its target, created exclusively and without
following links (``O_CREAT | O_EXCL | O_NOFOLLOW``, a unique name), flushed to disk where the
caller needs it to survive a crash (``durable``), then moved into place: with ``replace`` by
``os.replace`` (which replaces a link itself, never its target), otherwise by a hard link that
fails when the target exists, so a file another process creates meanwhile is not overwritten
either. The temporary file is removed whatever happens.

The cache (:mod:`dlwp_models.weights.store`), resumable downloads, records files, translated
pictures, published manifests and exported models all write through here.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import DlwpError, OutputExistsError

__all__ = [
    "check_free",
    "Advice",
    "OUTPUT_ADVICE",
    "create_exclusive",
    "staged",
    "write_file",
    "write_failure",
    "is_not_writable",
    "temporary_path",
]


def create_exclusive(path: Path) -> BinaryIO:
    """Create ``path`` for writing, failing if anything (a file, a symlink) is already there: the
    bytes can only ever land in a new file of ours (mode 0644)."""
    fd = os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0), 0o644
    )
    return os.fdopen(fd, "wb")


def temporary_path(target: Path, kind: str = "partial") -> Path:
    """A unique, hidden name beside ``target`` for a file being written (``.name.<id>.<kind>``)."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex}.{kind}")


@dataclass(frozen=True)
class Advice:
    """What to tell the user after a failed write, by cause (each ends the message)."""

    full: str
    not_writable: str
    other: str


#: advice for a file the user asked for (a picture, an export, a records file, a manifest)
OUTPUT_ADVICE = Advice(
    full="the disk is full. Free some space there or choose another output folder; nothing was left half-written",
    not_writable="choose a folder you can write to",
    other="check the output folder and try again",
)


def is_not_writable(exc: OSError) -> bool:
    """Whether ``exc`` says the folder cannot be written (read-only, not ours), not that it is full."""
    return exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)


def _is_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1))


def write_failure(
    exc: OSError, path: Path, doing: str, advice: Advice = OUTPUT_ADVICE, error: type[DlwpError] = DlwpError
) -> DlwpError:
    """The one translation of a failed write: ``could not <doing> (<path>): <reason>; <advice>.``,
    the advice chosen by cause (full disk or quota, a folder that cannot be written, anything else)."""
    hint = advice.full if _is_full(exc) else advice.not_writable if is_not_writable(exc) else advice.other
    return error(f"could not {doing} ({path}): {exc.strerror or exc}; {hint}.")


def check_free(target: Path, *, replace: bool) -> None:
    """Refuse (:class:`~dlwp_models.errors.OutputExistsError`) a ``target`` that exists, a link
    included, unless it may be replaced: before any work, and again when it is written."""
    if not replace and (target.exists() or target.is_symlink()):
        raise _exists(target)


@contextmanager
def staged(
    target: Path, *, replace: bool, durable: bool = False, temporary: Path | None = None, mode: int | None = None
) -> Iterator[tuple[Path, BinaryIO]]:
    """``(temporary path, its open file)`` to write ``target``'s bytes to; when the block ends
    without an exception the file is flushed (and fsynced with ``durable``), closed and moved
    into place (see the module docstring). A writer that needs a path (an exporter) may close the
    file and write the path: it is a regular file of ours. ``OSError`` from the move is raised as
    it is (callers word it with :func:`write_failure`); the temporary file never outlives the call.
    Raises :class:`~dlwp_models.errors.OutputExistsError` when ``target`` exists and ``replace``
    is false. ``temporary``: the temporary file's name when its owner keeps a layout of its own (a
    unique name beside ``target``); default :func:`temporary_path`. ``mode``: the new file's
    permission bits (default 0644, less the umask)."""
    check_free(target, replace=replace)
    tmp = temporary or temporary_path(target)
    try:
        out = create_exclusive(tmp)
        if mode is not None:
            os.chmod(out.fileno(), mode)
        try:
            yield tmp, out
            closed_by_writer = out.closed
            if not closed_by_writer:
                out.flush()
                if durable:
                    os.fsync(out.fileno())
        finally:
            out.close()
        if durable and closed_by_writer:
            _fsync_path(tmp)
        if replace:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise _exists(target, appeared=True) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # gone read-only meanwhile: nothing more to clean
            pass


def write_file(
    target: Path,
    data: bytes | Callable[[BinaryIO], object],
    *,
    replace: bool,
    durable: bool = False,
    doing: str | None = None,
    advice: Advice = OUTPUT_ADVICE,
    temporary: Path | None = None,
    mode: int | None = None,
) -> None:
    """Write ``data`` (bytes, or a function writing to the open file) to ``target`` atomically
    (:func:`staged`). With ``doing``, a failing ``OSError`` is raised as one
    :func:`write_failure` message; without, as it is."""
    try:
        with staged(target, replace=replace, durable=durable, temporary=temporary, mode=mode) as (_, out):
            if isinstance(data, bytes):
                out.write(data)
            else:
                data(out)
    except OSError as exc:
        if doing is None or isinstance(exc, DlwpError):
            raise
        raise write_failure(exc, target, doing, advice) from None


def _fsync_path(path: Path) -> None:
    """fsync a file a writer filled by its path (after :func:`staged`'s own handle was closed)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exists(target: Path, appeared: bool = False) -> OutputExistsError:
    if appeared:
        return OutputExistsError(
            f"{target} appeared while it was being written; pass --overwrite to replace it, or choose another output."
        )
    return OutputExistsError(f"{target} already exists; pass --overwrite to replace it, or choose another output.")

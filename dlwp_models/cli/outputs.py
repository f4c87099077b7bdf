"""Writing the files the CLI produces: never half-written, never through a planted link, never
over an existing file unless asked.

Each output is written to a new temporary file created exclusively (``O_EXCL | O_NOFOLLOW``, a
unique name next to the output), then moved into place: with ``overwrite`` by ``os.replace``
(which replaces a link itself, never its target), otherwise by a hard link that fails if the
output exists, so another process creating it meanwhile is not overwritten either.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import BinaryIO, Callable

from ..errors import DlwpError, OutputExistsError

__all__ = ["OutputExistsError", "check_free", "write_output"]


def check_free(path: Path, overwrite: bool) -> None:
    """Refuse early (before any work) when ``path`` exists and may not be overwritten."""
    if not overwrite and (path.exists() or path.is_symlink()):
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it, or choose another "
                                "output folder.")


def write_output(path: Path, write: Callable[[BinaryIO], None], *, overwrite: bool) -> None:
    """Write ``path`` through ``write(file)``, atomically (see the module docstring)."""
    check_free(path, overwrite)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_BINARY", 0), 0o644)
            with os.fdopen(fd, "wb") as out:
                write(out)
            if overwrite:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise OutputExistsError(f"{path} appeared while it was being written; pass --overwrite "
                                            "to replace it, or choose another output folder.") from None
        except OSError as exc:
            if isinstance(exc, DlwpError):
                raise
            raise DlwpError(_write_failure(path, exc)) from None
    finally:
        tmp.unlink(missing_ok=True)


def _write_failure(path: Path, exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return (f"could not write {path}: the disk is full ({exc.strerror}). Free some space there or choose "
                "another output folder; nothing was left half-written.")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"could not write {path}: {exc.strerror}. Choose a folder you can write to."
    return f"could not write {path}: {exc.strerror or exc}. Check the output folder and try again."

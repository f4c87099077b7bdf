"""The captioning vocabulary, read from upstream's Python-2 ``infos`` pickle with a restricted
unpickler: only the five harmless globals that file needs resolve, each to an inert stand-in, and
only the ``vocab`` mapping is kept."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import IncompatibleWeightsError, UnsafeFileError
from ...loading.checkpoints import restricted_load

__all__ = ["read_vocabulary", "placeholder_vocabulary"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _PickledNamespace:
    """Stand-in for ``argparse.Namespace``: a bag of attributes, nothing is run."""


class _PickledDtype:
    """Stand-in for ``numpy.dtype``: remembers its arguments and state, decodes nothing."""

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _PickledScalar:
    """Stand-in for a numpy scalar: its dtype and raw bytes are kept, never decoded."""

    def __init__(self, dtype: Any, data: Any = None) -> None:
        self.dtype, self.data = dtype, data


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """Stand-in for Python 2's ``copy_reg._reconstructor``: only rebuilds the Namespace stand-in."""
    if cls is not _PickledNamespace or base is not object or state is not None:
        raise UnsafeFileError(
            "refused to rebuild an object other than argparse.Namespace through "
            "copy_reg._reconstructor. Use the published vocabulary file."
        )
    return _PickledNamespace()


#: the only globals the published infos pickle may resolve, each to an inert stand-in
_VOCAB_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("argparse", "Namespace"): _PickledNamespace,
    ("numpy.core.multiarray", "scalar"): _PickledScalar,
    ("numpy", "dtype"): _PickledDtype,
}


def read_vocabulary(path: str | Path) -> dict[int, str]:
    """The ``ix_to_word`` mapping (1 … V → word) of an ImageCaptioning.pytorch infos pickle.

    The file was written by Python 2 (pickle protocol 0, strings read as latin-1). Only the globals
    it needs (``copy_reg._reconstructor``, ``__builtin__.object``, ``argparse.Namespace``,
    ``numpy.core.multiarray.scalar``, ``numpy.dtype``) resolve, to inert stand-ins; any other
    global raises :class:`~dlwp_models.UnsafeFileError` before it is imported or run. Everything but
    ``vocab`` is discarded.
    """
    path = Path(path)
    _check_declared_sizes(path)
    infos = restricted_load(path, _VOCAB_GLOBALS, encoding="latin1")
    if not isinstance(infos, dict) or not isinstance(infos.get("vocab"), dict):
        raise IncompatibleWeightsError(
            f"{path.name} holds no 'vocab' mapping, so it is not an ImageCaptioning.pytorch infos file. "
            "Use the vocabulary file published with the decoder (fc-infos.pkl)."
        )
    return _check_vocabulary(infos["vocab"], source=path.name)


_LENGTH_FIELDS = {-2: ("<B", 1), -3: ("<i", 4), -4: ("<I", 4), -5: ("<Q", 8)}  # pickletools' TAKEN_FROM_ARGUMENT*


def _check_declared_sizes(path: Path) -> None:
    """Walk the pickle's opcodes (nothing is decoded, built or run) and refuse it when any declared
    length exceeds what is left of the file, before the unpickler would allocate it."""
    import pickletools
    import struct

    def refuse(why: str) -> UnsafeFileError:
        return UnsafeFileError(
            f"{path.name} {why}: it is damaged or crafted, not a vocabulary pickle. "
            "Delete it from the cache and fetch it again."
        )

    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        while True:
            code = fh.read(1)
            if not code:
                raise refuse("ends before its STOP opcode")
            op = pickletools.code2op.get(code.decode("latin-1"))
            if op is None:
                raise refuse(f"holds an unknown pickle opcode {code!r} at byte {fh.tell() - 1}")
            if op.name == "STOP":
                return
            arg = op.arg
            if arg is None:
                continue
            if arg.n == pickletools.UP_TO_NEWLINE:
                for _ in range(2 if arg.name == "stringnl_noescape_pair" else 1):
                    fh.readline()
                continue
            if arg.n > 0:
                length = arg.n
            else:
                fmt, width = _LENGTH_FIELDS[arg.n]
                field = fh.read(width)
                if len(field) < width:
                    raise refuse("ends inside an opcode")
                length = struct.unpack(fmt, field)[0]
            left = size - fh.tell()
            if length < 0 or length > left:
                raise refuse(f"declares a {length:,}-byte object but only {left:,} bytes follow")
            if op.name != "FRAME":  # a frame's bytes are opcodes: walk into them
                fh.seek(length, os.SEEK_CUR)


def _check_vocabulary(raw: Mapping[Any, Any], *, source: str) -> dict[int, str]:
    vocab: dict[int, str] = {}
    for key, word in raw.items():
        index = key if _is_int(key) else int(key) if isinstance(key, str) and key.isdigit() else None
        if index is None or not isinstance(word, str):
            raise IncompatibleWeightsError(
                f"{source}: vocabulary entry {key!r}: {word!r} is not 'index': 'word'. Use the "
                "vocabulary file published with the decoder."
            )
        if index in vocab:
            raise IncompatibleWeightsError(
                f"{source}: vocabulary index {index} appears twice. Use the vocabulary file published with the decoder."
            )
        vocab[index] = word
    if sorted(vocab) != list(range(1, len(vocab) + 1)):
        gap = next(i for i in range(1, len(vocab) + 2) if i not in vocab)
        raise IncompatibleWeightsError(
            f"{source}: the vocabulary's indices are not 1 … {len(vocab)} (index {gap} is missing). "
            "Use the vocabulary file published with the decoder."
        )
    return {i: vocab[i] for i in range(1, len(vocab) + 1)}


def placeholder_vocabulary(size: int) -> dict[int, str]:
    """``w1`` … ``w{size-1}`` and ``UNK`` last: the vocabulary of a model with random weights."""
    return {**{i: f"w{i}" for i in range(1, size)}, size: "UNK"}

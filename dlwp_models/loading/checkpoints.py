"""Safe reading of checkpoint files.

* :func:`load_state_dict_file` reads a ``torch.save`` file with ``weights_only=True`` (memory-mapped
  when it is a zip-format file), so a checkpoint can never run code.
* :func:`restricted_load` reads a legacy pickle that holds more than tensors with an allow-list of
  globals; anything else is refused before it is resolved, never executed.
* :func:`plain_state_dict` finds the state dict in a training checkpoint.
"""

from __future__ import annotations

import io
import logging
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import IncompatibleWeightsError, UnsafeFileError, first_line, reason

__all__ = ["load_state_dict_file", "restricted_load", "plain_state_dict"]

log = logging.getLogger(__name__)


def load_state_dict_file(path: str | Path, map_location: Any = None, *, mmap: bool | None = None) -> Any:
    """``torch.load`` with ``weights_only=True``; memory-mapped when the file is in zip format
    (legacy files cannot be mapped). An unsafe or unreadable file raises :class:`UnsafeFileError`."""
    path = Path(path)
    if mmap is None:
        mmap = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise UnsafeFileError(
            f"refused to load {path.name}: it holds objects that a weights-only load does not allow "
            f"({first_line(exc) or type(exc).__name__}). Only tensors and plain containers are loaded; "
            "re-save the file as a plain state dict with torch.save(model.state_dict(), path)."
        ) from None
    except RuntimeError as exc:
        message = first_line(exc)
        if "CUDA" in message or "device" in message.lower():
            raise UnsafeFileError(
                f"cannot load {path.name} onto this machine's devices ({message}). Pass "
                "map_location='cpu' (or another available device)."
            ) from None
        raise UnsafeFileError(
            f"cannot read {path.name} as a PyTorch checkpoint ({reason(exc)}). The file is "
            "damaged or not a checkpoint; delete it from the cache and fetch it again."
        ) from None
    except (EOFError, OSError, ValueError) as exc:
        raise UnsafeFileError(
            f"cannot read {path.name} as a PyTorch checkpoint ({reason(exc)}). The file is damaged "
            "or not a checkpoint; delete it from the cache and fetch it again."
        ) from None


def plain_state_dict(raw: Any, *, source: str) -> OrderedDict[str, torch.Tensor]:
    """A training checkpoint's state dict: ``raw`` itself, or the mapping under ``state_dict`` /
    ``model``; a ``module.`` prefix on every key (DataParallel / DDP) is stripped."""
    if isinstance(raw, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(raw.get(key), Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise IncompatibleWeightsError(
            f"{source}: expected a state dict of tensors (or a dict holding one under 'state_dict' or "
            "'model'); save it with torch.save(model.state_dict(), path)."
        )
    if all(isinstance(k, str) and k.startswith("module.") for k in raw):
        raw = {k[len("module.") :]: v for k, v in raw.items()}
    return OrderedDict(raw)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(
        self, file: io.BufferedIOBase, allowed: Mapping[tuple[str, str], Any], name: str, **kwargs: Any
    ) -> None:
        super().__init__(file, **kwargs)
        self._allowed = allowed
        self._name = name

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f"refused to load {self._name}: it references the global {module}.{name}, which is "
                "not on the allow-list for this file, so it was not imported or run. Use the "
                "published file, or re-create it without custom objects."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeFileError(
            f"refused to load {self._name}: it uses persistent ids, which this "
            "file format never needs. Use the published file."
        )


def restricted_load(path: str | Path, allowed: Mapping[tuple[str, str], Any], *, encoding: str = "ASCII") -> Any:
    """Unpickle ``path`` resolving only the globals in ``allowed`` ({(module, name): object})."""
    path = Path(path)
    with open(path, "rb") as fh:
        try:
            return _RestrictedUnpickler(fh, allowed, path.name, encoding=encoding).load()
        except UnsafeFileError:
            raise
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            KeyError,
            UnicodeDecodeError,
        ) as exc:
            raise UnsafeFileError(
                f"cannot read {path.name} as a pickle ({reason(exc)}). The file is "
                "damaged or not the expected file; delete it from the cache and fetch it again."
            ) from None

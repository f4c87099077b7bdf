"""Safe reading of checkpoint files and strict, copy-free loading into modules.

* :func:`load_state_dict_file` reads a ``torch.save`` file with ``weights_only=True`` (memory-mapped
  when it is a zip-format file), so a checkpoint can never run code.
* :func:`restricted_load` reads a legacy pickle that holds more than tensors with an allow-list of
  globals; anything else is refused before it is resolved, never executed.
* :func:`check_state_dict` and :func:`load_into` load strictly, with an error that names the first
  offending key; :func:`build_on_meta` + :func:`load_into` build a module without a wasted random
  initialisation and without a second copy of the weights.
"""

from __future__ import annotations

import io
import logging
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import torch
from torch import nn

from ._errors import IncompatibleWeightsError, UnsafeFileError

__all__ = ["load_state_dict_file", "restricted_load", "plain_state_dict", "check_state_dict", "load_into",
           "build_on_meta"]

log = logging.getLogger(__name__)
M = TypeVar("M", bound=nn.Module)


def load_state_dict_file(path: str | Path, map_location: Any = None, *, mmap: bool | None = None) -> Any:
    """``torch.load`` with ``weights_only=True``; memory-mapped when the file is in zip format
    (legacy files cannot be mapped). An unsafe or unreadable file raises :class:`UnsafeFileError`."""
    path = Path(path)
    if mmap is None:
        mmap = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeFileError(
            f"refused to load {path.name}: it holds objects that a weights-only load does not allow "
            f"({first}). Only tensors and plain containers are loaded; re-save the file as a plain "
            "state dict with torch.save(model.state_dict(), path).") from None
    except RuntimeError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "CUDA" in message or "device" in message.lower():
            raise UnsafeFileError(
                f"cannot load {path.name} onto this machine's devices ({message}). Pass "
                "map_location='cpu' (or another available device).") from None
        raise UnsafeFileError(
            f"cannot read {path.name} as a PyTorch checkpoint (RuntimeError: {message}). The file is "
            "damaged or not a checkpoint; delete it from the cache and fetch it again.") from None
    except (EOFError, OSError, ValueError) as exc:
        raise UnsafeFileError(
            f"cannot read {path.name} as a PyTorch checkpoint ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}). The file is damaged "
            "or not a checkpoint; delete it from the cache and fetch it again.") from None


def plain_state_dict(raw: Any, *, source: str) -> "OrderedDict[str, torch.Tensor]":
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
            "'model'); save it with torch.save(model.state_dict(), path).")
    if all(isinstance(k, str) and k.startswith("module.") for k in raw):
        raw = {k[len("module."):]: v for k, v in raw.items()}
    return OrderedDict(raw)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, allowed: Mapping[tuple[str, str], Any], name: str,
                 **kwargs: Any) -> None:
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
                "published file, or re-create it without custom objects.") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeFileError(f"refused to load {self._name}: it uses persistent ids, which this "
                              "file format never needs. Use the published file.")


def restricted_load(path: str | Path, allowed: Mapping[tuple[str, str], Any], *,
                    encoding: str = "ASCII") -> Any:
    """Unpickle ``path`` resolving only the globals in ``allowed`` ({(module, name): object})."""
    path = Path(path)
    with open(path, "rb") as fh:
        try:
            return _RestrictedUnpickler(fh, allowed, path.name, encoding=encoding).load()
        except UnsafeFileError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, UnicodeDecodeError) as exc:
            raise UnsafeFileError(
                f"cannot read {path.name} as a pickle ({type(exc).__name__}: {exc}). The file is "
                "damaged or not the expected file; delete it from the cache and fetch it again.") from None


def _fill_legacy_batchnorm_counters(module: nn.Module, state_dict: dict[str, Any]) -> None:
    """Files saved before PyTorch 0.4.1 have no ``num_batches_tracked``; torch itself fills it
    with 0 for them, and so do we (it only matters for momentum=None training)."""
    for name, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.track_running_stats:
            key = f"{name}.num_batches_tracked" if name else "num_batches_tracked"
            mean = state_dict.get(f"{name}.running_mean" if name else "running_mean")
            if key not in state_dict and isinstance(mean, torch.Tensor):
                state_dict[key] = torch.tensor(0, dtype=torch.long, device=mean.device)


def check_state_dict(module: nn.Module, state_dict: Mapping[str, Any], *, source: str) -> None:
    """Raise :class:`IncompatibleWeightsError` naming the first key that is missing, unexpected,
    not a tensor, or of the wrong shape."""
    expected = module.state_dict(keep_vars=True)
    for key, want in expected.items():
        if key not in state_dict:
            raise IncompatibleWeightsError(
                f"{source}: missing key {key!r} (expected shape {tuple(want.shape)}). The file does not "
                "match this architecture; check the model name and its arguments.")
        got = state_dict[key]
        if not isinstance(got, torch.Tensor):
            raise IncompatibleWeightsError(f"{source}: key {key!r} holds {type(got).__name__}, not a tensor. "
                                           "The file is not a state dict of this architecture.")
        if tuple(got.shape) != tuple(want.shape):
            raise IncompatibleWeightsError(
                f"{source}: key {key!r} has shape {tuple(got.shape)}, expected {tuple(want.shape)}. "
                "The file does not match this architecture; check the model name and its arguments "
                "(e.g. num_classes).")
    for key in state_dict:
        if key not in expected:
            raise IncompatibleWeightsError(
                f"{source}: unexpected key {key!r}. The file does not match this architecture; check "
                "the model name and its arguments.")


class _SkipMetaInit(torch.overrides.TorchFunctionMode):
    """Inside ``torch.device("meta")``: make the initialisers (``torch.nn.init.kaiming_uniform_``,
    ``uniform_``, ... and the in-place ``Tensor.uniform_``, ``normal_``, ``fill_``, ``zero_``, ...)
    a no-op on meta tensors. They would fill nothing, yet each still computes fans and runs a
    Python decomposition (most of building a model on meta). Thread-local, unlike patching
    ``nn.init``."""

    _SKIP = frozenset({torch.Tensor.uniform_, torch.Tensor.normal_, torch.Tensor.fill_, torch.Tensor.zero_,
                       torch.Tensor.exponential_, torch.Tensor.bernoulli_, torch.Tensor.random_,
                       *(getattr(nn.init, name) for name in dir(nn.init)
                         if name.endswith("_") and not name.startswith("_") and callable(getattr(nn.init, name)))})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._SKIP:
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        return func(*args, **kwargs)


def build_on_meta(factory: Callable[[], M]) -> M:
    """Construct a module on the ``meta`` device: shapes only, no random initialisation."""
    with torch.device("meta"), _SkipMetaInit():
        return factory()


def load_into(module: M, state_dict: Mapping[str, torch.Tensor], *, source: str) -> M:
    """Strictly load ``state_dict`` into ``module`` by assignment: the module's tensors become the
    given ones (no copy). Works for modules built with :func:`build_on_meta` and normal ones."""
    state_dict = OrderedDict(state_dict)
    _fill_legacy_batchnorm_counters(module, state_dict)
    check_state_dict(module, state_dict, source=source)
    module.load_state_dict(state_dict, strict=True, assign=True)
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_meta:  # a non-persistent buffer that the weights cannot provide
            raise IncompatibleWeightsError(
                f"{source}: {name!r} was not set by the weights, so this architecture cannot be built "
                "from them. Please report this.")
    return module

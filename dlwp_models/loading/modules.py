"""Strict, copy-free loading of state dicts into modules.

* :func:`check_state_dict` and :func:`load_into` load strictly, with an error that names the first
  offending key;
* :func:`build_on_meta` + :func:`load_into` build a module without a wasted random initialisation
  and without a second copy of the weights.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn

from ..errors import IncompatibleWeightsError

__all__ = ["check_state_dict", "load_into", "build_on_meta", "eval_mode"]

M = TypeVar("M", bound=nn.Module)


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
                "match this architecture; check the model name and its arguments."
            )
        got = state_dict[key]
        if not isinstance(got, torch.Tensor):
            raise IncompatibleWeightsError(
                f"{source}: key {key!r} holds {type(got).__name__}, not a tensor. "
                "The file is not a state dict of this architecture."
            )
        if tuple(got.shape) != tuple(want.shape):
            raise IncompatibleWeightsError(
                f"{source}: key {key!r} has shape {tuple(got.shape)}, expected {tuple(want.shape)}. "
                "The file does not match this architecture; check the model name and its arguments "
                "(e.g. num_classes)."
            )
    for key in state_dict:
        if key not in expected:
            raise IncompatibleWeightsError(
                f"{source}: unexpected key {key!r}. The file does not match this architecture; check "
                "the model name and its arguments."
            )


class _SkipMetaInit(torch.overrides.TorchFunctionMode):
    """Inside ``torch.device("meta")``: make the initialisers (``torch.nn.init.kaiming_uniform_``,
    ``uniform_``, ... and the in-place ``Tensor.uniform_``, ``normal_``, ``fill_``, ``zero_``, ...)
    a no-op on meta tensors. They would fill nothing, yet each still computes fans and runs a
    Python decomposition (most of building a model on meta). Thread-local, unlike patching
    ``nn.init``."""

    _SKIP = frozenset(
        {
            torch.Tensor.uniform_,
            torch.Tensor.normal_,
            torch.Tensor.fill_,
            torch.Tensor.zero_,
            torch.Tensor.exponential_,
            torch.Tensor.bernoulli_,
            torch.Tensor.random_,
            *(
                getattr(nn.init, name)
                for name in dir(nn.init)
                if name.endswith("_") and not name.startswith("_") and callable(getattr(nn.init, name))
            ),
        }
    )

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
                "from them. Please report this."
            )
    return module


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """``module`` and its submodules in eval mode, their own modes restored afterwards."""
    modes = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for sub, training in modes:
            sub.training = training

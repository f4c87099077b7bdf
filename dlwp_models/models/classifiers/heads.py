"""A classifier's head: the layers that map its pooled features to classes, and what fine-tuning
needs of them — a fresh head of another width (:func:`put_fresh_head`), the head's input for a
batch (:func:`head_input`, computed without the head), the part of the network that turns that
input into logits (:func:`head_tail`) and the layers that count as the body's last block
(:func:`last_block_paths`).

Where each architecture's head is lives in :mod:`.architectures` (``Arch.head``); the head's
input is the pooled feature vector for every architecture but SqueezeNet, whose head is a 1×1
convolution on the last feature map (followed by ReLU and average pooling): its head input is that
map, and :func:`pooled` averages it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .architectures import arch_of_class

__all__ = ["head_paths", "put_fresh_head", "head_input", "head_tail", "pooled", "last_block_paths", "check_labels"]


def head_paths(net: nn.Module) -> tuple[str, ...]:
    """The attribute paths of ``net``'s head layers (the first is the one the network's output comes
    from; Inception v3's auxiliary head follows when the model has it)."""
    paths = arch_of_class(_torchvision_name(net)).head
    return tuple(p for p in paths if _find(net, p) is not None)


def last_block_paths(net: nn.Module) -> tuple[str, ...]:
    """The body layers ``--unfreeze last-block`` trains besides the head."""
    return arch_of_class(_torchvision_name(net)).last_block


def check_labels(classes: int | Sequence[str] | None, labels: Sequence[str] | None = None) -> tuple[int, list | None]:
    """``(number of classes, labels or None)`` from a class count and/or labels; a ValueError that
    says what is wrong otherwise (labels that are not distinct non-empty strings, a count that
    differs from the labels')."""
    if classes is not None and not isinstance(classes, int) and labels is None:
        classes, labels = None, classes
    if labels is not None:
        if isinstance(labels, str) or not isinstance(labels, Sequence) or not labels:
            raise ValueError(f"labels must be a non-empty list of class names, got {labels!r:.80}.")
        if not all(isinstance(label, str) and label.strip() for label in labels):
            raise ValueError(f"labels must be non-empty strings, one per class; got {list(labels)!r:.80}.")
        if len(set(labels)) != len(labels):
            twice = sorted({label for label in labels if list(labels).count(label) > 1})
            raise ValueError(f"labels must be distinct; {twice[0]!r} appears more than once.")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 1):
        raise ValueError(f"num_classes must be a positive int, got {classes!r}.")
    if classes is not None and labels is not None and classes != len(labels):
        raise ValueError(
            f"num_classes={classes} but {len(labels)} labels were given; give one label per class "
            "(or only one of the two)."
        )
    if classes is None and labels is None:
        raise ValueError("give the number of classes or their labels.")
    return (classes if classes is not None else len(labels)), (list(labels) if labels is not None else None)


def put_fresh_head(net: nn.Module, num_classes: int) -> None:
    """Replace every head layer of ``net`` by a new one with ``num_classes`` outputs, on the same
    device and dtype, initialised from the global random generator (weights normal with standard
    deviation 0.01, biases 0, as torchvision initialises SqueezeNet's head)."""
    for path in head_paths(net):
        old = _find(net, path)
        if isinstance(old, nn.Linear):
            new: nn.Module = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
        elif isinstance(old, nn.Conv2d):
            new = nn.Conv2d(old.in_channels, num_classes, 1, device=old.weight.device, dtype=old.weight.dtype)
        else:  # pragma: no cover - every registered architecture's head is one of those
            raise TypeError(f"{type(net).__name__}.{path} is a {type(old).__name__}, not a Linear or Conv2d layer.")
        with torch.no_grad():
            nn.init.normal_(new.weight, 0.0, 0.01)
            nn.init.zeros_(new.bias)
        parent, _, name = path.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, name, new)
    if hasattr(net, "num_classes"):  # SqueezeNet keeps its width
        net.num_classes = num_classes


class _Reached(Exception):
    """Raised by the hook on the head with the head's input: nothing after it runs."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value


def head_input(net: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """What ``net``'s head receives for ``batch`` (a normalised (N, 3, H, W) batch), computed by the
    network up to its head and no further."""

    def reached(_module: nn.Module, args: tuple) -> None:
        raise _Reached(args[0])

    handle = net.get_submodule(head_paths(net)[0]).register_forward_pre_hook(reached)
    try:
        net(batch)
    except _Reached as stop:
        return stop.value
    finally:
        handle.remove()
    raise RuntimeError(f"{type(net).__name__}'s forward pass never reached its head {head_paths(net)[0]!r}.")


def head_tail(net: nn.Module) -> nn.Module:
    """The module that turns :func:`head_input` into ``net``'s logits (it shares ``net``'s head): the
    head itself, or for SqueezeNet its 1×1 convolution, ReLU, average pooling and flattening."""
    path = head_paths(net)[0]
    head = net.get_submodule(path)
    if isinstance(head, nn.Conv2d):
        parent = net.get_submodule(path.rpartition(".")[0])
        after = list(parent.children())[list(parent.children()).index(head) :]
        return nn.Sequential(*after, nn.Flatten(1))
    return head


def pooled(features: torch.Tensor) -> torch.Tensor:
    """Head inputs as (N, D) vectors: a feature map (N, C, H, W) averaged over its positions."""
    return features.mean(dim=(2, 3)) if features.dim() == 4 else features.flatten(1)


def _torchvision_name(net: nn.Module) -> str:
    base = next((c for c in type(net).__mro__ if c.__module__.startswith("torchvision.")), type(net))
    return base.__name__


def _find(net: nn.Module, path: str) -> nn.Module | None:
    try:
        found = net.get_submodule(path)
    except AttributeError:
        return None
    return found if isinstance(found, nn.Module) else None

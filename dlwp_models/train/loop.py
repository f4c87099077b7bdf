"""The training loops of ``dlwp finetune``: AdamW with a linear warm-up and a cosine decay (per
step), label smoothing, and randomness drawn only from generators seeded by ``(seed, epoch)``, so
that a run resumed from the checkpoint of a complete epoch ends with the same weights, bit for bit
on a CPU, as a run that was never interrupted.

* :func:`head_epoch`: one epoch of the head on cached features (the body never runs).
* :func:`deep_epoch`: one epoch of the head and the unfrozen body layers on augmented photos
  (RandomResizedCrop, flip, TrivialAugment; torchvision's transforms v2), decoded in this thread
  so the random draws come in one order.
* :func:`logits_of`: the validation pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import TrainingError

__all__ = ["Schedule", "optimizer_for", "head_epoch", "deep_epoch", "logits_of", "epoch_generator", "Progress"]

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Schedule:
    """Learning rate × ``factor(step)``: linear warm-up over ``warmup`` steps, then cosine to 0."""

    total: int
    warmup: int

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def optimizer_for(
    groups: Sequence[tuple[Sequence[nn.Parameter], float]], schedule: Schedule, weight_decay: float
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``(parameters, learning rate)`` groups, and its per-step scheduler."""
    optimizer = torch.optim.AdamW(
        [{"params": list(params), "lr": lr} for params, lr in groups if params], weight_decay=weight_decay
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's random draws: the same for the same seed and epoch, whatever
    happened before (a resumed run draws what the uninterrupted one drew)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, epoch: int
) -> None:
    if not torch.isfinite(loss):
        raise TrainingError(
            f"the training loss became {float(loss)} in epoch {epoch}; lower --lr (or check the photos) and "
            "start again (the last good epoch's checkpoint is kept)."
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()


def head_epoch(
    tail: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    epoch: int,
    seed: int,
    batch_size: int,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
) -> tuple[float, float]:
    """One epoch of the head on cached features, in a seeded order; (mean loss, accuracy %)."""
    tail.train()
    order = torch.randperm(len(labels), generator=epoch_generator(seed, epoch))
    total_loss, correct = 0.0, 0
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        logits = tail(features[index])
        loss = criterion(logits, labels[index])
        _step(loss, optimizer, scheduler, epoch)
        total_loss += float(loss.detach()) * len(index)
        correct += int((logits.argmax(1) == labels[index]).sum())
    return total_loss / len(order), 100.0 * correct / len(order)


def augmentation(crop: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[object], torch.Tensor]:
    """The deeper stage's training transform: RandomResizedCrop, horizontal flip and TrivialAugment
    on the decoded photo, then the weights' normalisation."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomResizedCrop(crop, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.TrivialAugmentWide(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def deep_epoch(
    model: nn.Module,
    photos: Sequence[tuple[Path, int]],
    *,
    train_mode: Callable[[], None],
    augment: Callable[[object], torch.Tensor],
    load: Callable[[Path], object],
    epoch: int,
    seed: int,
    batch_size: int,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    progress: Progress | None = None,
) -> tuple[float, float]:
    """One epoch of the unfrozen layers on augmented photos; (mean loss, accuracy %). The global
    random generator (augmentation, dropout) is seeded from ``(seed, epoch)`` and restored after."""
    device = next(model.parameters()).device
    order = torch.randperm(len(photos), generator=epoch_generator(seed, epoch)).tolist()
    total_loss, correct = 0.0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003 + epoch)
        train_mode()
        for start in range(0, len(order), batch_size):
            chosen = [photos[i] for i in order[start : start + batch_size]]
            batch = torch.stack([augment(load(path)) for path, _ in chosen]).to(device)
            target = torch.tensor([label for _, label in chosen], device=device)
            out = model(batch.contiguous(memory_format=torch.channels_last))
            if isinstance(out, tuple):  # Inception v3 in train mode: (logits, aux_logits)
                logits = out[0]
                loss = criterion(logits, target) + 0.4 * criterion(out[1], target)
            else:
                logits, loss = out, criterion(out, target)
            _step(loss, optimizer, scheduler, epoch)
            total_loss += float(loss.detach()) * len(chosen)
            correct += int((logits.argmax(1) == target).sum())
            if progress is not None:
                progress(len(chosen))
    model.eval()
    return total_loss / len(order), 100.0 * correct / len(order)


def logits_of(forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``forward`` over ``inputs`` in batches, without gradients."""
    with torch.no_grad():
        return torch.cat([forward(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])

"""``dlwp finetune``: a book classifier on the user's own classes.

1. Read the photos (:mod:`dlwp_models.evaluation.data`: one folder per class, ``train/`` +
   ``val/`` or a stratified split), hash each (the feature cache's key; duplicates across the
   split are warned about).
2. Build the pretrained body with a fresh head (``reset_classifier``, seeded).
3. *Head only* (``unfreeze="none"``, or ``head_epochs`` before a deeper stage): the body runs once
   per photo (:class:`.features.FeatureCache`), the head trains on the cached features.
4. *Deeper* (``unfreeze="last-block"`` or ``"all"``): augmented photos, the unfrozen body layers at
   ``body_lr_factor`` × the head's learning rate, in train mode only where unfrozen.
5. After every epoch the checkpoint and the log are written atomically (:mod:`.state`); ``resume``
   continues from the last complete epoch to the same final weights.
6. The result is a weight set in the output folder (:mod:`.output`), loaded back through the one
   builder and evaluated on the validation photos (:mod:`dlwp_models.evaluation`): confusion
   matrix, model card, training curves.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DataError, TrainingError
from ..evaluation.data import Labelled, read_train_val
from ..evaluation.measure import Evaluation, evaluate
from ..evaluation.plots import curves_png
from ..evaluation.report import write_report
from ..hub import build
from ..models.classifiers import CLASSIFIERS
from ..models.classifiers.heads import head_paths, head_tail, last_block_paths
from .features import FeatureCache
from .loop import Schedule, deep_epoch, head_epoch, logits_of, optimizer_for
from .output import tag_for, write_weight_set
from .state import CHECKPOINT, load_checkpoint, save_checkpoint, write_log

__all__ = ["FinetuneSettings", "Finetuned", "finetune", "UNFREEZE"]

log = logging.getLogger(__name__)

UNFREEZE = ("none", "last-block", "all")


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything that decides a fine-tune's weights (and so its resume fingerprint)."""

    model: str
    weights: str | None = None  # the base weight set (default: the model's default)
    epochs: int = 10
    unfreeze: str = "none"
    head_epochs: int = 5  # head-only epochs before a deeper stage (0: straight to it)
    lr: float = 3e-3  # the head's peak learning rate
    body_lr_factor: float = 0.1  # the unfrozen body's learning rate, relative to the head's
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    batch_size: int = 32
    seed: int = 0
    val_fraction: float = 0.2
    on_error: str = "skip"  # unreadable photos: "skip" (listed) or "stop"
    tag: str | None = None
    device: str = "cpu"

    def check(self) -> None:
        if self.model not in CLASSIFIERS:
            raise ValueError(f"--model must be one of the classifiers ({', '.join(CLASSIFIERS)}), got {self.model!r}.")
        if self.unfreeze not in UNFREEZE:
            raise ValueError(f"--unfreeze must be one of {', '.join(UNFREEZE)}, got {self.unfreeze!r}.")
        if self.on_error not in ("skip", "stop"):
            raise ValueError(f"--on-error must be skip or stop, got {self.on_error!r}.")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1.")
        if self.head_epochs < 0 or self.lr <= 0 or self.body_lr_factor < 0 or not 0 <= self.label_smoothing < 1:
            raise ValueError("--head-epochs ≥ 0, --lr > 0, --body-lr-factor ≥ 0 and 0 ≤ --label-smoothing < 1.")

    @property
    def stages(self) -> list[tuple[str, int]]:
        """``(stage, epochs)`` in order."""
        if self.unfreeze == "none":
            return [("head", self.epochs)]
        return [s for s in (("head", self.head_epochs), ("deep", self.epochs)) if s[1]]


@dataclass
class Finetuned:
    """What a fine-tune produced."""

    folder: Path
    name: str  # the weight set's name, <model>.<tag>
    manifest: Path
    weight_file: Path
    rows: list[dict[str, Any]]
    evaluation: Evaluation
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _digests(data: Labelled, on_bad: Callable[[Path, BaseException], None]) -> dict[Path, str]:
    found = {}
    for path, _ in data.samples:
        try:
            found[path] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            on_bad(path, exc)
    return found


def _check_output(folder: Path, resume: bool) -> None:
    if resume:
        return
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        what = "a run" if (folder / CHECKPOINT).exists() else "files"
        raise TrainingError(
            f"--output-dir {folder} already holds {what}; pass --resume to continue an interrupted run there, "
            "or choose a new folder (nothing there was changed)."
        )


def finetune(
    data_dir: str | Path,
    output_dir: str | Path,
    settings: FinetuneSettings,
    *,
    resume: bool = False,
    progress: bool = False,
) -> Finetuned:
    """Fine-tune ``settings.model`` on the photos in ``data_dir``; see the module docstring."""
    from tqdm import tqdm

    settings.check()
    folder = Path(output_dir)
    _check_output(folder, resume)
    tag = settings.tag or tag_for(folder.resolve().name)
    train, val, how = read_train_val(data_dir, val_fraction=settings.val_fraction, seed=settings.seed)
    if len(train.classes) < 2:
        raise DataError(f"{data_dir} has one class ({train.classes[0]!r}); a classifier needs at least two.")
    skipped: list[tuple[str, str]] = []

    def on_bad(path: Path, exc: BaseException) -> None:
        if settings.on_error == "stop":
            raise DataError(f"{path} cannot be used: {exc} (pass --on-error skip to leave such files out).")
        skipped.append((str(path), str(exc)))
        log.warning("skipped %s: %s", path, exc)

    digests = _digests(train, on_bad) | _digests(val, on_bad)
    _warn_duplicates(train, val, digests)
    fingerprint = {
        **{k: v for k, v in asdict(settings).items() if k not in ("on_error", "device")},
        "data": hashlib.sha256(
            "".join(f"{train.classes[c]}:{digests.get(p)}\n" for p, c in (*train.samples, *val.samples)).encode()
        ).hexdigest(),
    }
    state = load_checkpoint(folder, fingerprint) if resume else None  # no checkpoint: a clear refusal
    folder.mkdir(parents=True, exist_ok=True)

    model = build(settings.model, weights=settings.weights or "DEFAULT", progress=progress, map_location="cpu")
    base, body_sha256 = model.weights, model.weight_file.sha256  # before the new head forgets the file
    model = model.to(settings.device)
    torch.manual_seed(settings.seed)
    model.reset_classifier(list(train.classes))
    rows: list[dict[str, Any]] = list(state["rows"]) if state else []
    done = int(state["epoch"]) if state else 0
    start_stage = state["stage"] if state else None
    if state is not None:
        _restore_weights(model, state)

    first = 0
    for stage, epochs in settings.stages:
        last = first + epochs
        if done < last:
            run = _head_stage if stage == "head" else _deep_stage
            run(
                model, train, val, settings, digests, on_bad, folder, fingerprint, rows, body_sha256,
                first=first, last=last, done=done, state=state if start_stage == stage else None,
                progress=progress, tqdm=tqdm,
            )  # fmt: skip
            done = last
        first = last
    return _finish(model, folder, settings, tag, base, train, val, how, rows, skipped)


def _warn_duplicates(train: Labelled, val: Labelled, digests: dict[Path, str]) -> None:
    seen = {digests[p]: p for p, _ in train.samples if p in digests}
    twins = [(seen[digests[p]], p) for p, _ in val.samples if digests.get(p) in seen]
    if twins:
        shown = "; ".join(f"{a} = {b}" for a, b in twins[:3])
        log.warning(
            "%d validation photo(s) are byte-for-byte copies of training photos (%s%s): the validation accuracy "
            "overstates how the model does on new photos. Remove the copies from one side.",
            len(twins),
            shown,
            " ..." if len(twins) > 3 else "",
        )


def _restore_weights(model: nn.Module, state: dict[str, Any]) -> None:
    saved = state["weights"]
    missing = set(saved) - set(model.state_dict())
    if missing:
        raise TrainingError(f"the checkpoint holds weights this model lacks ({sorted(missing)[0]}); start a new run.")
    model.load_state_dict({**model.state_dict(), **saved})


def _epoch_row(stage: str, epoch: int, loss: float, acc: float, val_logits, val_labels, criterion, lr, start) -> dict:
    val_loss = float(criterion(val_logits, val_labels)) if len(val_labels) else math.nan
    val_acc = 100.0 * float((val_logits.argmax(1) == val_labels).float().mean()) if len(val_labels) else math.nan
    return {
        "stage": stage,
        "epoch": epoch,
        "train_loss": round(loss, 6),
        "train_acc": round(acc, 4),
        "val_loss": round(val_loss, 6),
        "val_acc": round(val_acc, 4),
        "lr": lr,
        "seconds": round(time.perf_counter() - start, 3),
    }


def _save_epoch(folder, fingerprint, rows, stage, epoch, weights, optimizer, scheduler) -> None:
    save_checkpoint(
        folder,
        {
            "fingerprint": fingerprint,
            "stage": stage,
            "epoch": epoch,
            "rows": rows,
            "weights": weights,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        },
    )
    write_log(folder, rows)


def _stacked(found: dict[Path, torch.Tensor], data: Labelled, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    kept = [(p, c) for p, c in data.samples if p in found]
    if not kept:
        raise DataError(f"{data.source}: none of its photos could be read as an image.")
    return torch.stack([found[p] for p, _ in kept]).to(device), torch.tensor([c for _, c in kept], device=device)


def _head_stage(
    model, train, val, settings, digests, on_bad, folder, fingerprint, rows, body_sha256, *, first, last, done, state,
    progress, tqdm,
):  # fmt: skip
    cache = FeatureCache(model, settings.model, body_sha256)
    paths = [p for p, _ in (*train.samples, *val.samples) if p in digests]
    with tqdm(total=len(paths), desc="features", unit="photo", disable=not progress, leave=False) as bar:
        found = cache.features(
            paths, [digests[p] for p in paths], batch_size=settings.batch_size, on_bad=on_bad, progress=bar.update
        )
    log.info("features: %d from the cache, %d computed (%s)", cache.hits, cache.made, cache.folder)
    x_train, y_train = _stacked(found, train, settings.device)
    x_val, y_val = _stacked(found, val, settings.device)
    tail = head_tail(model)
    head = [p for path in head_paths(model)[:1] for p in model.get_submodule(path).parameters()]
    steps = math.ceil(len(y_train) / settings.batch_size)
    schedule = Schedule((last - first) * steps, round(settings.warmup_epochs * steps))
    optimizer, scheduler = optimizer_for([(head, settings.lr)], schedule, settings.weight_decay)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    plain = nn.CrossEntropyLoss()
    names = {k for path in head_paths(model) for k in model.state_dict() if k.startswith(path + ".")}
    for epoch in tqdm(range(done, last), desc="head", unit="epoch", disable=not progress, leave=False):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        loss, acc = head_epoch(
            tail, x_train, y_train, epoch=epoch, seed=settings.seed, batch_size=settings.batch_size,
            criterion=criterion, optimizer=optimizer, scheduler=scheduler,
        )  # fmt: skip
        tail.eval()
        val_logits = logits_of(tail, x_val, 256)
        rows.append(_epoch_row("head", epoch + 1, loss, acc, val_logits, y_val, plain, lr, start))
        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}
        _save_epoch(folder, fingerprint, rows, "head", epoch + 1, weights, optimizer, scheduler)
    model.eval()


def _deep_stage(
    model, train, val, settings, digests, on_bad, folder, fingerprint, rows, _body_sha256, *, first, last, done, state,
    progress, tqdm,
):  # fmt: skip
    from ..inputs.images import load_image
    from .loop import augmentation

    t = model.transforms
    photos, val_crops, val_labels = [], [], []
    for path, label in train.samples:
        if path in digests:
            photos.append((path, label))
    for path, label in val.samples:
        try:
            val_crops.append(t.crop_pixels(load_image(path)))
            val_labels.append(label)
        except (OSError, ValueError) as exc:
            on_bad(path, exc)
    device = next(model.parameters()).device
    x_val = t.collate(val_crops, device, torch.float32)
    y_val = torch.tensor(val_labels, device=device)
    unfrozen = [""] if settings.unfreeze == "all" else list(last_block_paths(model))
    heads = list(head_paths(model))
    for p in model.parameters():
        p.requires_grad_(settings.unfreeze == "all")
    body = [p for path in unfrozen if path for p in model.get_submodule(path).parameters()]
    for p in body:
        p.requires_grad_(True)
    head = [p for path in heads for p in model.get_submodule(path).parameters()]
    for p in head:
        p.requires_grad_(True)
    if settings.unfreeze == "all":
        body = [p for p in model.parameters() if all(p is not h for h in head)]

    def train_mode() -> None:
        model.eval()
        for path in (*unfrozen, *heads):
            (model.get_submodule(path) if path else model).train()

    steps = math.ceil(len(photos) / settings.batch_size)
    schedule = Schedule((last - first) * steps, round(settings.warmup_epochs * steps))
    groups = [(head, settings.lr), (body, settings.lr * settings.body_lr_factor)]
    optimizer, scheduler = optimizer_for(groups, schedule, settings.weight_decay)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    plain = nn.CrossEntropyLoss()
    augment = augmentation(t.crop, t.mean, t.std)

    def load(path: Path) -> Any:
        try:
            return load_image(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} could not be read during training: {exc}") from None

    try:
        for epoch in tqdm(range(done, last), desc="deeper", unit="epoch", disable=not progress, leave=False):
            start = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            loss, acc = deep_epoch(
                model, photos, train_mode=train_mode, augment=augment, load=load, epoch=epoch, seed=settings.seed,
                batch_size=settings.batch_size, criterion=criterion, optimizer=optimizer, scheduler=scheduler,
            )  # fmt: skip
            val_logits = logits_of(model, x_val, 64)
            rows.append(_epoch_row("deep", epoch + 1, loss, acc, val_logits, y_val, plain, lr, start))
            weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            _save_epoch(folder, fingerprint, rows, "deep", epoch + 1, weights, optimizer, scheduler)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
        model.eval()


def _finish(model, folder, settings, tag, base, train, val, how, rows, skipped) -> Finetuned:
    last = rows[-1]
    meta = {
        "data": {"split": how, "train": train.summary(), "val": val.summary(), "skipped": len(skipped)},
        "val_acc@1": last["val_acc"],
        "seed": settings.seed,
        "flags": {k: v for k, v in asdict(settings).items() if k not in ("model", "tag")},
    }
    ws = write_weight_set(folder, model.cpu(), model_name=settings.model, tag=tag, base=base, meta=meta)
    loaded = build(settings.model, weights=ws, progress=False, map_location="cpu").to(settings.device)
    evaluation = evaluate(loaded, val.without({Path(p) for p, _ in skipped}), batch_size=settings.batch_size)
    write_report(folder, loaded, [evaluation], name=ws.name, weight_file=folder / ws.files["state_dict"].filename)
    rows.append({"evaluation": {"acc@1": round(evaluation.acc1, 4), "images": evaluation.images}})
    write_log(folder, rows)
    curves_png(folder / "curves.png", rows[:-1])
    return Finetuned(
        folder, ws.name, Path(ws.source), folder / ws.files["state_dict"].filename, rows, evaluation, skipped
    )

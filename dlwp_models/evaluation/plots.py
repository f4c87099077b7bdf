"""The pictures a fine-tune and an evaluation leave in their folder: the confusion matrix and the
training curves, drawn with matplotlib (the ``[train]`` extra). Without matplotlib they are
skipped with one logged line; everything else works."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..safe_write import write_file

__all__ = ["confusion_png", "curves_png"]

log = logging.getLogger(__name__)


def _pyplot() -> Any | None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning('matplotlib is not installed, so no PNG plots were drawn (pip install -e ".[train]")')
        return None
    return plt


def _save(plt: Any, fig: Any, path: Path) -> None:
    try:
        write_file(path, lambda out: fig.savefig(out, format="png", dpi=100), replace=True, doing=f"write {path.name}")
    finally:
        plt.close(fig)


def confusion_png(path: Path, classes: Sequence[str], confusion: Sequence[Sequence[int]], title: str) -> bool:
    """Draw the confusion matrix (rows: true class; columns: predicted, then "other"); False when
    matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        return False
    n = len(classes)
    side = min(2 + 0.45 * n, 30)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow([list(row) for row in confusion], cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(n + 1), [*classes, "other"], rotation=90)
    ax.set_yticks(range(n), list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        for i, row in enumerate(confusion):
            for j, count in enumerate(row):
                if count:
                    ax.text(j, i, str(count), ha="center", va="center", fontsize=8)
    fig.tight_layout()
    _save(plt, fig, path)
    return True


def curves_png(path: Path, rows: Sequence[dict]) -> bool:
    """Draw loss and accuracy per epoch from the training log's rows; False when matplotlib is
    missing."""
    plt = _pyplot()
    if plt is None:
        return False
    epochs = [row["epoch"] for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [row["train_loss"] for row in rows], label="train")
    left.plot(epochs, [row["val_loss"] for row in rows], label="validation")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend()
    right.plot(epochs, [row["train_acc"] for row in rows], label="train")
    right.plot(epochs, [row["val_acc"] for row in rows], label="validation")
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy (%)")
    right.legend()
    fig.tight_layout()
    _save(plt, fig, path)
    return True

"""What an evaluation leaves in its folder: ``evaluation.json`` (every figure, per backend),
``confusion.csv`` and ``confusion.png`` (of the first backend), and the model card."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from ..safe_write import write_file
from .card import model_card, write_card
from .measure import Evaluation
from .plots import confusion_png

__all__ = ["write_report"]


def write_report(
    folder: Path,
    model: nn.Module,
    evaluations: Sequence[Evaluation],
    *,
    name: str,
    weight_file: Path | None,
    extra: dict | None = None,
) -> list[Path]:
    """Write the evaluation's files into ``folder`` (made if missing); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    first = evaluations[0]
    written = [folder / "evaluation.json", folder / "confusion.csv"]
    data = {"evaluations": [e.to_json() for e in evaluations]}
    write_file(written[0], (json.dumps(data, indent=2) + "\n").encode(), replace=True, doing="write evaluation.json")
    write_file(written[1], first.confusion_csv().encode(), replace=True, doing="write confusion.csv")
    title = f"{name}: acc@1 {first.acc1:.1f} % on {first.images} photos"
    if confusion_png(folder / "confusion.png", first.classes, first.confusion, title):
        written.append(folder / "confusion.png")
    card = model_card(model, name=name, evaluations=evaluations, weight_file=weight_file, extra=extra)
    written += write_card(folder, card)
    return written

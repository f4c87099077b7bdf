"""A model card: what a weight set is and how well it does, measured here — accuracy with the
data's size and source, parameters, GFLOPs per image, file size, and images per second per backend
on this machine — as JSON (for tools) and Markdown (for people). ``dlwp evaluate`` and
``dlwp finetune`` write one beside their results."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..safe_write import write_file
from .measure import Evaluation

__all__ = ["model_card", "write_card", "gflops"]


def gflops(model: nn.Module, crop: int) -> float:
    """Floating-point operations of one forward pass on one ``crop`` × ``crop`` image, in billions
    (a multiply-add counts as two, as ``torch.utils.flop_counter`` counts)."""
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        was_training = model.training
        model.eval()
        try:
            model(torch.zeros(1, 3, crop, crop, device=param.device, dtype=param.dtype))
        finally:
            model.train(was_training)
    return counter.get_total_flops() / 1e9


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def model_card(
    model: nn.Module,
    *,
    name: str,
    evaluations: Sequence[Evaluation],
    weight_file: Path | None,
    extra: dict | None = None,
) -> dict[str, Any]:
    """The card's facts as a JSON-ready dict."""
    crop = getattr(getattr(model, "transforms", None), "crop", 224)
    first = evaluations[0]
    return {
        "model": name,
        "architecture": type(model).__name__,
        "classes": len(model.categories or []),
        "parameters": sum(p.numel() for p in model.parameters()),
        "gflops_per_image": round(gflops(model, crop), 3),
        "input": f"{crop}x{crop} crop",
        "weight_file": None if weight_file is None else weight_file.name,
        "file_size_mb": None if weight_file is None else round(weight_file.stat().st_size / 2**20, 3),
        "data": {"source": first.source, "images": first.images, "skipped": len(first.skipped)},
        "accuracy": {"acc@1": round(first.acc1, 4), f"acc@{first.k}": round(first.acck, 4)},
        "per_class_acc@1": first.per_class(),
        "backends": {
            e.backend: {
                "images_per_s": round(e.images_per_s, 3),
                "acc@1": round(e.acc1, 4),
                "top1_agreement_with_first": _agreement(first, e),
            }
            for e in evaluations
        },
        "measured_on": {"cpu": _cpu_name(), "cores": torch.get_num_threads(), "torch": torch.__version__},
        **(extra or {}),
    }


def _agreement(first: Evaluation, other: Evaluation) -> float | None:
    """How often two evaluations' top-1 classes agree, from their confusion matrices' rows (a
    lower bound when answers moved between classes; exact when neither moved)."""
    if first.images != other.images:
        return None
    same = sum(min(a, b) for ra, rb in zip(first.confusion, other.confusion) for a, b in zip(ra, rb))
    return round(100.0 * same / first.images, 4) if first.images else None


def _markdown(card: dict[str, Any]) -> str:
    acc = card["accuracy"]
    lines = [
        f"# Model card: {card['model']}",
        "",
        f"{card['architecture']}, {card['classes']} classes, {card['parameters']:,} parameters, "
        f"{card['gflops_per_image']} GFLOPs per {card['input']}"
        + (f", weight file {card['weight_file']} ({card['file_size_mb']} MiB)." if card["weight_file"] else "."),
        "",
        "## Accuracy",
        "",
        f"Measured on {card['data']['images']} photos of {card['data']['source']}"
        + (f" ({card['data']['skipped']} unreadable files skipped)" if card["data"]["skipped"] else "")
        + ": "
        + ", ".join(f"{key} {value:.2f} %" for key, value in acc.items())
        + ".",
        "",
        "| class | acc@1 (%) |",
        "|---|---|",
        *(f"| {name} | {'' if v is None else f'{v:.2f}'} |" for name, v in card["per_class_acc@1"].items()),
        "",
        "## Speed on this machine",
        "",
        f"{card['measured_on']['cpu']}, {card['measured_on']['cores']} threads, torch {card['measured_on']['torch']}.",
        "",
        "| backend | images/s (decode included) | acc@1 (%) |",
        "|---|---|---|",
        *(f"| {b} | {v['images_per_s']:.2f} | {v['acc@1']:.2f} |" for b, v in card["backends"].items()),
        "",
    ]
    return "\n".join(lines)


def write_card(folder: Path, card: dict[str, Any], *, stem: str = "model_card") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``folder`` (replacing earlier ones)."""
    paths = folder / f"{stem}.json", folder / f"{stem}.md"
    write_file(paths[0], (json.dumps(card, indent=2) + "\n").encode(), replace=True, doing=f"write {paths[0].name}")
    write_file(paths[1], _markdown(card).encode(), replace=True, doing=f"write {paths[1].name}")
    return paths

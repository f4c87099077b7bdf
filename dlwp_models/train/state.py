"""A fine-tune's state on disk, in its output folder: ``checkpoint.pt`` (written atomically after
every complete epoch: the trained weights, the optimizer and scheduler, the log so far and the
run's fingerprint) and ``log.jsonl`` (one line per epoch, rewritten from the checkpoint's rows, so
it never holds an epoch the checkpoint does not). ``--resume`` reads the checkpoint back and
refuses one made with other settings or other data."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from ..errors import TrainingError
from ..safe_write import write_file

__all__ = ["CHECKPOINT", "LOG", "save_checkpoint", "load_checkpoint", "write_log"]

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write the checkpoint atomically and durably (a kill leaves the previous epoch's)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_file(folder / CHECKPOINT, buffer.getvalue(), replace=True, durable=True, doing="write the checkpoint")


def write_log(folder: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite ``log.jsonl`` from the checkpoint's rows."""
    text = "".join(json.dumps(row) + "\n" for row in rows)
    write_file(folder / LOG, text.encode(), replace=True, doing="write the training log")


def load_checkpoint(folder: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint of the run in ``folder``, checked against this run's ``fingerprint``."""
    path = folder / CHECKPOINT
    if not path.is_file():
        raise TrainingError(
            f"--resume: {folder} has no {CHECKPOINT} (no epoch of a run there completed); start the run "
            "without --resume."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file: say so, never half-use it
        raise TrainingError(f"--resume: {path} cannot be read as a dlwp checkpoint ({exc}).") from None
    if not isinstance(state, dict) or not isinstance(state.get("fingerprint"), dict):
        raise TrainingError(f"--resume: {path} is not a dlwp fine-tune checkpoint.")
    theirs = state["fingerprint"]
    differ = sorted(key for key in set(theirs) | set(fingerprint) if theirs.get(key) != fingerprint.get(key))
    if differ:
        shown = ", ".join(f"{key} ({theirs.get(key)!r:.60} then, {fingerprint.get(key)!r:.60} now)" for key in differ)
        raise TrainingError(
            f"--resume: the run in {folder} was made with other settings or data: {shown}. Resume with the "
            "same command and data, or choose another --output-dir."
        )
    return state

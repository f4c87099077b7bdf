"""The feature cache of a head-only fine-tune: the body runs once per photo, and what the head
receives for it (:func:`~dlwp_models.models.classifiers.heads.head_input`, through ``embed``'s
decoding and preprocessing) is kept on disk.

An entry is keyed by the photo's bytes (their sha256) inside a folder keyed by the body: the
model, the sha256 of its weight file and its transform settings. So a second run, another head
size, other epochs or another seed reuse every entry; new weights or another transform use a new
folder. Layout, beside the weights cache (``TORCH_HOME`` moves both)::

    <torch hub dir>/dlwp-features/<body key>/<sha256 of the photo>.pt

Each entry is written atomically (:func:`dlwp_models.safe_write.write_file`) and read with
``weights_only=True``; one that does not read back as a tensor of the body's shape is made again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path

import torch
from torch import nn

from ..safe_write import write_file

__all__ = ["FeatureCache", "body_key"]

log = logging.getLogger(__name__)


def body_key(model_name: str, weight_sha256: str | None, transforms: dict) -> str:
    """The folder name of a body's features."""
    raw = json.dumps({"model": model_name, "weights": weight_sha256, "transforms": transforms}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


class FeatureCache:
    """The cached head inputs of one body (see the module docstring)."""

    def __init__(self, model: nn.Module, model_name: str, body_sha256: str | None, root: Path | None = None) -> None:
        """``body_sha256``: the sha256 of the verified file the body's weights came from (None:
        random or unverified weights, whose features are not kept)."""
        import torch.hub

        weights = getattr(model, "weights", None)
        transforms = dict(weights.transforms) if weights is not None else {"repr": repr(model.transforms)}
        self.model = model
        base = root or Path(torch.hub.get_dir()) / "dlwp-features"
        self.folder = base / body_key(model_name, body_sha256, transforms)
        self.persistent = body_sha256 is not None
        self.hits = 0
        self.made = 0

    def _read(self, digest: str) -> torch.Tensor | None:
        path = self.folder / f"{digest}.pt"
        if not self.persistent or not path.is_file():
            return None
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a damaged entry is made again, never used
            log.warning("feature cache entry %s is damaged; computing it again", path.name)
            return None
        return value if isinstance(value, torch.Tensor) and value.is_floating_point() else None

    def _write(self, digest: str, value: torch.Tensor) -> None:
        if not self.persistent:
            return
        buffer = io.BytesIO()
        torch.save(value.clone(), buffer)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_file(self.folder / f"{digest}.pt", buffer.getvalue(), replace=True, doing="write a cached feature")

    def features(
        self,
        paths: Sequence[Path],
        digests: Sequence[str],
        *,
        batch_size: int,
        on_bad: Callable[[Path, BaseException], None],
        progress: Callable[[int], None] | None = None,
    ) -> dict[Path, torch.Tensor]:
        """Each photo's head input, from the cache or computed now (in batches, through
        ``model.embed_stream``); a photo that cannot be decoded is passed to ``on_bad`` and left out."""
        found: dict[Path, torch.Tensor] = {}
        missing: list[Path] = []
        digest_of = dict(zip(paths, digests))
        shape = None
        for path in paths:
            value = self._read(digest_of[path])
            if value is not None and (shape is None or value.shape == shape):
                found[path], shape = value, value.shape
                self.hits += 1
            else:
                missing.append(path)
        if progress is not None:
            progress(len(found))
        # closed at once when on_bad stops the run, so no decoding thread outlives it
        with closing(self.model.embed_stream(missing, batch_size=batch_size, pool=False)) as stream:
            for path, outcome in stream:
                if isinstance(outcome, BaseException):
                    on_bad(path, outcome)
                else:
                    found[path] = outcome
                    self._write(digest_of[path], outcome)
                    self.made += 1
                if progress is not None:
                    progress(1)
        return found

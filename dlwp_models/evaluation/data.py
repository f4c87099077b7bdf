"""Labelled photos, as ``dlwp finetune`` and ``dlwp evaluate`` read them.

* One folder per class (torchvision's ImageFolder layout): ``DATA/<class>/<photo>``; every regular,
  non-hidden file under a class folder is one of its photos (a file that is not an image is found
  when it is decoded, and skipped or stops the run as the caller says).
* For fine-tuning, optionally ``DATA/train/<class>/…`` and ``DATA/val/<class>/…``; otherwise a
  stratified, seeded split (:func:`split`).
* A flat folder with a CSV of ``image,label`` rows (a header row ``image,label`` is allowed), the
  image paths relative to the CSV's folder.

Mistakes in the data are :class:`~dlwp_models.errors.DataError` naming the folder or file.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..models.classifiers.categories import imagenet_wnids

__all__ = ["Labelled", "files_under", "read_labelled", "read_train_val", "split", "model_indices"]

_WNID = re.compile(r"n\d{8}\Z")


@dataclass(frozen=True)
class Labelled:
    """Photos and their classes: ``samples`` are ``(path, index into classes)``."""

    classes: tuple[str, ...]
    samples: tuple[tuple[Path, int], ...]
    source: str

    def counts(self) -> list[int]:
        """Photos per class, in class order."""
        counts = [0] * len(self.classes)
        for _, label in self.samples:
            counts[label] += 1
        return counts

    def only(self, keep: Sequence[int], source: str) -> Labelled:
        """The samples at positions ``keep``, same classes."""
        return Labelled(self.classes, tuple(self.samples[i] for i in keep), source)

    def without(self, paths: set[Path]) -> Labelled:
        """The samples whose path is not in ``paths`` (files found unusable)."""
        return Labelled(self.classes, tuple(s for s in self.samples if s[0] not in paths), self.source)

    def summary(self) -> dict:
        """What a model card and a weight set's meta say about the data."""
        return {"source": self.source, "images": len(self.samples), "classes": dict(zip(self.classes, self.counts()))}


def files_under(folder: Path) -> list[Path]:
    """Every regular, non-hidden file under ``folder`` (hidden folders skipped), sorted: the photos
    of a class folder, of a calibration folder."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_labelled(path: str | Path, *, labels_csv: str | Path | None = None) -> Labelled:
    """The labelled photos in ``path``: one folder per class, or with ``labels_csv`` a CSV of
    ``image,label`` rows."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; give a folder with one sub-folder of photos per class.")
    if labels_csv is not None:
        return _read_csv(root, Path(labels_csv))
    folders = _class_folders(root)
    if not folders:
        raise DataError(
            f"{root} has no class folders; put the photos of each class in a folder named after the class "
            f"({root}/<class>/<photo>), or give a CSV of image,label rows."
        )
    samples: list[tuple[Path, int]] = []
    for label, folder in enumerate(folders):
        files = files_under(folder)
        if not files:
            raise DataError(f"class folder {folder} has no photos; add some or remove the folder.")
        samples += [(file, label) for file in files]
    return Labelled(tuple(f.name for f in folders), tuple(samples), str(root))


def _read_csv(root: Path, table: Path) -> Labelled:
    try:
        with open(table, newline="", encoding="utf-8") as fh:
            rows = [row for row in csv.reader(fh) if row and any(cell.strip() for cell in row)]
    except OSError as exc:
        raise DataError(f"cannot read the labels CSV {table}: {exc.strerror or exc}.") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{table} is not a UTF-8 CSV of image,label rows ({exc}).") from None
    if rows and [cell.strip().lower() for cell in rows[0]] == ["image", "label"]:
        rows = rows[1:]
    pairs: list[tuple[Path, str]] = []
    for number, row in enumerate(rows, start=1):
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{table}, row {number}: expected two cells, image,label; got {row!r:.80}.")
        file = (table.parent / row[0].strip()).resolve()
        if not file.is_file():
            raise DataError(f"{table}, row {number}: {row[0].strip()!r} is not a file under {table.parent}.")
        pairs.append((file, row[1].strip()))
    if not pairs:
        raise DataError(f"{table} lists no photos; give one image,label row per photo.")
    classes = tuple(sorted({label for _, label in pairs}))
    index = {name: i for i, name in enumerate(classes)}
    return Labelled(classes, tuple((file, index[label]) for file, label in pairs), f"{root} ({table.name})")


def read_train_val(path: str | Path, *, val_fraction: float, seed: int) -> tuple[Labelled, Labelled, str]:
    """Training and validation photos from ``path``: its ``train/`` and ``val/`` folders when it has
    both (with the same classes), else a stratified split of its class folders. The third value
    says which, for the log."""
    root = Path(path)
    if (root / "train").is_dir() and (root / "val").is_dir():
        train, val = read_labelled(root / "train"), read_labelled(root / "val")
        if train.classes != val.classes:
            only = sorted(set(train.classes) ^ set(val.classes))
            raise DataError(
                f"{root}/train and {root}/val must have the same class folders; only one of them has "
                f"{', '.join(only[:5])}."
            )
        return train, val, f"{root}/train and {root}/val"
    data = read_labelled(root)
    train, val = split(data, val_fraction, seed)
    return train, val, f"a stratified {val_fraction:g} validation split of {root} (seed {seed})"


def split(data: Labelled, val_fraction: float, seed: int) -> tuple[Labelled, Labelled]:
    """A stratified split: about ``val_fraction`` of each class's photos (at least one) for
    validation, chosen by ``seed``; every class keeps at least one photo for training."""
    if not 0 < val_fraction < 1:
        raise DataError(f"the validation fraction must be between 0 and 1, got {val_fraction:g}.")
    train: list[int] = []
    val: list[int] = []
    rng = random.Random(seed)
    for label, name in enumerate(data.classes):
        members = [i for i, (_, c) in enumerate(data.samples) if c == label]
        if len(members) < 2:
            raise DataError(
                f"too little data for the split: class {name!r} has {len(members)} photo; each class needs at "
                "least 2 (one to train on, one to validate). Add photos, or give train/ and val/ folders."
            )
        rng.shuffle(members)
        n_val = min(len(members) - 1, max(1, round(len(members) * val_fraction)))
        val += members[:n_val]
        train += members[n_val:]
    return data.only(sorted(train), f"{data.source} (train)"), data.only(sorted(val), f"{data.source} (val)")


def model_indices(classes: Sequence[str], categories: Sequence[str], source: str) -> list[int]:
    """For each class name of the data, the index of the model's output it means: the model's own
    label, or for a model with ImageNet-1K's 1000 classes a WordNet id (``n01440764``)."""
    index = {name: i for i, name in enumerate(categories)}
    if all(name in index for name in classes):
        return [index[name] for name in classes]
    if len(categories) == 1000 and all(_WNID.match(name) for name in classes):
        wnids = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
        unknown = [name for name in classes if name not in wnids]
        if not unknown:
            return [wnids[name] for name in classes]
    else:
        unknown = [name for name in classes if name not in index]
    raise DataError(
        f"{source}: the model has no class named {', '.join(repr(u) for u in unknown[:3])}"
        f"{f' (and {len(unknown) - 3} more)' if len(unknown) > 3 else ''}. Name the class folders (or CSV "
        f"labels) after the model's labels, e.g. {', '.join(repr(c) for c in list(categories)[:3])}"
        f"{', or after ImageNet WordNet ids (n01440764 ...)' if len(categories) == 1000 else ''}."
    )

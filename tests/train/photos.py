"""Generated labelled photos for the fine-tuning and evaluation tests: a few classes that differ in
colour and texture (flat colours with noise, stripes), JPEGs of varied sizes, made with a seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: class name -> mean colour (None: black and white stripes)
CLASSES = {"blue": (40, 60, 200), "green": (40, 180, 60), "red": (200, 40, 40), "stripes": None}


def photo(rng: np.random.Generator, colour: tuple[int, int, int] | None) -> Image.Image:
    height, width = int(rng.integers(100, 160)), int(rng.integers(120, 200))
    if colour is None:
        pixels = np.zeros((height, width, 3), np.uint8)
        pixels[:, :: 2 + int(rng.integers(0, 2))] = 230
        pixels = np.clip(pixels + rng.integers(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)
    else:
        pixels = np.clip(np.array(colour) + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def make_photos(root: Path, counts: dict[str, int], *, seed: int = 0, classes: dict | None = None) -> Path:
    """``root/<split>/<class>/<i>.jpg`` for each ``split: count`` of ``counts`` (a split named ""
    puts the class folders in ``root`` itself)."""
    rng = np.random.default_rng(seed)
    for split, count in counts.items():
        for name, colour in (classes or CLASSES).items():
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                photo(rng, colour).save(folder / f"{i}.jpg", quality=90)
    return root

"""A classifier weight set's labels: torchvision's ImageNet-1K categories, or the manifest's own."""

from __future__ import annotations

from functools import cache

from ...errors import ManifestError
from ...weights.manifest import WeightSet

__all__ = ["categories_of", "IMAGENET1K", "imagenet_wnids"]

IMAGENET1K = "imagenet1k"  # meta "categories": torchvision's ImageNet-1K labels (its weights metadata)
_IMAGENET1K_REFERENCE = "ResNet50_Weights.IMAGENET1K_V1"  # where they are read when no enum is named


@cache
def _torchvision_categories(reference: str) -> tuple[str, ...]:
    from torchvision.models import get_weight

    try:
        categories = get_weight(reference).meta.get("categories")
    except (ValueError, KeyError, AttributeError):
        categories = None
    return tuple(categories) if categories else ()


def categories_of(weights: WeightSet) -> list[str] | None:
    """A weight set's labels: ``meta.categories`` is ``"imagenet1k"`` (torchvision's ImageNet-1K
    labels, read from its weights metadata) or a list of strings; None when it is absent."""
    value = weights.meta.get("categories")
    if value is None:
        return None
    where = f"{weights.source}: weight set {weights.name!r}.meta"
    if value == IMAGENET1K:
        reference = weights.meta.get("torchvision_weights", _IMAGENET1K_REFERENCE)
        labels = _torchvision_categories(str(reference))
        if len(labels) != 1000:
            raise ManifestError(
                f"{where}.torchvision_weights: {reference!r} is not a torchvision weights "
                "enum with the 1000 ImageNet-1K categories (this torchvision has "
                f"{len(labels) or 'none'}). Fix that field of the manifest."
            )
        return list(labels)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ManifestError(
        f"{where}.categories: expected {IMAGENET1K!r} or a list of label strings, got "
        f"{value!r:.80}. Fix that field of the manifest."
    )


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """ImageNet-1K's WordNet ids (``n01440764`` …), in class order: the names of the folders of
    ImageNet's training and validation sets. Class ``i`` of the ImageNet weights is the ``i``-th
    id in sorted order (the order ImageNet's folders sort in), which the bundled list holds."""
    from importlib.resources import files

    text = files(__package__).joinpath("imagenet1k_wnids.txt").read_text(encoding="ascii")
    return tuple(text.split())

"""The classifier entrypoints' docstrings: what ``torch.hub.help`` shows for each."""

from __future__ import annotations

from collections.abc import Sequence

from ...weights.manifest import WeightSet
from .architectures import arch_of

__all__ = ["docstring"]


def _weights_lines(model: str, sets: Sequence[WeightSet]) -> list[str]:
    lines = []
    for ws in (w for w in sets if w.model == model):
        meta, t = ws.meta, ws.transforms
        parts = [f"{ws.tag:<13}", "(default)" if ws.default else "         "]
        if "acc@1" in meta and "acc@5" in meta:
            parts.append(f"acc@1 {meta['acc@1']:.3f}  acc@5 {meta['acc@5']:.3f}")
        if "file_size_mb" in meta:
            parts.append(f"{meta['file_size_mb']:.1f} MB")
        if "resize" in t and "crop" in t:
            parts.append(f"resize {t['resize']}, crop {t['crop']}")
        lines.append("        " + "  ".join(parts))
    return lines or ["        (none found in weights/manifest.json)"]


def docstring(model: str, sets: Sequence[WeightSet]) -> str:
    """The entrypoint docstring of classifier ``model`` (``torch.hub.help``), listing ``sets``."""
    arch = arch_of(model)
    book = " The network chapter 2 of the book runs." if model == "resnet101" else ""
    extra = ""
    if model == "inception_v3":
        extra = (
            " With weights, transform_input=True unless given; aux_logits=False drops the\n"
            "            auxiliary head after loading."
        )
    return f"""{arch.title} ImageNet classifier: torchvision's architecture ({arch.reference}).{book}

    Returns a ``torchvision.models.{arch.cls_name}`` that also carries ``weights`` (the weight set, or
    None), ``transforms`` (the weights' evaluation transform), ``categories`` (the 1000 ImageNet
    labels) and ``predict(inputs, topk=5)`` (top-k ``(label, percent)`` pairs, as in the book).
    With weights it is in eval mode; without, randomly initialised (still with the default set's
    transforms and categories).

    Weight sets (ImageNet-1K validation accuracy, %):
{chr(10).join(_weights_lines(model, sets))}

    Args:
        pretrained (bool): load the default weight set (IMAGENET1K_V1, the book's weights).
            Default False.
        weights (str | None): a tag ("IMAGENET1K_V2"), a full name ("{model}.imagenet1k_v1") or
            "DEFAULT". Giving pretrained=True and a different set is an error. For one-off
            sharing without a manifest entry: a local checkpoint path, or an https URL together
            with sha256= (any head width; labels only when it has 1000 outputs). Default None.
        progress (bool): show a download progress bar. Default True.
        map_location: where the loaded tensors go, as for ``torch.load`` (e.g. "cuda"). Default
            None (CPU).
        sha256 (str | None): the full sha256 of the file when ``weights`` is a URL (required
            then, refused otherwise).
        **kwargs: passed to ``torchvision.models.{arch.cls_name}``. With weights, num_classes must
            match them (1000).{extra}

    Example::

        model = torch.hub.load("org/dlwp", "{model}", pretrained=True)
        model.predict("bobby.jpg", topk=5)     # [('golden retriever', 96.3), ...]
        str(model.predict("bobby.jpg"))        # the same, as a table (what print shows)
    """

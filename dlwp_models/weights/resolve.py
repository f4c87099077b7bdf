"""The one reading of an entrypoint's ``pretrained``, ``weights`` and ``sha256`` arguments: which
weight set they ask for, which single file (one-off sharing without a manifest entry), or none.

``weights`` may be a tag (``"IMAGENET1K_V2"``), a full name (``"resnet101.imagenet1k_v1"``),
``"DEFAULT"``, a :class:`~.manifest.WeightSet`, one of torchvision's weights enum members
(``ResNet101_Weights.IMAGENET1K_V2``), a local checkpoint path, or an http(s) URL together with
``sha256=``. Nothing here downloads or reads a weight file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from ..errors import WeightsNotFoundError
from .manifest import FileSpec, WeightSet, get_weights

__all__ = ["Choice", "resolve"]

_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


class Choice(NamedTuple):
    """What the arguments ask for: a manifest weight set, a one-off file to fetch (a URL pinned
    by sha256), a caller's own local file, or nothing (random weights)."""

    weights: WeightSet | None = None
    remote: FileSpec | None = None
    local: Path | None = None

    @property
    def is_random(self) -> bool:
        return self.weights is None and self.remote is None and self.local is None


def resolve(model: str, *, pretrained: Any, weights: Any, sha256: str | None = None, files: bool = True) -> Choice:
    """Read the arguments once. ``files`` says whether ``model`` takes one-off checkpoint files
    (paths, URLs); without it ``weights`` must name a weight set."""
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be True or False, got {pretrained!r}")
    if files:
        choice = _one_off_file(weights, model=model, sha256=sha256)
        if choice is not None:
            return choice
    elif sha256 is not None:
        raise ValueError(
            f"{model} takes no sha256=: its weights come only from weight sets, which carry their own pins."
        )
    if weights is None:
        return Choice(get_weights("DEFAULT", model)) if pretrained else Choice()
    chosen = get_weights(_weight_set_name(model, weights), model)
    if pretrained and not chosen.default:
        default = get_weights("DEFAULT", model)
        raise ValueError(
            f"pretrained=True asks for {model}'s default weights {default.name!r}, but weights="
            f"{weights!r} names {chosen.name!r}. Pass only weights={chosen.tag!r} (or only pretrained=True)."
        )
    return Choice(chosen)


def _weight_set_name(model: str, weights: Any) -> str | WeightSet:
    """A weight-set name or record; torchvision's own enum members are accepted as their tag."""
    if isinstance(weights, (str, WeightSet)):
        return weights
    if hasattr(weights, "url") and hasattr(weights, "meta") and isinstance(getattr(weights, "name", None), str):
        chosen = get_weights(weights.name, model)
        expected = chosen.meta.get("torchvision_weights")
        if expected is not None and expected != str(weights):
            raise ValueError(
                f"{model}: weights={weights} are torchvision's weights of another model; "
                f"expected {expected} (or the tag {chosen.tag!r})."
            )
        return chosen
    raise TypeError(
        f"{model}: weights must be a weight-set tag such as 'IMAGENET1K_V1', a full name, "
        f"'DEFAULT', a checkpoint path or an https URL with sha256=; got {weights!r}."
    )


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.lower().endswith(_CHECKPOINT_SUFFIXES)


def _one_off_file(weights: Any, *, model: str, sha256: str | None) -> Choice | None:
    """The file ``weights`` names for one-off sharing, or None when it names a weight set (or is
    None).

    * an ``https://`` (or ``http://``) URL, which must come with ``sha256=`` (64 hex digits): it is
      fetched like any pinned file (verified, cached, resumable);
    * a local path (str or PathLike). A string counts as a path when it has a separator or a
      checkpoint extension, or names an existing file and no weight set of ``model``.
    """
    if isinstance(weights, str) and "://" in weights:
        scheme = urlsplit(weights).scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(
                f"weights={weights!r}: only http(s) URLs are fetched (plain http only with sha256=, "
                "which it always needs); for a local file pass its path."
            )
        if not sha256:
            raise ValueError(
                f"weights={weights!r} is a URL without sha256=: anyone able to change that file could change "
                "your model, so a URL is only loaded pinned by its hash. Pass sha256='<64 hex digits>' "
                "(what `sha256sum FILE` prints for the file you mean to share)."
            )
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}.")
        base = re.sub(r"[^A-Za-z0-9._-]", "_", unquote(Path(urlsplit(weights).path).name)).lstrip(".") or "weights.pth"
        return Choice(
            remote=FileSpec(filename=f"url-{sha256.lower()[:16]}-{base}", urls=(weights,), sha256=sha256.lower())
        )
    if sha256 is not None:
        raise ValueError(
            "sha256= applies only to weights given as a URL; a weight set carries its own pins "
            "and a local file is yours."
        )
    if weights is None or isinstance(weights, WeightSet):
        return None
    if isinstance(weights, str) and not _looks_like_path(weights):
        if not os.path.isfile(os.path.expanduser(weights)):
            return None
        try:
            get_weights(weights, model)
            return None  # a weight-set name wins over a same-named file
        except WeightsNotFoundError:
            pass
    elif not isinstance(weights, (str, os.PathLike)):
        return None  # not a path: the weight-set checks report it
    path = Path(os.fspath(weights)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights={os.fspath(weights)!r} is not an existing file. Pass the path of a state dict "
            f"(.pth), an https URL with sha256=, or a weight-set tag of {model} (see list_weights({model!r}))."
        )
    return Choice(local=path)

"""What every entrypoint does before its architecture-specific part: resolve which weight set the
arguments ask for (or which single file, for one-off sharing), and fetch its files."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ._errors import WeightsNotFoundError
from ._fetch import fetch, fetch_file
from ._manifest import FileSpec, WeightSet, get_weights

__all__ = ["resolve_weights", "fetch_for", "weights_file"]

_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def resolve_weights(model: str, *, pretrained: bool, weights: "str | WeightSet | None") -> WeightSet | None:
    """The weight set asked for: ``weights`` (tag, full name or "DEFAULT"), else the default when
    ``pretrained``, else None. Both ``pretrained=True`` and a non-default ``weights`` is an error."""
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be True or False, got {pretrained!r}")
    if weights is None:
        return get_weights("DEFAULT", model) if pretrained else None
    chosen = get_weights(weights, model)
    if pretrained and not chosen.default:
        default = get_weights("DEFAULT", model)
        raise ValueError(
            f"pretrained=True asks for {model}'s default weights {default.name!r}, but weights="
            f"{weights!r} names {chosen.name!r}. Pass only weights={chosen.tag!r} (or only pretrained=True).")
    return chosen


def fetch_for(weights: WeightSet, expected_format: str, *, progress: bool) -> dict[str, Path]:
    """Fetch a weight set's files after checking it is in the format the caller can read."""
    if weights.format != expected_format:
        raise ValueError(f"weight set {weights.name!r} has format {weights.format!r}, but this model "
                         f"reads {expected_format!r}; fix the entry's \"format\" in {weights.source}.")
    return fetch(weights, progress=progress)


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.lower().endswith(_CHECKPOINT_SUFFIXES)


def weights_file(weights: Any, *, model: str, sha256: str | None = None, progress: bool = True) -> Path | None:
    """The file ``weights`` names for one-off sharing without a manifest entry, or None when it
    names a weight set (or is None).

    * an ``https://`` (or ``http://``) URL, which must come with ``sha256=`` (64 hex digits): it is
      fetched like any pinned file (verified, cached, resumable);
    * a local path (str or PathLike). A string counts as a path when it has a separator or a
      checkpoint extension, or names an existing file and no weight set of ``model``.
    """
    if isinstance(weights, str) and "://" in weights:
        scheme = urlsplit(weights).scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"weights={weights!r}: only http(s) URLs are fetched (plain http only with sha256=, "
                             "which it always needs); for a local file pass its path.")
        if not sha256:
            raise ValueError(
                f"weights={weights!r} is a URL without sha256=: anyone able to change that file could change "
                "your model, so a URL is only loaded pinned by its hash. Pass sha256='<64 hex digits>' "
                "(what `sha256sum FILE` prints for the file you mean to share).")
        if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}.")
        base = re.sub(r"[^A-Za-z0-9._-]", "_", unquote(Path(urlsplit(weights).path).name)).lstrip(".") or "weights.pth"
        spec = FileSpec(filename=f"url-{sha256.lower()[:16]}-{base}", urls=(weights,), sha256=sha256.lower())
        return fetch_file(spec, progress=progress)
    if sha256 is not None:
        raise ValueError("sha256= applies only to weights given as a URL; a weight set carries its own pins "
                         "and a local file is yours.")
    if weights is None or isinstance(weights, WeightSet):
        return None
    if isinstance(weights, str) and not _looks_like_path(weights):
        if not os.path.isfile(os.path.expanduser(weights)):
            return None
        try:
            get_weights(weights, model)
            return None                        # a weight-set name wins over a same-named file
        except WeightsNotFoundError:
            pass
    elif not isinstance(weights, (str, os.PathLike)):
        return None                            # not a path: the caller's own checks report it
    path = Path(os.fspath(weights)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights={os.fspath(weights)!r} is not an existing file. Pass the path of a state dict "
            f"(.pth), an https URL with sha256=, or a weight-set tag of {model} (see list_weights({model!r})).")
    return path

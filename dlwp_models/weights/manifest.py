"""The weights manifest: parsing, validation, layering and look-up of weight sets.

`weights/manifest.json` at the top of the repository is the single source of truth for where weight
files come from and how they are checked: a checkout (or a hub repository, or an editable install)
reads it in place, and an installed package carries a byte-for-byte copy of it (``setup.cfg`` maps
the ``weights/`` folder into the package as ``dlwp_models._bundled``). Extra manifests named in
``DLWP_MANIFEST`` (``path[:path...]``) are layered over it in order; an entry with the same ``name``
replaces the earlier one. A file with no URL and no parts, pinned by full sha256, lies beside the
manifest that names it (a fine-tuning run's ``runs/NAME/manifest.json`` and its weights file).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ManifestError, WeightsNotFoundError

__all__ = [
    "FileSpec",
    "WeightSet",
    "list_weights",
    "get_weights",
    "bundled_manifest_path",
    "register_format",
    "formats",
]

SCHEMA_VERSION = 1
#: the weight formats a manifest may name: each model family registers its own
#: (:func:`dlwp_models.models.registry.register_family`; the package imports every family first)
_FORMATS: dict[str, None] = {}
_HEX = re.compile(r"[0-9a-f]+\Z")
_ENTRY_KEYS = {"name", "model", "default", "format", "files", "transforms", "meta"}
_FILE_KEYS = {"filename", "urls", "sha256", "sha256_prefix", "git_blob_sha1", "size", "parts"}


_PACKAGE = Path(__file__).resolve().parent.parent


def register_format(name: str) -> None:
    """Accept weight sets of format ``name`` (a model family that reads them registers it)."""
    _FORMATS[name] = None


def formats() -> tuple[str, ...]:
    """The registered weight formats."""
    return tuple(_FORMATS)


def checkout_manifest_path() -> Path | None:
    """The repository's ``weights/manifest.json`` when dlwp runs from a checkout (a hub
    repository, an editable install), else None."""
    path = _PACKAGE.parent / "weights" / "manifest.json"
    return path if path.is_file() and (_PACKAGE.parent / "hubconf.py").is_file() else None


def bundled_manifest_path() -> Path:
    """The manifest that ships with this copy of dlwp: the checkout's own ``weights/manifest.json``
    (so a fork's published entries are what its users get), else the installed copy."""
    return checkout_manifest_path() or _PACKAGE / "_bundled" / "manifest.json"


@dataclass(frozen=True)
class FileSpec:
    """One file of a weight set: where to get it and how to check it."""

    filename: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    sha256_prefix: str | None = None
    git_blob_sha1: str | None = None
    size: int | None = None
    parts: tuple[FileSpec, ...] = ()
    #: the most bytes a download of a file without a pinned ``size`` may bring, when its weight
    #: set's meta says how large it is (``file_size_mb``); not a pin, so not in :meth:`integrity`
    budget: int | None = field(default=None, compare=False)
    #: where the file lies when its manifest gives no URL and no parts but pins it by full sha256:
    #: beside the manifest (``<manifest folder>/<filename>``, e.g. a fine-tuning run's output); it
    #: is copied into the cache and verified like a download. Not a pin, so not in :meth:`integrity`
    beside: Path | None = field(default=None, compare=False)

    @property
    def has_own_hash(self) -> bool:
        """True when the spec pins the (joined) file's bytes itself, not only through its parts."""
        return bool(self.sha256 or self.sha256_prefix or self.git_blob_sha1)

    @property
    def strongly_pinned(self) -> bool:
        """True when a full sha256 or git blob sha1 pins the bytes (plain http is then safe)."""
        return bool(self.sha256 or self.git_blob_sha1)

    def integrity(self) -> dict[str, Any]:
        """The integrity fields that are set, as a plain dict (what a cache record stores). A file
        pinned only through its parts records the parts' integrity."""
        fields = {
            "sha256": self.sha256,
            "sha256_prefix": self.sha256_prefix,
            "git_blob_sha1": self.git_blob_sha1,
            "size": self.size,
        }
        record: dict[str, Any] = {key: value for key, value in fields.items() if value is not None}
        if not self.has_own_hash:
            record["parts"] = [part.integrity() for part in self.parts]
        return record


@dataclass(frozen=True)
class WeightSet:
    """A named set of weights: files by role, the transform settings and metadata that go with them."""

    name: str
    model: str
    default: bool
    format: str
    files: Mapping[str, FileSpec]
    transforms: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    @property
    def tag(self) -> str:
        """The part after ``<model>.``, upper-cased as torchvision spells it (e.g. ``IMAGENET1K_V1``)."""
        return self.name.split(".", 1)[1].upper()

    def __repr__(self) -> str:
        return f"WeightSet({self.name!r}, format={self.format!r}, files={sorted(self.files)})"

    def __reduce__(self):  # the read-only mapping proxies neither pickle nor deep-copy themselves
        return (
            _weight_set,
            (
                self.name,
                self.model,
                self.default,
                self.format,
                dict(self.files),
                dict(self.transforms),
                dict(self.meta),
                self.source,
            ),
        )


def _weight_set(
    name: str, model: str, default: bool, fmt: str, files: dict, transforms: dict, meta: dict, source: str
) -> WeightSet:
    return WeightSet(
        name, model, default, fmt, MappingProxyType(files), MappingProxyType(transforms), MappingProxyType(meta), source
    )


# --------------------------------------------------------------------------- parsing


def _fail(source: str, where: str, message: str) -> ManifestError:
    return ManifestError(f"{source}: {where}: {message}. Fix that field of the manifest.")


def _parse_file_spec(raw: Any, source: str, where: str) -> FileSpec:
    if not isinstance(raw, dict):
        raise _fail(source, where, f"a file spec must be an object, got {type(raw).__name__}")
    unknown = set(raw) - _FILE_KEYS
    if unknown:
        raise _fail(source, f"{where}.{sorted(unknown)[0]}", f"unknown field (known: {sorted(_FILE_KEYS)})")

    filename = raw.get("filename")
    if not isinstance(filename, str) or not filename:
        raise _fail(source, f"{where}.filename", "missing or not a string")
    if "/" in filename or "\\" in filename or ".." in filename or filename.startswith(".") or "\0" in filename:
        raise _fail(
            source, f"{where}.filename", f"{filename!r} is not a plain file name (no '/', '\\', '..' or leading '.')"
        )

    urls = raw.get("urls", [])
    if not isinstance(urls, list) or not all(isinstance(u, str) and u for u in urls):
        raise _fail(source, f"{where}.urls", "must be a list of URL strings")

    def hex_field(key: str, length: int | None, minimum: int | None = None) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        ok = isinstance(value, str) and _HEX.match(value.lower()) is not None
        if ok and length is not None:
            ok = len(value) == length
        if ok and minimum is not None:
            ok = minimum <= len(value) <= 64
        if not ok:
            want = f"{length} hex digits" if length else f"at least {minimum} hex digits"
            raise _fail(source, f"{where}.{key}", f"expected {want}, got {value!r}")
        return value.lower()

    sha256 = hex_field("sha256", 64)
    prefix = hex_field("sha256_prefix", None, minimum=8)
    blob = hex_field("git_blob_sha1", 40)
    if sha256 and prefix and not sha256.startswith(prefix):
        raise _fail(source, f"{where}.sha256_prefix", f"{prefix!r} is not a prefix of sha256 {sha256!r}")

    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise _fail(source, f"{where}.size", f"expected a non-negative integer, got {size!r}")

    parts_raw = raw.get("parts", [])
    if not isinstance(parts_raw, list):
        raise _fail(source, f"{where}.parts", "must be a list of file specs")
    parts = tuple(_parse_file_spec(p, source, f"{where}.parts[{i}]") for i, p in enumerate(parts_raw))

    beside = None
    if not urls and not parts:
        if not sha256:
            raise _fail(
                source,
                f"{where}.urls",
                "a file needs at least one URL, a list of parts, or a full sha256 with the file beside the manifest",
            )
        beside = Path(os.path.abspath(source)).parent / filename  # the manifest's own folder
    if not (sha256 or prefix or blob) and (urls or not parts):
        # a parts-only file is pinned by its parts; anything downloaded whole needs its own hash
        raise _fail(source, where, "no integrity field: give sha256, sha256_prefix or git_blob_sha1")
    return FileSpec(filename, tuple(urls), sha256, prefix, blob, size, parts, beside=beside)


def _parse_entry(raw: Any, source: str, index: int) -> WeightSet:
    if not isinstance(raw, dict):
        raise _fail(source, f"weights[{index}]", "an entry must be an object")
    name = raw.get("name")
    where = f"weight set {name!r}" if isinstance(name, str) else f"weights[{index}]"
    unknown = set(raw) - _ENTRY_KEYS
    if unknown:
        raise _fail(source, f"{where}.{sorted(unknown)[0]}", f"unknown field (known: {sorted(_ENTRY_KEYS)})")
    model = raw.get("model")
    if not isinstance(model, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", model):
        raise _fail(source, f"{where}.model", f"expected a model name, got {model!r}")
    if not isinstance(name, str) or not name.lower().startswith(model.lower() + ".") or name.endswith("."):
        raise _fail(source, f"{where}.name", f"expected '<model>.<tag>' with model {model!r}, got {name!r}")
    default = raw.get("default", False)
    if not isinstance(default, bool):
        raise _fail(source, f"{where}.default", f"expected true or false, got {default!r}")
    fmt = raw.get("format")
    if fmt not in _FORMATS:
        raise _fail(source, f"{where}.format", f"expected one of {list(_FORMATS)}, got {fmt!r}")
    files_raw = raw.get("files")
    if not isinstance(files_raw, dict) or not files_raw:
        raise _fail(source, f"{where}.files", "expected an object of file specs keyed by role")
    files = {role: _parse_file_spec(spec, source, f"{where}.files.{role}") for role, spec in files_raw.items()}
    for key in ("transforms", "meta"):
        if not isinstance(raw.get(key, {}), dict):
            raise _fail(source, f"{where}.{key}", "expected an object")
    _budget_from_meta(files, raw.get("meta", {}))
    return WeightSet(
        name=name,
        model=model,
        default=default,
        format=fmt,
        files=MappingProxyType(files),
        transforms=MappingProxyType(dict(raw.get("transforms", {}))),
        meta=MappingProxyType(dict(raw.get("meta", {}))),
        source=source,
    )


def _budget_from_meta(files: dict[str, FileSpec], meta: dict) -> None:
    """A one-file weight set whose file has no pinned size but whose meta says its size in MiB
    (``file_size_mb``, rounded by its publisher): that size, 1 % and 1 MiB over, bounds a download,
    instead of the 8 GiB that a file of unknown size may take."""
    mb = meta.get("file_size_mb")
    if len(files) != 1 or isinstance(mb, bool) or not isinstance(mb, (int, float)) or not 0 < mb < 2**40:
        return
    ((role, spec),) = files.items()
    if spec.size is None and not spec.parts:
        files[role] = replace(spec, budget=int(mb * 2**20 * 1.01) + 2**20)


def parse_manifest(data: Any, source: str) -> list[WeightSet]:
    """Validate a decoded manifest and return its weight sets; errors name the entry and field."""
    if not isinstance(data, dict):
        raise _fail(source, "top level", "expected an object with 'schema_version' and 'weights'")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise _fail(source, "schema_version", f"expected {SCHEMA_VERSION}, got {data.get('schema_version')!r}")
    entries = data.get("weights")
    if not isinstance(entries, list):
        raise _fail(source, "weights", "expected a list of weight sets")
    sets = [_parse_entry(raw, source, i) for i, raw in enumerate(entries)]
    seen: set[str] = set()
    for ws in sets:
        if ws.name.lower() in seen:
            raise _fail(source, f"weight set {ws.name!r}.name", "appears twice in this manifest")
        seen.add(ws.name.lower())
    return sets


def read_manifest(path: str | os.PathLike) -> list[WeightSet]:
    """Read and validate one manifest file."""
    data = load_manifest_data(path)
    try:
        return parse_manifest(data, str(path))
    except RecursionError:
        raise ManifestError(
            f"{path}: an entry is nested too deeply (parts within parts, ...) to be a "
            "manifest. Fix or replace the file."
        ) from None


#: the manifest of a weight-set folder (a fine-tune's output: this file and its weight files beside it)
FOLDER_MANIFEST = "manifest.json"


def read_folder_weight_set(folder: str | os.PathLike) -> WeightSet:
    """The one weight set of a weight-set folder (``<folder>/manifest.json``, its files beside it):
    what ``dlwp finetune`` writes and ``dlwp publish FOLDER`` shares."""
    path = Path(folder) / FOLDER_MANIFEST
    if not path.is_file():
        raise ManifestError(
            f"{folder} holds no {FOLDER_MANIFEST}: it is not a weight-set folder (the output folder of a "
            "finished `dlwp finetune`)."
        )
    sets = read_manifest(path)
    if len(sets) != 1:
        raise ManifestError(f"{path} holds {len(sets)} weight sets; a weight-set folder's manifest holds one.")
    return sets[0]


def load_manifest_data(path: str | os.PathLike) -> Any:
    """A manifest file's decoded JSON (not yet validated), with clear errors for I/O and syntax."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(
            f"cannot read manifest {path}: {exc.strerror or exc}. "
            "Check the path (DLWP_MANIFEST takes paths separated by ':')."
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc}). Fix the file's syntax.") from None
    except RecursionError:
        raise ManifestError(
            f"{path}: its JSON is nested too deeply to be a manifest (a manifest is a few "
            "levels deep). Fix or replace the file."
        ) from None
    return data


def manifest_paths() -> list[Path]:
    """The bundled manifest followed by those named in DLWP_MANIFEST, in layering order."""
    extra = [Path(p) for p in os.environ.get("DLWP_MANIFEST", "").split(os.pathsep) if p.strip()]
    return [bundled_manifest_path(), *extra]


def _stamp(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
        return str(path), st.st_mtime_ns, st.st_size
    except OSError:
        return str(path), -1, -1


@lru_cache(maxsize=32)
def _read_stamped(stamp: tuple[str, int, int]) -> tuple[WeightSet, ...]:
    return tuple(read_manifest(stamp[0]))


def read_manifest_cached(path: str | os.PathLike) -> list[WeightSet]:
    """:func:`read_manifest`, parsed once per version of the file (its size and modification
    time): the registry and the entrypoints' docstrings share one parse of the bundled manifest."""
    return list(_read_stamped(_stamp(Path(path))))


@lru_cache(maxsize=8)
def _registry_for(stamp: tuple[tuple[str, int, int], ...]) -> tuple[WeightSet, ...]:
    merged: dict[str, WeightSet] = {}
    for file_stamp in stamp:
        for ws in _read_stamped(file_stamp):
            merged.pop(ws.name.lower(), None)  # a replacement goes to the end, like a fresh entry
            merged[ws.name.lower()] = ws
    sets = tuple(merged.values())
    defaults: dict[str, list[str]] = {}
    for ws in sets:
        defaults.setdefault(ws.model, [])
        if ws.default:
            defaults[ws.model].append(ws.name)
    for model, names in defaults.items():
        if len(names) != 1:
            sources = ", ".join(str(p) for p, _, _ in stamp)
            found = ", ".join(names) if names else "none"
            raise ManifestError(
                f'model {model!r} must have exactly one weight set with "default": true across '
                f"the manifests ({sources}); found {found}. Mark exactly one as default."
            )
    return sets


def registry() -> tuple[WeightSet, ...]:
    """All weight sets after layering; re-read whenever a manifest file changes."""
    return _registry_for(tuple(_stamp(path) for path in manifest_paths()))


# --------------------------------------------------------------------------- look-up


def list_weights(model: str | None = None) -> list[WeightSet]:
    """All known weight sets, or those of one model, in manifest order."""
    sets = list(registry())
    if model is None:
        return sets
    return [ws for ws in sets if ws.model.lower() == model.lower()]


def get_weights(name: str | WeightSet, model: str | None = None) -> WeightSet:
    """Find a weight set by full name (``resnet101.imagenet1k_v1``), by tag when ``model`` is given
    (``IMAGENET1K_V2``), or ``"DEFAULT"``; case-insensitive."""
    if isinstance(name, WeightSet):
        ws = name
    else:
        if not isinstance(name, str) or not name:
            raise TypeError(f"weights must be a weight-set name or tag string, got {name!r}")
        key = name.lower()
        sets = registry()
        ws = None
        if model is not None and key == "default":
            ws = next((w for w in sets if w.model.lower() == model.lower() and w.default), None)
        if ws is None:
            ws = next((w for w in sets if w.name.lower() == key), None)
        if ws is None and model is not None:
            ws = next((w for w in sets if w.name.lower() == f"{model.lower()}.{key}"), None)
        if ws is None:
            candidates = list_weights(model) if model else list(sets)
            valid = (
                ", ".join(["DEFAULT", *(w.tag for w in candidates)] if model else (w.name for w in candidates))
                or "none"
            )
            what = f"for model {model!r}" if model else "in the manifests"
            raise WeightsNotFoundError(
                f"unknown weights {name!r} {what}; valid choices: {valid}. "
                "Use one of those, or add an entry through DLWP_MANIFEST."
            )
    if model is not None and ws.model.lower() != model.lower():
        raise ValueError(
            f"weights {ws.name!r} belong to model {ws.model!r}, not {model!r}; "
            f"expected weights of {model!r} (see list_weights({model!r}))."
        )
    return ws

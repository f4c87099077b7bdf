"""Sharing weights through GitHub release assets.

* :func:`publish_checkpoint`: a fine-tuned classifier checkpoint → a normalised state dict
  ``<model>-<tag>-<sha256[:8]>.pth`` uploaded to a release → a manifest entry ``<model>.<tag>``
  pinned by full sha256 and size, so collaborators get it with
  ``torch.hub.load("owner/dlwp:branch", "<model>", weights="<tag>")``.
* :func:`publish_weight_set`: a weight-set folder (``dlwp finetune``'s output) → its weight file
  uploaded to a release → its manifest entry, with the release URL, in the team's manifest.
* :func:`mirror_manifest`: re-host every file of a manifest unchanged as release assets and put
  the release URL first in each file's ``urls`` (upstream stays as the fallback).

Both are idempotent: an asset already there with the same sha256 is success.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import tempfile
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..errors import PublishError
from ..loading.checkpoints import load_state_dict_file, plain_state_dict
from ..models.classifiers import CLASSIFIERS, build_for_state_dict, categories_of
from ..safe_write import write_file
from ..weights.download import fetch_file
from ..weights.integrity import sha256_file
from ..weights.manifest import (
    WeightSet,
    checkout_manifest_path,
    get_weights,
    load_manifest_data,
    parse_manifest,
    read_folder_weight_set,
)
from .github import GitHubReleases, api_base

__all__ = ["publish_checkpoint", "publish_weight_set", "mirror_manifest", "normalise_checkpoint"]

log = logging.getLogger(__name__)

_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*\Z")


# --------------------------------------------------------------------------- checkpoints


def normalise_checkpoint(path: str | Path) -> OrderedDict[str, torch.Tensor]:
    """Read a checkpoint safely (weights only) and return its plain state dict (see
    :func:`~dlwp_models.loading.checkpoints.plain_state_dict`)."""
    raw = load_state_dict_file(path, map_location="cpu", mmap=False)
    return OrderedDict((k, v.detach().contiguous()) for k, v in plain_state_dict(raw, source=Path(path).name).items())


def _read_categories(path: Path, num_classes: int) -> list[str]:
    try:
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise PublishError(f"cannot read --categories {path}: {exc.strerror or exc}.") from None
    if len(labels) != num_classes:
        raise PublishError(
            f"--categories {path} has {len(labels)} labels, but the checkpoint's classifier "
            f"has {num_classes} outputs; give one label per line, in output order."
        )
    return labels


# --------------------------------------------------------------------------- manifests


def _load_manifest_json(path: Path) -> tuple[dict, list[WeightSet]]:
    """The manifest's JSON to edit and its weight sets; a broken manifest is refused, not edited."""
    if not path.exists():
        return {"schema_version": 1, "weights": []}, []
    data = load_manifest_data(path)
    return data, parse_manifest(data, str(path))


def _write_manifest_json(path: Path, data: dict) -> None:
    parse_manifest(data, str(path))  # never write a manifest that would not load
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else None  # keep it as readable as it was
    write_file(
        path,
        (json.dumps(data, indent=2) + "\n").encode("utf-8"),
        replace=True,
        mode=mode,
        doing=f"write the manifest {path.name}",
    )


def _manifest_to_edit(manifest: str | Path | None) -> Path:
    """``--manifest``, else the checkout's ``weights/manifest.json``; an installed dlwp has no
    manifest of its own to edit (its copy is replaced by the next install)."""
    if manifest:
        return Path(manifest)
    path = checkout_manifest_path()
    if path is None:
        raise PublishError(
            "this dlwp is installed, not a checkout, so it has no weights/manifest.json to edit; "
            "pass --manifest PATH (e.g. your fork's weights/manifest.json or a team manifest "
            "used through DLWP_MANIFEST)."
        )
    return path


def _release_download_url(api: GitHubReleases | None, repo: str, release: str, name: str) -> str:
    """Where an asset will be downloadable (github.com, or a GitHub Enterprise host)."""
    api_url = api.api if api else api_base()  # refuses credentials or plain http
    web = "https://github.com" if api_url == "https://api.github.com" else api_url.removesuffix("/api/v3")
    return f"{web}/{repo}/releases/download/{release}/{name}"


# --------------------------------------------------------------------------- publish


def publish_checkpoint(
    checkpoint: str | Path,
    *,
    model: str,
    tag: str,
    repo: str,
    release: str,
    manifest: str | Path | None = None,
    categories: str | Path | None = None,
    dry_run: bool = False,
) -> dict:
    """Publish a fine-tuned classifier checkpoint; returns the manifest entry (written unless
    ``dry_run``, which also skips the upload)."""
    if not _TAG.match(tag):
        raise PublishError(f"--tag must be letters, digits, '_' or '-', got {tag!r}.")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise PublishError(f"checkpoint {str(checkpoint)!r} does not exist; check the path.")
    manifest_path = _manifest_to_edit(manifest)
    state_dict = normalise_checkpoint(checkpoint)
    if model not in CLASSIFIERS:
        raise PublishError(f"--model must be one of the classifiers ({', '.join(CLASSIFIERS)}), got {model!r}.")
    net, num_classes = build_for_state_dict(model, state_dict, source=checkpoint.name)
    base = get_weights("DEFAULT", model)
    if categories is not None:
        labels = _read_categories(Path(categories), num_classes)
    elif num_classes == 1000:
        labels = categories_of(base)
    else:
        raise PublishError(
            f"the checkpoint has {num_classes} classes, so the base weights' labels do not "
            "apply; give --categories FILE with one label per line."
        )
    data, _ = _load_manifest_json(manifest_path)
    api = None if dry_run else GitHubReleases(repo)

    with tempfile.TemporaryDirectory(prefix="dlwp-publish-") as tmp:
        staging = Path(tmp) / "weights.pth"
        torch.save(net.state_dict(), staging)
        sha256 = sha256_file(staging)
        filename = f"{model}-{tag.lower()}-{sha256[:8]}.pth"
        size = staging.stat().st_size
        if api is None:
            url = _release_download_url(None, repo, release, filename)
        else:
            asset = api.upload(api.release(release), staging, name=filename, sha256=sha256)
            url = asset["browser_download_url"]

    entry = {
        "name": f"{model}.{tag.lower()}",
        "model": model,
        "default": False,
        "format": "torchvision",
        "files": {"state_dict": {"filename": filename, "urls": [url], "sha256": sha256, "size": size}},
        "transforms": copy.deepcopy(dict(base.transforms)),
        "meta": {
            "categories": labels,
            "num_classes": num_classes,
            "num_params": sum(p.numel() for p in net.parameters()),
            "base_weights": base.name,
            "provenance": f"published from {checkpoint.name} with `python -m dlwp_models publish` "
            f"on {datetime.now(timezone.utc):%Y-%m-%d}",
            "file_size_mb": round(size / 2**20, 3),
        },
    }
    if not dry_run:
        weights = [w for w in data["weights"] if str(w.get("name", "")).lower() != entry["name"]]
        data["weights"] = [*weights, entry]
        _write_manifest_json(manifest_path, data)
        log.info("wrote %s to %s", entry["name"], manifest_path)
    return entry


def publish_weight_set(
    folder: str | Path, *, repo: str, release: str, manifest: str | Path | None = None, dry_run: bool = False
) -> dict:
    """Publish a weight-set folder (what ``dlwp finetune`` writes: ``manifest.json`` and the weight
    file beside it): upload the file, verified against its pin, to ``release`` and add the folder's
    entry, unchanged but for the release URL, to ``manifest``. Returns the entry."""
    ws = read_folder_weight_set(folder)
    (role, spec), *more = ws.files.items()
    if more or spec.beside is None:
        raise PublishError(f"{ws.source}: a weight-set folder's entry has one file, beside the manifest.")
    cached = fetch_file(spec, progress=False)  # copied into the cache and checked against the pin
    manifest_path = _manifest_to_edit(manifest)
    data, _ = _load_manifest_json(manifest_path)
    entry = copy.deepcopy(next(e for e in load_manifest_data(ws.source)["weights"]))
    if dry_run:
        url = _release_download_url(None, repo, release, spec.filename)
    else:
        api = GitHubReleases(repo)
        url = api.upload(api.release(release), cached.path, name=spec.filename, sha256=cached.sha256)[
            "browser_download_url"
        ]
    entry["files"][role]["urls"] = [url]
    if not dry_run:
        data["weights"] = [w for w in data["weights"] if str(w.get("name", "")).lower() != ws.name.lower()] + [entry]
        _write_manifest_json(manifest_path, data)
        log.info("wrote %s to %s", ws.name, manifest_path)
    return entry


def mirror_manifest(*, repo: str, release: str, manifest: str | Path | None = None, progress: bool = True) -> list[str]:
    """Re-host every file of ``manifest`` (default: the bundled one) as an asset of ``release``,
    unchanged and verified, and put the release URL first in that file's ``urls``. Files published
    only as parts are uploaded joined (and gain the joined file's sha256 and size). Returns the
    file names now served from the release."""
    manifest_path = _manifest_to_edit(manifest)
    data, sets = _load_manifest_json(manifest_path)
    specs = {ws.name.lower(): ws for ws in sets}
    api = GitHubReleases(repo)
    target = api.release(release)
    done: list[str] = []
    for raw in data["weights"]:
        ws = specs[raw["name"].lower()]
        for role, spec in ws.files.items():
            cached = fetch_file(spec, progress=progress)  # verified, parts joined
            path, sha256 = cached.path, cached.sha256
            asset = api.upload(target, path, name=spec.filename, sha256=sha256)
            url = asset["browser_download_url"]
            raw_spec = raw["files"][role]
            raw_spec["urls"] = [url, *(u for u in raw_spec.get("urls", []) if u != url)]
            if not spec.has_own_hash:
                raw_spec["sha256"] = sha256
                raw_spec["size"] = path.stat().st_size
            done.append(spec.filename)
    _write_manifest_json(manifest_path, data)
    return done

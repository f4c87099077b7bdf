"""dlwp: the models of chapter 2 of *Deep Learning with PyTorch*, through PyTorch Hub.

Weight sets live in ``weights/manifest.json`` (plus any manifests named in ``DLWP_MANIFEST``);
:func:`list_weights` and :func:`get_weights` look them up, :func:`fetch` downloads and verifies
their files into ``torch.hub.get_dir()/checkpoints/dlwp``. The models are built by the
entrypoints of :mod:`dlwp_models.hub` (what ``hubconf.py`` exposes).

The package is layered; each folder imports only from the ones listed before it (design.md §2):
``errors`` and ``safe_write`` → ``weights`` → ``loading`` → ``inputs`` → ``models`` → ``hub`` →
``tasks`` → the applications (``batch``, ``serve``, ``export``, ``publish``) → ``cli``.
Importing the package registers every model family (:mod:`.models.registry`), so a manifest can
name their weight formats.
"""

from .errors import (
    DlwpError,
    DownloadError,
    ImageInputError,
    IncompatibleWeightsError,
    IntegrityError,
    ManifestError,
    MissingDependencyError,
    OfflineError,
    UnsafeFileError,
    WeightsNotFoundError,
)
from .inputs.predictions import Prediction
from .models.registry import families as _families
from .weights.download import fetch
from .weights.manifest import FileSpec, WeightSet, get_weights, list_weights

_families()  # each family registers itself, and its weight format, on import

__all__ = [
    "list_weights",
    "get_weights",
    "fetch",
    "WeightSet",
    "FileSpec",
    "Prediction",
    "DlwpError",
    "DownloadError",
    "ImageInputError",
    "IncompatibleWeightsError",
    "IntegrityError",
    "ManifestError",
    "MissingDependencyError",
    "OfflineError",
    "UnsafeFileError",
    "WeightsNotFoundError",
]
__version__ = "0.1.0"

"""The exceptions dlwp raises: one small hierarchy, each also a built-in exception, and the few
signals its layers pass to each other (a byte budget broken, a queue full, an HTTP answer).

Every exception class of the package is defined here (a module may keep a private one,
``_Name``, that never leaves it). Every message says what went wrong and ends with what to do
about it.
"""

from __future__ import annotations

import pickle

__all__ = [
    "DlwpError",
    "ManifestError",
    "WeightsNotFoundError",
    "DownloadError",
    "IntegrityError",
    "OfflineError",
    "UnsafeFileError",
    "IncompatibleWeightsError",
    "ImageInputError",
    "ImageNotFoundError",
    "ImageFetchError",
    "PublishError",
    "DataError",
    "TrainingError",
    "QuantizationError",
    "ExportError",
    "MissingDependencyError",
    "CacheWriteError",
    "ImagesTooSmallError",
    "ImageTooLargeError",
    "OutputExistsError",
    "NonFiniteOutputError",
    "UsageError",
    "InputListError",
    "ResultsFileError",
    "RayNotInstalledError",
    "HttpLimitError",
    "StallError",
    "BudgetExceededError",
    "ApiError",
    "QueueFull",
    "BatcherClosed",
    "first_line",
    "reason",
]


class DlwpError(Exception):
    """Base class of every error dlwp raises on purpose."""


class ManifestError(DlwpError, ValueError):
    """A weights manifest is malformed: the message names the file, the entry and the field."""


class WeightsNotFoundError(DlwpError, KeyError, LookupError):
    """No weight set matches the requested name or tag."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DownloadError(DlwpError, OSError):
    """A file could not be obtained from any of its sources (each is listed with its reason)."""


class IntegrityError(DlwpError, OSError):
    """Downloaded or cached bytes do not match the pinned size or hash."""


class OfflineError(DlwpError, FileNotFoundError):
    """DLWP_OFFLINE is set and a needed file is not in the cache."""


class UnsafeFileError(DlwpError, pickle.UnpicklingError):
    """A checkpoint or pickle holds something that is not allowed to be loaded."""


class IncompatibleWeightsError(DlwpError, ValueError):
    """A state dict does not fit the architecture (missing, unexpected or mis-shaped keys)."""


class ImageInputError(DlwpError, ValueError):
    """An input to predict/translate/caption is not a usable image."""


class ImageNotFoundError(DlwpError, FileNotFoundError):
    """An input image path does not exist."""


class ImageFetchError(DlwpError, OSError):
    """An input image URL could not be fetched (timeout, HTTP error, not an image)."""


class PublishError(DlwpError, RuntimeError):
    """Publishing to a GitHub release failed (API error, conflicting asset, missing token)."""


class ExportError(DlwpError, RuntimeError):
    """An export could not be written, or does not reproduce the eager model."""


class MissingDependencyError(DlwpError, ImportError):
    """An optional dependency a feature needs is not installed (the message names the extra)."""


class CacheWriteError(DownloadError):
    """The cache could not be written (full disk, read-only folder): no other source would help.
    ``read_only`` tells a folder that cannot be written from one that is full."""

    read_only = False


class ImagesTooSmallError(ImageInputError):
    """Some images of a caption call are too small to encode. Raised before any encoding;
    ``indices`` lists them (0-based, input order), so a caller can caption the others."""

    def __init__(self, message: str, indices: list[int]) -> None:
        super().__init__(message)
        self.indices = indices


class ImageTooLargeError(ImageInputError):
    """An image is too large to process within a memory guard (pixels after resizing)."""


class OutputExistsError(DlwpError, FileExistsError):
    """An output file exists and ``--overwrite`` was not given."""


class NonFiniteOutputError(DlwpError, ArithmeticError):
    """A model's output holds NaN or infinite values: its weights are damaged (the message names
    ``dlwp fetch --verify``)."""


class UsageError(DlwpError, ValueError):
    """Command-line arguments that do not fit together (the command exits 2, as argparse does)."""


class InputListError(DlwpError, ValueError):
    """A batch job's list of inputs (``@list.txt``, ``-``) cannot be read."""


class ResultsFileError(DlwpError, ValueError):
    """A batch job's records file cannot be written, or read back for ``--resume``."""


class DataError(DlwpError, ValueError):
    """A labelled data set (``dlwp finetune``, ``dlwp evaluate``) cannot be used as it is: an empty
    or single class, labels the model does not know, too little data for the split."""


class TrainingError(DlwpError, RuntimeError):
    """A fine-tune cannot start or go on: an output folder in use, a checkpoint of other settings,
    a loss that stopped being finite."""


class QuantizationError(DlwpError, RuntimeError):
    """The int8 backend cannot be used: no quantized graph of these weights yet, a quantization
    that fails its accuracy gate, a device it does not run on."""


class RayNotInstalledError(MissingDependencyError):
    """``--engine ray`` was asked for, and Ray Data cannot be imported."""


# --------------------------------------------------------------------------- signals between layers


class HttpLimitError(Exception):
    """A response broke a limit (redirect, status, encoding): that source cannot be used."""


class StallError(HttpLimitError):
    """A transfer went too slowly for too long, or past its wall-clock deadline."""


class BudgetExceededError(HttpLimitError):
    """A response sent more bytes than its budget allows."""


class ApiError(Exception):
    """A server answer other than 200: ``status``, a message in plain words (no paths, no
    traceback) and extra headers (e.g. ``Retry-After``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


class QueueFull(Exception):
    """A model's queue of requests is full; the client should retry later."""


class BatcherClosed(Exception):
    """The server is shutting down and takes no new requests."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for quoting it in one of ours; "" when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def reason(exc: BaseException) -> str:
    """``Type: first line`` of an exception, or the type alone when it has no message."""
    first = first_line(exc)
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__

"""What a task is, and how its model is chosen and built.

A :class:`Task` is one thing dlwp does with a photo (classify, translate, caption) together with
the options that change its answers (``topk``, ``size``, ``beam_size`` …). It is a frozen,
picklable dataclass: the shell makes one from its arguments, the server one per request, and a
Ray actor rebuilds it on another machine. Every application runs a task through the same five
methods, so none of them computes an answer itself:

* :meth:`Task.stream` — many inputs, one ``(input, outcome)`` each, in order (the shell, the local
  batch engine);
* :meth:`Task.prepare` and :meth:`Task.run` — one decoded image to what the network takes (any
  thread), a batch of those to answers (the server's batches, the Ray actors);
* :meth:`Task.record` — one outcome as the record a batch job writes (and the server answers).

A :class:`ModelSpec` says which network, with which weights, where and on which backend; its
:meth:`~ModelSpec.build` is the one way an application builds a model.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, fields
from importlib import import_module
from typing import Any, ClassVar

from torch import nn

from ..inputs.images import ImageItem
from ..models.onnx_backend import INT8, check_backend
from ..models.registry import family_info, models_for_task

__all__ = ["Task", "ModelSpec", "tasks", "task_named", "backend_for", "error_text", "error_record"]


def error_text(exc: BaseException) -> str:
    """An exception as the one line a user reads."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc) or type(exc).__name__


def error_record(name: str, exc: BaseException | str) -> dict[str, str]:
    """The record of an input that failed."""
    return {"input": name, "error": exc if isinstance(exc, str) else error_text(exc)}


def backend_for(model: str, backend: str) -> str:
    """The backend that runs ``model``: ``backend`` (checked, and installed) when the model's
    family can run on it, else eager PyTorch (e.g. captioning under ``serve --backend
    onnxruntime``, CycleGAN under ``--backend onnxruntime-int8``)."""
    check_backend(backend)
    info = family_info(model)
    runs = {"eager": True, "onnxruntime": info.onnx, INT8: info.int8}
    return backend if runs.get(backend) else "eager"


@dataclass(frozen=True)
class ModelSpec:
    """Which network, with which weights, where, on which backend: what an application needs to
    build a task's model on any machine (picklable)."""

    model: str
    weights: str | None = None  # a tag or name; None: the model's default weight set
    device: str = "cpu"
    backend: str = "eager"

    def build(self, *, progress: bool = False) -> nn.Module:
        """The model, built through dlwp's normal path (cache, mirrors, ``DLWP_OFFLINE``), loaded
        on the CPU, moved to :attr:`device`, in eval mode."""
        import torch

        from ..hub import build

        check_backend(self.backend)
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                "--device cuda, but no CUDA GPU is visible to PyTorch here; run on a machine with "
                "one, or use --device cpu."
            )
        model = build(self.model, weights=self.weights or "DEFAULT", progress=progress, map_location="cpu")
        return model.to(self.device).eval()


_TASKS: dict[str, type[Task]] = {}


def tasks() -> dict[str, type[Task]]:
    """Every task by name (each module of this package defines one and registers it)."""
    if not _TASKS:
        package = __name__.rpartition(".")[0]
        for found in pkgutil.iter_modules(import_module(package).__path__):
            if not found.name.startswith("_") and found.name != "base":
                import_module(f"{package}.{found.name}")
    return _TASKS


def task_named(name: str) -> type[Task]:
    """The task called ``name``; a ValueError listing them otherwise."""
    task = tasks().get(name)
    if task is None:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(tasks())}.")
    return task


@dataclass(frozen=True)
class Task:
    """One task and the options that change its answers (see the module docstring)."""

    #: the task's name: its subcommand, route and the ``task`` of the model families that do it
    name: ClassVar[str] = ""
    #: the model it runs when none is named
    default_model: ClassVar[str] = ""
    #: inputs per batch when none is given; None: the model's own default
    default_batch_size: ClassVar[int | None] = None
    #: fields that say how answers are written, not what they are (left out of :meth:`options`)
    policies: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            _TASKS[cls.name] = cls

    # ------------------------------------------------------------------ the models

    @classmethod
    def models(cls) -> tuple[str, ...]:
        """The models that do this task (from the family registry)."""
        return models_for_task(cls.name)

    @classmethod
    def check_model(cls, model: str) -> str:
        """``model`` when it does this task; a ValueError naming the ones that do otherwise."""
        if model not in cls.models():
            raise ValueError(f"{model!r} does not {cls.name}; choose one of {', '.join(cls.models())}.")
        return model

    def check(self, model: nn.Module) -> None:
        """Refuse options the built ``model`` cannot honour (ValueError), before any input."""

    @classmethod
    def ready(cls, model: nn.Module, backend: str) -> None:
        """Refuse, before any input, a ``backend`` the built ``model`` cannot run yet (the int8
        backend without a quantized graph); a long-running application calls it at load."""

    def options(self) -> dict[str, Any]:
        """The options that change this task's answers (what a records file's header names)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.policies}

    def for_job(self, job: str) -> Task:
        """This task within the batch job ``job`` (an id its records file keeps across ``--resume``)."""
        return self

    @classmethod
    def describe(cls, model: nn.Module) -> dict[str, Any]:
        """What the server's model list says about a built model besides its name and weights."""
        return {}

    def batch_size(self, model: nn.Module, given: int | None = None) -> int:
        """Inputs per batch: ``given``, else the task's default, else the model's own."""
        return given or self.default_batch_size or int(getattr(model, "default_batch_size", 16))

    # ------------------------------------------------------------------ answering

    def stream(
        self, model: nn.Module, inputs: Iterable[Any], *, batch_size: int | None = None, backend: str = "eager"
    ) -> Iterator[tuple[Any, Any]]:
        """``(input, outcome)`` for each of ``inputs`` (paths, URLs, images), in order, as soon as
        its batch is done; ``outcome`` is the answer or the exception that input raised."""
        raise NotImplementedError

    def prepare(self, model: nn.Module, image: ImageItem) -> Any:
        """One decoded image → what :meth:`run` takes (run it in any thread). An unusable image
        raises :class:`~dlwp_models.ImageInputError` (or ``ImageTooLargeError``)."""
        raise NotImplementedError

    def decode_preparer(self, spec: ModelSpec) -> Callable[[ImageItem], Any] | None:
        """What a machine without the model (a Ray decoding task) can already do to a decoded
        image, returning uint8 (H, W, 3) pixels that :meth:`run` takes as they are; None: nothing
        (the model's machine calls :meth:`prepare`)."""
        return None

    def batch_key(self, prepared: Any) -> Hashable:
        """What prepared inputs must share to run in one batch (default: their shape)."""
        return tuple(prepared.shape)

    def run(self, model: nn.Module, batch: list[Any], *, backend: str = "eager") -> list[Any]:
        """Prepared inputs (one :meth:`batch_key`) → their answers, in order."""
        raise NotImplementedError

    # ------------------------------------------------------------------ what is written

    def answer(self, outcome: Any) -> dict[str, Any]:
        """The JSON fields of one answer (a record's, and the server's)."""
        raise NotImplementedError

    def record(self, name: str, outcome: Any) -> dict[str, Any]:
        """The record of one input from its outcome (an answer, or the exception it raised)."""
        if isinstance(outcome, BaseException):
            return error_record(name, outcome)
        return {"input": name, **self.answer(outcome)}

    def csv_columns(self) -> list[str]:
        """The CSV header of this task's records: ``input``, the answer's cells, ``error``."""
        raise NotImplementedError

    def csv_cells(self, record: dict[str, Any]) -> list[Any]:
        """The answer's cells of a record that did not fail (between ``input`` and ``error``)."""
        raise NotImplementedError

    def text(self, record: dict[str, Any]) -> str:
        """How the shell shows a record that did not fail."""
        raise NotImplementedError

    def output_of(self, name: str) -> str | None:
        """The file that answering input ``name`` writes (two inputs must not share one), or None."""
        return None

    def check_outputs(self, names: list[str]) -> None:
        """Refuse, before any work, files that answering ``names`` may not write."""

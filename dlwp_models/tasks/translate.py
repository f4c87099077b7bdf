"""translate: a photo's horses as zebras (the CycleGAN generator), written as ``<stem>_zebra.png``.

The pictures are the model's own (:meth:`~dlwp_models.models.cyclegan.ResNetGenerator.translate_stream`,
``translate_preparer`` and ``translate_batch``); this module says how the task is run, where each
picture is written (through :mod:`dlwp_models.safe_write`: never half-written, never through a
planted link, never over a file unless asked) and how it is recorded."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image
from PIL.PngImagePlugin import PngInfo
from torch import nn

from ..errors import DlwpError
from ..inputs.images import ImageItem
from ..safe_write import check_free, write_failure, write_file
from .base import Task, error_record

__all__ = ["Translate"]

#: the PNG text chunk that names the batch job that wrote a picture
_JOB_KEY = "dlwp-job"


@dataclass(frozen=True)
class Translate(Task):
    """A zebra picture per image, written to ``output_dir``: ``{"output": "<path>"}``."""

    name = "translate"
    default_model = "cyclegan"
    default_batch_size = 4

    policies = ("overwrite", "job")

    size: int | None = 256
    preset: str = "trained"
    output_dir: str | None = None  # where the pictures go (records and the shell); the server answers them
    overwrite: bool = False  # replace any existing picture
    job: str | None = None  # the batch job's id: its own pictures (a resumed run's) may be replaced

    def for_job(self, job: str) -> Translate:
        return replace(self, job=job)

    def stream(
        self, model: nn.Module, inputs: Iterable[Any], *, batch_size: int | None = None, backend: str = "eager"
    ) -> Iterator[tuple[Any, Any]]:
        return model.translate_stream(
            inputs, size=self.size, preset=self.preset, batch_size=self.batch_size(model, batch_size), backend=backend
        )

    def check(self, model: nn.Module) -> None:
        model.translate_preparer(size=self.size, preset=self.preset)

    def prepare(self, model: nn.Module, image: ImageItem) -> Any:
        return model.translate_preparer(size=self.size, preset=self.preset)(image, "the image")

    def run(self, model: nn.Module, batch: list[Any], *, backend: str = "eager") -> list[Any]:
        return model.translate_batch(batch, backend=backend)

    # ------------------------------------------------------------------ the pictures

    def output_path(self, name: str) -> Path:
        """Where input ``name``'s picture goes: ``<output_dir>/<stem>_zebra.png`` (the stem of a
        path, or of a URL's path)."""
        if self.output_dir is None:
            raise ValueError("translate writes pictures into a folder; give it one (-o DIR).")
        stem = Path(urlsplit(name).path if "://" in name else name).stem or "image"
        return Path(self.output_dir) / f"{stem}_zebra.png"

    def output_of(self, name: str) -> str | None:
        return str(self.output_path(name))

    def check_outputs(self, names: list[str]) -> None:
        """Refuse, before any work, two inputs that would write one picture, and pictures that
        exist when they may not be replaced."""
        outputs = [self.output_path(name) for name in names]
        clash = next((out for i, out in enumerate(outputs) if out in outputs[:i]), None)
        if clash is not None:
            raise ValueError(
                f"two inputs would both be written to {clash}; rename one of them or translate "
                "them into different folders."
            )
        for out in outputs:
            check_free(out, replace=self.overwrite)

    def record(self, name: str, outcome: Any) -> dict[str, Any]:
        """Writes the picture, then records where (a picture that cannot be written fails its input)."""
        if isinstance(outcome, BaseException):
            return error_record(name, outcome)
        out = self.output_path(name)
        info = PngInfo()
        if self.job:
            info.add_text(_JOB_KEY, self.job)  # so that a resumed run of this job may replace it
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            write_file(
                out,
                lambda fh: outcome.save(fh, format="PNG", pnginfo=info),
                replace=self.overwrite or self._wrote(out),
                doing=f"write {out.name}",
            )
        except DlwpError as exc:  # exists (without --overwrite), full disk, …: this input fails
            return error_record(name, exc)
        except OSError as exc:
            return error_record(name, write_failure(exc, out.parent, f"create the folder {out.parent}"))
        return {"input": name, "output": str(out)}

    def _wrote(self, out: Path) -> bool:
        """Whether ``out`` is a picture this job wrote (a resumed run may replace it): a regular PNG
        whose text chunk names this job."""
        if not self.job or out.is_symlink() or not out.is_file():
            return False
        try:
            with Image.open(out) as existing:
                return existing.format == "PNG" and existing.info.get(_JOB_KEY) == self.job
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            return False

    def answer(self, outcome: Any) -> dict[str, Any]:
        raise TypeError("a translation's answer is a picture: record() writes it, the server sends it.")

    def csv_columns(self) -> list[str]:
        return ["input", "output", "error"]

    def csv_cells(self, record: dict[str, Any]) -> list[Any]:
        return [record["output"]]

    def text(self, record: dict[str, Any]) -> str:
        return f"{record['input']} -> {record['output']}"

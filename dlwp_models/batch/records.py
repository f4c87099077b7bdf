"""Result records of a batch job, written one per input as soon as its batch is done and read back
for ``--resume``.

Formats (by the output's name): JSON Lines (``.jsonl``, and ``-`` for standard output), one
object a line — classify ``{"input", "predictions": [{"label", "index", "percent"}, …]}``, caption
``{"input", "caption"}``, translate ``{"input", "output"}``, a failure ``{"input", "error"}`` — or
CSV (``.csv``), a header and one row per input: ``input``, then the label/percent pairs, or the
caption, or the output path, then ``error`` (empty when it worked). Each task says what its records
hold (:meth:`~dlwp_models.tasks.Task.record`, ``csv_columns``, ``csv_cells``); this module writes
and reads them for any task.

Crash safety: each record is one line, written with one write and flushed, so a run killed at any
moment leaves complete lines that are all valid records and at most one torn last line.
:func:`resume` drops that line and the error records (those inputs are tried again), keeps every
other record, and returns the inputs already answered.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import ResultsFileError
from ..safe_write import staged, write_failure
from ..tasks import Task

__all__ = ["RecordWriter", "open_writer", "resume"]


class RecordWriter:
    """Writes a task's records to an open text stream, one flushed line each (JSON Lines, or CSV
    when ``csv`` is true)."""

    def __init__(self, stream: IO[str], task: Task, *, csv: bool, owns: bool) -> None:
        self._stream, self._task, self._owns = stream, task, owns
        self._columns = task.csv_columns() if csv else None

    def write(self, record: dict[str, Any]) -> None:
        """Write one record and flush it to the operating system (so it survives the process)."""
        self._stream.write(self._line(record))
        self._stream.flush()

    def _line(self, record: dict[str, Any]) -> str:
        if self._columns is None:
            return json.dumps(record, ensure_ascii=False) + "\n"
        row = [record["input"]]
        if "error" in record:
            row += [""] * (len(self._columns) - 2) + [record["error"]]
        else:
            row += [*self._task.csv_cells(record), ""]
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(_one_line(value) for value in row)
        return buffer.getvalue()

    def close(self) -> None:
        """Flush, and close the file unless it is standard output."""
        self._stream.flush()
        if self._owns:
            self._stream.close()


def _one_line(value: Any) -> str:
    """A field on one line (so every record is one physical line and a torn one is the last)."""
    return " ".join(str(value).splitlines()) if isinstance(value, str) else str(value)


def _is_csv(output: str) -> bool:
    return Path(output).suffix.lower() == ".csv"


def open_writer(output: str, task: Task, *, append: bool) -> RecordWriter:
    """A writer of ``task``'s records to ``output`` (``-``: standard output). A new file gets a
    CSV header; an existing one is refused unless ``append`` (after :func:`resume`), so no results
    are overwritten."""
    if output == "-":
        return RecordWriter(sys.stdout, task, csv=False, owns=False)
    path = Path(output)
    if not append and path.exists() and path.stat().st_size > 0:
        raise ResultsFileError(
            f"{output} already holds results; pass --resume to continue that run, or "
            "choose another --output (or delete the file) to start over."
        )
    try:
        stream = open(path, "a" if append else "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise ResultsFileError(
            f"cannot write results to {output} ({exc.strerror or exc}); check the path and its permissions."
        ) from None
    writer = RecordWriter(stream, task, csv=_is_csv(output), owns=True)
    if writer._columns is not None and stream.tell() == 0:
        stream.write(",".join(writer._columns) + "\n")
        stream.flush()
    return writer


def resume(output: str, task: Task) -> set[str]:
    """Read ``output`` for ``--resume``: the inputs it already answers. The file is rewritten
    (through :mod:`dlwp_models.safe_write`: a new temporary file moved into place, so a crash here
    loses nothing) without its error records and without a torn last line; new records are then
    appended."""
    if output == "-":
        raise ResultsFileError("--resume needs an --output file to read; standard output cannot be resumed.")
    path = Path(output)
    if not path.exists():
        return set()
    columns = task.csv_columns() if _is_csv(output) else None
    done: set[str] = set()
    try:
        with open(path, encoding="utf-8", newline="") as source, staged(path, replace=True) as (_, raw):
            kept = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            try:
                _keep_answered(source, kept, columns, output, done)
            finally:
                kept.flush()
                kept.detach()
    except OSError as exc:
        raise write_failure(exc, path, f"rewrite {path.name} for --resume", error=ResultsFileError) from None
    return done


def _keep_answered(source: IO[str], kept: IO[str], columns: list[str] | None, output: str, done: set[str]) -> None:
    """Copy the answered records of ``source`` to ``kept`` (each input once), adding them to ``done``."""
    for number, line in _complete_lines(source):
        if columns is not None and number == 1:
            if next(csv.reader([line])) != columns:
                raise ResultsFileError(
                    f"{output} has the columns {line.strip()!r}, not those of this job "
                    f"({','.join(columns)}); resume with the same task and --topk, or choose "
                    "another --output."
                )
            kept.write(line)
            continue
        record_input, answered = _parse(line, columns, output, number)
        if answered and record_input not in done:
            done.add(record_input)
            kept.write(line)
    if columns is not None and kept.tell() == 0:
        kept.write(",".join(columns) + "\n")


def _complete_lines(source: IO[str]) -> Iterator[tuple[int, str]]:
    """(number, line) of each non-blank line that ends in a newline; a last line without one was torn
    by a crash and is dropped."""
    for number, line in enumerate(source, start=1):
        if line.endswith("\n") and line.strip():
            yield number, line


def _parse(line: str, columns: list[str] | None, output: str, number: int) -> tuple[str, bool]:
    """(input, whether it was answered) of one record line."""
    try:
        if columns is None:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("input"), str):
                raise ValueError("not a record")
            return record["input"], "error" not in record
        row = next(csv.reader([line]))
        if len(row) != len(columns):
            raise ValueError("wrong number of fields")
        return row[0], not row[-1]
    except ValueError:
        raise ResultsFileError(
            f"line {number} of {output} is not a result record of this job; --resume "
            "continues a file written by the same command. Choose another --output."
        ) from None

"""Result records of a batch job, written one per input as soon as its batch is done and read back
for ``--resume``.

Formats (by the output's name): JSON Lines (``.jsonl``, and ``-`` for standard output), one
object a line — classify ``{"input", "predictions": [{"label", "index", "percent"}, …]}``, caption
``{"input", "caption"}``, translate ``{"input", "output"}``, a failure ``{"input", "error"}`` — or
CSV (``.csv``), a header and one row per input: ``input``, then the label/percent pairs, or the
caption, or the output path, then ``error`` (empty when it worked).

Crash safety: each record is one line, written with one write and flushed, so a run killed at any
moment leaves complete lines that are all valid records and at most one torn last line.
:func:`resume` drops that line and the error records (those inputs are tried again), keeps every
other record, and returns the inputs already answered.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = ["RecordWriter", "ResultsFileError", "csv_columns", "open_writer", "resume"]


class ResultsFileError(ValueError):
    """The output file cannot be written, or read back for --resume."""


def csv_columns(task: str, topk: int) -> list[str]:
    """The CSV header of a task's records."""
    if task == "classify":
        middle = [f"{kind}_{rank}" for rank in range(1, topk + 1) for kind in ("label", "percent")]
    else:
        middle = ["caption" if task == "caption" else "output"]
    return ["input", *middle, "error"]


class RecordWriter:
    """Writes records to an open text stream, one flushed line each."""

    def __init__(self, stream: IO[str], *, columns: list[str] | None, owns: bool) -> None:
        self._stream, self._columns, self._owns = stream, columns, owns

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
        elif "predictions" in record:
            row += [v for p in record["predictions"] for v in (p["label"], repr(p["percent"]))] + [""]
        else:
            row += [record.get("caption", record.get("output")), ""]
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


def open_writer(output: str, *, task: str, topk: int, append: bool) -> RecordWriter:
    """A writer for ``output`` (``-``: standard output). A new file gets a CSV header; an existing
    one is refused unless ``append`` (after :func:`resume`), so no results are overwritten."""
    columns = csv_columns(task, topk) if _is_csv(output) else None
    if output == "-":
        return RecordWriter(sys.stdout, columns=None, owns=False)
    path = Path(output)
    if not append and path.exists() and path.stat().st_size > 0:
        raise ResultsFileError(f"{output} already holds results; pass --resume to continue that run, or "
                               "choose another --output (or delete the file) to start over.")
    try:
        stream = open(path, "a" if append else "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise ResultsFileError(f"cannot write results to {output} ({exc.strerror or exc}); check the path "
                               "and its permissions.") from None
    if columns is not None and stream.tell() == 0:
        stream.write(",".join(columns) + "\n")
        stream.flush()
    return RecordWriter(stream, columns=columns, owns=True)


def resume(output: str, *, task: str, topk: int) -> set[str]:
    """Read ``output`` for ``--resume``: the inputs it already answers. The file is rewritten
    (through a temporary file and an atomic rename, so a crash here loses nothing) without its
    error records and without a torn last line; new records are then appended."""
    if output == "-":
        raise ResultsFileError("--resume needs an --output file to read; standard output cannot be resumed.")
    path = Path(output)
    if not path.exists():
        return set()
    columns = csv_columns(task, topk) if _is_csv(output) else None
    done: set[str] = set()
    partial = path.with_name(f".{path.name}.resume")
    try:
        with open(path, encoding="utf-8", newline="") as source, \
                open(partial, "w", encoding="utf-8", newline="") as kept:
            for number, line in _complete_lines(source):
                if columns is not None and number == 1:
                    if next(csv.reader([line])) != columns:
                        raise ResultsFileError(
                            f"{output} has the columns {line.strip()!r}, not those of this job "
                            f"({','.join(columns)}); resume with the same task and --topk, or choose "
                            "another --output.")
                    kept.write(line)
                    continue
                record_input, answered = _parse(line, columns, output, number)
                if answered and record_input not in done:
                    done.add(record_input)
                    kept.write(line)
            if columns is not None and kept.tell() == 0:
                kept.write(",".join(columns) + "\n")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return done


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
        raise ResultsFileError(f"line {number} of {output} is not a result record of this job; --resume "
                               "continues a file written by the same command. Choose another --output.") from None

"""Result records of a batch job, written one per input as soon as its batch is done and read back
for ``--resume``: a contract with one file.

Formats (by the output's name): JSON Lines (``.jsonl``, and ``-`` for standard output), one
object a line — classify ``{"input", "predictions": [{"label", "index", "percent"}, …]}``, caption
``{"input", "caption"}``, translate ``{"input", "output"}``, a failure ``{"input", "error"}`` — or
CSV (``.csv``), a header row and one row per input: ``input``, then the label/percent pairs, or the
caption, or the output path, then ``error`` (empty when it worked). Each task says what its records
hold (:meth:`~dlwp_models.tasks.Task.record`, ``csv_columns``, ``csv_cells``); this module writes
and reads them for any task.

**The job's header.** The first line names the job: ``{"dlwp_records": 1, "task", "options",
"model", "weights", "backend", "job"}`` (in a CSV file, as one cell ``#dlwp_records {…}`` before the
header row: ``pandas.read_csv(path, skiprows=1)``). ``--resume`` continues only a file whose header
names the same task, options, model, weights and backend, and refuses another with what differs;
``job`` identifies the run, so that translate replaces only the pictures this job wrote.

**Names are data.** Every input name the OS gives is recorded and matched by ``--resume``: JSON
escapes what UTF-8 cannot hold (a file name's undecodable bytes are ``\\udcXX`` escapes) and every
character a reader could take for a line break, so a record is one line. A CSV
cell is written on one line and cannot run in a spreadsheet: a backslash is doubled, line breaks
and undecodable bytes become ``\\uXXXX`` escapes, and a cell that starts with ``=``, ``+``, ``-``,
``@``, a tab, a carriage return or ``'`` gets a ``'`` in front (:func:`encode_cell`;
:func:`decode_cell` reads it back).

**One writer, one regular file.** The records path must be a regular file, or not exist: a link, a
device or a folder is refused. A run holds ``<file>.lock`` while it writes; a second run on the
same file is refused. Each record is one line, written with one write and flushed, so a run killed
at any moment leaves complete lines and at most one torn last line; :func:`resume` drops that
line and the error records (those inputs are tried again), keeps every other record, and returns
the inputs already answered.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ..errors import ResultsFileError
from ..safe_write import staged, write_failure
from ..tasks import Task

__all__ = ["RecordWriter", "open_writer", "resume", "records_lock", "encode_cell", "decode_cell", "HEADER_KEY"]

#: the key of the first line, with the format's version
HEADER_KEY = "dlwp_records"
_CSV_HEADER = f"#{HEADER_KEY} "
_RISKY_START = tuple("=+-@\t\r'")
_ESCAPED = re.compile(r"[\\\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029\ud800-\udfff]")
_UNESCAPE = re.compile(r"\\(\\|u[0-9a-f]{4})")


def encode_cell(text: str) -> str:
    """A text cell as CSV holds it: on one line, with nothing a spreadsheet would run (see the
    module docstring)."""
    text = _ESCAPED.sub(lambda m: "\\\\" if m.group() == "\\" else f"\\u{ord(m.group()):04x}", text)
    return "'" + text if text.startswith(_RISKY_START) else text


def decode_cell(cell: str) -> str:
    """The text :func:`encode_cell` encoded."""
    if cell.startswith("'"):
        cell = cell[1:]
    return _UNESCAPE.sub(lambda m: "\\" if m.group(1) == "\\" else chr(int(m.group(1)[1:], 16)), cell)


class RecordWriter:
    """Writes a task's records to an open text stream, one flushed line each (JSON Lines, or CSV
    when ``csv`` is true); ``path`` names the file in messages."""

    def __init__(self, stream: IO[str], task: Task, *, csv: bool, owns: bool, path: Path | None = None) -> None:
        self._stream, self._task, self._owns, self._path = stream, task, owns, path
        self._columns = task.csv_columns() if csv else None

    def write_header(self, header: dict[str, Any]) -> None:
        """The job's header, first (before the CSV columns)."""
        if self._columns is None:
            self._write(_json_line({HEADER_KEY: 1, **header}))
        else:
            self._write(_csv_line([_CSV_HEADER + json.dumps({HEADER_KEY: 1, **header}, ensure_ascii=True)]))
            self._write(_csv_line(self._columns))

    def write(self, record: dict[str, Any]) -> None:
        """Write one record and flush it to the operating system (so it survives the process)."""
        self._write(self._line(record))

    def _write(self, line: str) -> None:
        try:
            self._stream.write(line)
            self._stream.flush()
        except OSError as exc:
            where = self._path or Path("<standard output>")
            raise write_failure(exc, where, f"write results to {where.name}", error=ResultsFileError) from None

    def _line(self, record: dict[str, Any]) -> str:
        if self._columns is None:
            return _json_line(record)
        row = [record["input"]]
        if "error" in record:
            row += [""] * (len(self._columns) - 2) + [record["error"]]
        else:
            row += [*self._task.csv_cells(record), ""]
        return _csv_line([encode_cell(str(value)) for value in row])

    def close(self) -> None:
        """Flush, and close the file unless it is standard output."""
        try:
            self._stream.flush()
        finally:
            if self._owns:
                self._stream.close()


#: characters a JSON string may hold raw that some readers take for line breaks (``str.splitlines``)
_JSON_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _json_line(record: dict[str, Any]) -> str:
    """One record as one line of JSON, whatever its strings hold."""
    line = json.dumps(record, ensure_ascii=False).translate(_JSON_BREAKS)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a name with undecodable bytes: escaped, as JSON allows
        line = json.dumps(record, ensure_ascii=True)
    return line + "\n"


def _csv_line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


def _is_csv(output: str) -> bool:
    return Path(output).suffix.lower() == ".csv"


def _check_regular(path: Path) -> bool:
    """Whether ``path`` exists; a ResultsFileError when it is anything but a regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ResultsFileError(f"cannot use {path} for results ({exc.strerror or exc}); check the path.") from None
    if stat.S_ISDIR(st.st_mode):
        raise ResultsFileError(
            f"{path} is a folder; --output names the records file to write, e.g. {path}/records.jsonl."
        )
    if not stat.S_ISREG(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file (a device, a pipe, a socket)"
        raise ResultsFileError(f"{path} is {kind}; --output must name a regular file or a new one.")
    return True


@contextmanager
def records_lock(output: str) -> Iterator[None]:
    """Hold ``<output>.lock`` while a run writes ``output``; another run on it is refused at once."""
    if output == "-":
        yield
        return
    from filelock import FileLock, Timeout

    lock = FileLock(f"{output}.lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ResultsFileError(
            f"another run is writing {output} (it holds {output}.lock); wait for it to end, or choose another --output."
        ) from None
    except OSError as exc:
        raise ResultsFileError(f"cannot lock {output} ({exc.strerror or exc}); check the folder.") from None
    try:
        yield
    finally:
        lock.release()


def open_writer(output: str, task: Task, header: dict[str, Any], *, append: bool) -> RecordWriter:
    """A writer of ``task``'s records to ``output`` (``-``: standard output). A new (or empty) file
    gets the job's ``header`` first; an existing one is refused unless ``append`` (after
    :func:`resume`), so no results are overwritten."""
    if output == "-":
        writer = RecordWriter(sys.stdout, task, csv=False, owns=False)
        writer.write_header(header)
        return writer
    path = Path(output)
    exists = _check_regular(path)
    if not append and exists and path.stat().st_size > 0:
        raise ResultsFileError(
            f"{output} already holds results; pass --resume to continue that run, or "
            "choose another --output (or delete the file) to start over."
        )
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise ResultsFileError(
            f"cannot write results to {output} ({exc.strerror or exc}); check the path and its permissions."
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced by something else since the check
        os.close(fd)
        raise ResultsFileError(f"{output} is not a regular file; --output must name a regular file or a new one.")
    stream = os.fdopen(fd, "a", encoding="utf-8", newline="")
    writer = RecordWriter(stream, task, csv=_is_csv(output), owns=True, path=path)
    if stream.tell() == 0:
        writer.write_header(header)
    return writer


def resume(output: str, task: Task, header: dict[str, Any]) -> tuple[set[str], str | None]:
    """Read ``output`` for ``--resume``: the inputs it already answers, and the job id its header
    names (None for a file that does not exist yet). A file of another job (its header's task,
    options, model, weights or backend differ from ``header``'s) is refused, saying what differs.
    The file is rewritten (through :mod:`dlwp_models.safe_write`: a new temporary file moved into
    place, so a crash here loses nothing) without its error records and without a torn last line;
    new records are then appended."""
    if output == "-":
        raise ResultsFileError("--resume needs an --output file to read; standard output cannot be resumed.")
    path = Path(output)
    if not _check_regular(path) or path.stat().st_size == 0:
        return set(), None
    columns = task.csv_columns() if _is_csv(output) else None
    done: set[str] = set()
    try:
        with (
            open(path, encoding="utf-8", newline="", errors="strict") as source,
            staged(path, replace=True) as (_, raw),
        ):
            kept = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            try:
                lines = _complete_lines(source)
                job = _keep_header(lines, kept, columns, output, header)
                _keep_answered(lines, kept, columns, output, done)
            finally:
                kept.flush()
                kept.detach()
    except UnicodeDecodeError:
        raise ResultsFileError(
            f"{output} is not a UTF-8 records file; --resume continues a file written by the "
            "same command. Choose another --output."
        ) from None
    except OSError as exc:
        raise write_failure(exc, path, f"rewrite {path.name} for --resume", error=ResultsFileError) from None
    return done, job


def _keep_header(
    lines: Iterator[tuple[int, str]], kept: IO[str], columns: list[str] | None, output: str, header: dict[str, Any]
) -> str:
    """Check the file's header against this job's, copy it (and the CSV columns); its job id."""
    first = next(lines, (1, ""))[1]
    try:
        if columns is None:
            found = json.loads(first)
        else:
            (cell,) = next(csv.reader([first]))
            found = json.loads(cell.removeprefix(_CSV_HEADER)) if cell.startswith(_CSV_HEADER) else None
    except ValueError:
        found = None
    if not isinstance(found, dict) or found.get(HEADER_KEY) != 1:
        raise ResultsFileError(
            f"{output} has no dlwp records header on its first line (written by another "
            "program, or by dlwp before 0.2); --resume continues a file written by the same "
            "command. Choose another --output."
        )
    differs = [
        f"{key} {found.get(key)!r} there, {header.get(key)!r} here"
        for key in header
        if key != "job" and found.get(key) != header.get(key)
    ]
    if differs:
        raise ResultsFileError(
            f"{output} records another job ({'; '.join(differs)}); resume with the same "
            "command and options, or choose another --output."
        )
    kept.write(first)
    if columns is not None:
        _, line = next(lines, (2, ""))
        if next(csv.reader([line]), None) != columns:
            raise ResultsFileError(
                f"{output} has the columns {line.strip()!r}, not those of this job "
                f"({','.join(columns)}); resume with the same task and --topk, or choose "
                "another --output."
            )
        kept.write(line)
    return str(found.get("job") or "")


def _keep_answered(
    lines: Iterator[tuple[int, str]], kept: IO[str], columns: list[str] | None, output: str, done: set[str]
) -> None:
    """Copy the answered records of ``lines`` to ``kept`` (each input once), adding them to ``done``."""
    for number, line in lines:
        record_input, answered = _parse(line, columns, output, number)
        if answered and record_input not in done:
            done.add(record_input)
            kept.write(line)


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
        return decode_cell(row[0]), not row[-1]
    except ValueError:
        raise ResultsFileError(
            f"line {number} of {output} is not a result record of this job; --resume "
            "continues a file written by the same command. Choose another --output."
        ) from None

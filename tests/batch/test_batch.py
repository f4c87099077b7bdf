"""Batch jobs (``classify|caption|translate INPUTS --output …``): records equal the Python API, JSON
Lines and CSV, folders / @lists / stdin, resume after SIGKILL, --on-error, exit status and the
last line, flat memory."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from batch_files import make_images, make_mixed_folder, read_jsonl
from PIL import Image

from dlwp_models.batch.records import resume
from dlwp_models.cli.main import main
from dlwp_models.tasks.caption import Caption


@pytest.fixture(scope="module")
def env(batch_env):
    return batch_env


@pytest.fixture
def use_env(env, monkeypatch):
    for key, value in env.vars().items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    good, bad = make_mixed_folder(folder)
    return folder, good, bad


@pytest.fixture(scope="module")
def models(env):
    from dlwp_models.hub import build

    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.vars().items():
            mp.setenv(key, value)
        return {
            name: build(name, weights="DEFAULT", progress=False)
            for name in ("squeezenet1_1", "cyclegan", "neuraltalk2")
        }


def listed(folder: Path) -> list[str]:
    """What a folder search yields: image-named files, sorted per folder, subfolders after."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        out += [os.path.join(root, f) for f in sorted(files) if f.rsplit(".", 1)[-1] in ("jpg", "png")]
    return out


def run_main(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------- each task, end to end


def test_classify_jsonl_equals_predict_and_failures_get_error_records(use_env, models, mixed, tmp_path, capsys):
    folder, good, bad = mixed
    missing = str(tmp_path / "missing.jpg")
    out = tmp_path / "results.jsonl"
    code, _, err = run_main(
        [
            "classify",
            str(folder),
            missing,
            "--model",
            "squeezenet1_1",
            "--topk",
            "3",
            "--batch-size",
            "3",
            "--output",
            str(out),
            "-q",
        ],
        capsys,
    )
    records = read_jsonl(out)
    inputs = listed(folder) + [missing]
    assert [r["input"] for r in records] == inputs  # every input once, in order
    assert code == 1 and err.strip().splitlines()[-1] == "3 of 10 failed"
    errors = {r["input"]: r["error"] for r in records if "error" in r}
    assert set(errors) == {str(p) for p in bad} | {missing}
    assert "does not exist" in errors[missing] and "damaged" in errors[str(bad[0])]
    ok = [r for r in records if "error" not in r]
    model = models["squeezenet1_1"]
    expected = model.predict([r["input"] for r in ok], topk=3, batch_size=3)
    for record, prediction in zip(ok, expected, strict=True):
        assert [(p["label"], p["percent"]) for p in record["predictions"]] == list(prediction)
        assert [p["index"] for p in record["predictions"]] == prediction.indices
        assert [model.categories[p["index"]] for p in record["predictions"]] == prediction.labels


def test_classify_csv_rows_equal_the_jsonl_records(use_env, mixed, tmp_path, capsys):
    folder, good, bad = mixed
    jsonl, table = tmp_path / "r.jsonl", tmp_path / "r.csv"
    for out in (jsonl, table):
        code, _, _ = run_main(
            ["classify", str(folder), "--model", "squeezenet1_1", "--topk", "2", "--output", str(out), "-q"], capsys
        )
        assert code == 1
    rows = list(csv.reader(io.StringIO(table.read_text(encoding="utf-8"))))
    assert rows[0][0].startswith("#dlwp_records {") and '"task": "classify"' in rows[0][0]
    assert rows[1] == ["input", "label_1", "percent_1", "label_2", "percent_2", "error"]
    for row, record in zip(rows[2:], read_jsonl(jsonl), strict=True):
        assert row[0] == record["input"]
        if "error" in record:
            assert row[1:] == ["", "", "", "", record["error"]]
        else:
            pairs = [(p["label"], p["percent"]) for p in record["predictions"]]
            assert [(row[1], float(row[2])), (row[3], float(row[4]))] == pairs and row[5] == ""


def test_caption_records_equal_caption(use_env, models, mixed, tmp_path, capsys):
    folder, good, bad = mixed
    out = tmp_path / "captions.jsonl"
    code, _, err = run_main(
        ["caption", str(folder), "--beam-size", "2", "--batch-size", "4", "--output", str(out), "-q"], capsys
    )
    assert code == 1 and err.strip().splitlines()[-1] == "2 of 9 failed"
    records = read_jsonl(out)
    assert [r["input"] for r in records] == listed(folder)
    ok = [r for r in records if "error" not in r]
    expected = models["neuraltalk2"].caption([r["input"] for r in ok], beam_size=2)
    assert [r["caption"] for r in ok] == expected
    assert len(set(expected)) > 1  # the captions depend on the picture


def test_translate_records_point_at_the_pictures_translate_gives(use_env, models, mixed, tmp_path, capsys):
    folder, good, bad = mixed
    pictures, out = tmp_path / "zebras", tmp_path / "t.csv"
    code, _, err = run_main(
        ["translate", str(folder), "-o", str(pictures), "--size", "32", "--output", str(out), "-q"], capsys
    )
    assert code == 1 and err.strip().splitlines()[-1] == "2 of 9 failed"
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8").split("\n", 1)[1])))  # after the header
    assert [r["input"] for r in rows] == listed(folder)
    ok = [r for r in rows if not r["error"]]
    assert len(ok) == len(good)
    for row in ok:
        written = Path(row["output"])
        assert written == pictures / f"{Path(row['input']).stem}_zebra.png"
        expected = models["cyclegan"].translate(row["input"], size=32)
        assert np.array_equal(np.asarray(Image.open(written)), np.asarray(expected))
    assert sorted(p.name for p in pictures.iterdir()) == sorted(f"{p.stem}_zebra.png" for p in good)


def test_translate_two_inputs_with_one_picture_name_get_one_error(use_env, tmp_path, capsys):
    a, b = make_images(tmp_path / "a", 1)[0], make_images(tmp_path / "b", 1)[0]
    out = tmp_path / "t.jsonl"
    code, _, _ = run_main(
        ["translate", str(a), str(b), "-o", str(tmp_path / "z"), "--size", "16", "--output", str(out), "-q"], capsys
    )
    records = read_jsonl(out)
    assert code == 1 and sorted(r["input"] for r in records) == [str(a), str(b)]
    by_input = {r["input"]: r for r in records}
    assert by_input[str(a)]["output"] == str(tmp_path / "z" / "img00000_zebra.png")
    assert "already written to" in by_input[str(b)]["error"]


# --------------------------------------------------------------------------- inputs


def test_list_file_stdin_and_globs_name_the_same_inputs(use_env, mixed, tmp_path, capsys, monkeypatch):
    folder, good, bad = mixed
    names = [str(p) for p in good[:3]] + [str(bad[0])]
    listing = tmp_path / "list.txt"
    listing.write_text("# my pictures\n" + "\n".join(names) + "\n\n", encoding="utf-8")
    by_list, by_stdin, by_glob = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    common = ["--model", "squeezenet1_1", "--topk", "1", "-q"]
    assert run_main(["classify", f"@{listing}", "--output", str(by_list), *common], capsys)[0] == 1
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(names) + "\n"))
    assert run_main(["classify", "-", "--output", str(by_stdin), *common], capsys)[0] == 1
    assert read_jsonl(by_list) == read_jsonl(by_stdin)
    assert [r["input"] for r in read_jsonl(by_list)] == names
    code, _, err = run_main(["classify", str(folder / "*.png"), "--output", str(by_glob), *common], capsys)
    assert (
        code == 0
        and err.strip().splitlines()[-1]
        == f"0 of {sum(p.parent == folder and p.suffix == '.png' for p in good)} failed"
    )


def test_output_to_stdout_writes_json_lines(use_env, mixed, capsys):
    folder, good, bad = mixed
    code, out, err = run_main(
        ["classify", str(good[0]), str(good[1]), "--model", "squeezenet1_1", "--output", "-", "-q"], capsys
    )
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and lines[0]["dlwp_records"] == 1 and lines[0]["task"] == "classify"
    assert [line["input"] for line in lines[1:]] == [str(good[0]), str(good[1])]
    assert err.strip().splitlines()[-1] == "0 of 2 failed"


def test_progress_shows_done_of_total_and_rate_when_asked(use_env, mixed, tmp_path, capsys):
    folder, good, bad = mixed
    code, _, err = run_main(
        ["classify", str(folder), "--model", "squeezenet1_1", "--output", str(tmp_path / "r.csv"), "--progress", "-q"],
        capsys,
    )
    assert code == 1 and "9/9" in err and "img/s" in err
    code, _, err = run_main(
        ["classify", str(good[0]), "--model", "squeezenet1_1", "--output", str(tmp_path / "s.csv"), "-q"], capsys
    )
    assert code == 0 and err.strip() == "0 of 1 failed"  # not a terminal: no bar


def test_a_missing_list_file_is_one_clear_error(use_env, tmp_path, capsys):
    code, _, err = run_main(
        [
            "classify",
            f"@{tmp_path / 'nope.txt'}",
            "--model",
            "squeezenet1_1",
            "--output",
            str(tmp_path / "r.jsonl"),
            "-q",
        ],
        capsys,
    )
    assert code == 1 and err.startswith("dlwp: error: cannot read the input list")


# --------------------------------------------------------------------------- failures, status, usage


def test_on_error_stop_ends_at_the_first_failure_after_flushing(use_env, mixed, tmp_path, capsys):
    folder, good, bad = mixed
    out = tmp_path / "r.jsonl"
    inputs = [str(good[0]), str(good[1]), str(bad[0]), str(good[2])]
    code, _, err = run_main(
        ["classify", *inputs, "--model", "squeezenet1_1", "--on-error", "stop", "--output", str(out), "-q"], capsys
    )
    records = read_jsonl(out)
    assert code == 1 and [r["input"] for r in records] == inputs[:3] and "error" in records[2]
    assert f"dlwp: error: {bad[0]}:" in err and "stopped at the first failure" in err.strip().splitlines()[-1]


def test_existing_results_are_not_overwritten_without_resume(use_env, mixed, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    out.write_text('{"input": "x", "caption": "y"}\n')
    code, _, err = run_main(["caption", str(mixed[1][0]), "--output", str(out), "-q"], capsys)
    assert code == 1 and "pass --resume" in err and out.read_text() == '{"input": "x", "caption": "y"}\n'


@pytest.mark.parametrize(
    "argv, message",
    [
        (["classify", "x.jpg", "--resume"], "--resume only applies to batch jobs"),
        (["classify", "x.jpg", "--output", "-", "--resume"], "standard output cannot be resumed"),
        (["classify", "x.jpg", "--output", "r.jsonl", "--num-workers", "2"], "--num-workers applies to --engine ray"),
    ],
)
def test_batch_options_without_their_context_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_without_output_classify_prints_as_before(use_env, mixed, capsys):
    code, out, _ = run_main(["classify", str(mixed[1][0]), "--model", "squeezenet1_1", "--topk", "2", "-q"], capsys)
    assert (
        code == 0
        and out.splitlines()[0] == f"{mixed[1][0]}:"
        and out.splitlines()[1].split() == ["rank", "label", "percent"]
    )


# --------------------------------------------------------------------------- resume


HEADER = {
    "task": "caption",
    "options": {"beam_size": 2},
    "model": "neuraltalk2",
    "weights": "DEFAULT",
    "backend": "eager",
}
JSON_HEADER = json.dumps({"dlwp_records": 1, **HEADER, "job": "j1"}) + "\n"
CSV_HEADER = '"#dlwp_records ' + json.dumps({"dlwp_records": 1, **HEADER, "job": "j1"}).replace('"', '""') + '"\n'


def test_resume_drops_a_torn_line_and_error_records(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text(
        JSON_HEADER + '{"input": "a", "caption": "x"}\n{"input": "b", "error": "damaged"}\n'
        '{"input": "c", "caption": "y"}\n{"input": "d", "capt',
        encoding="utf-8",
    )
    assert resume(str(out), Caption(), HEADER) == ({"a", "c"}, "j1")
    assert out.read_text() == JSON_HEADER + '{"input": "a", "caption": "x"}\n{"input": "c", "caption": "y"}\n'
    table = tmp_path / "r.csv"
    table.write_text(CSV_HEADER + "input,caption,error\na,x,\nb,,damaged\nc,y,\nd,hal", encoding="utf-8")
    assert resume(str(table), Caption(), HEADER) == ({"a", "c"}, "j1")
    assert table.read_text() == CSV_HEADER + "input,caption,error\na,x,\nc,y,\n"


def test_resume_refuses_a_file_of_another_job(tmp_path):
    table = tmp_path / "r.csv"
    table.write_text(CSV_HEADER + "input,output,error\na,b,\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not those of this job"):
        resume(str(table), Caption(), HEADER)
    lines = tmp_path / "r.jsonl"
    lines.write_text(JSON_HEADER + "hello\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2 of .* is not a result record"):
        resume(str(lines), Caption(), HEADER)
    lines.write_text("hello\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has no dlwp records header on its first line"):
        resume(str(lines), Caption(), HEADER)


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_sigkill_at_a_random_moment_then_resume_gives_one_record_per_input(env, tmp_path, suffix):
    folder = tmp_path / "many"
    make_images(folder, 100, size=(24, 32))
    (folder / "broken.jpg").write_bytes(b"no")
    out = tmp_path / f"r.{suffix}"
    args = [
        "classify",
        str(folder),
        "--model",
        "squeezenet1_1",
        "--topk",
        "2",
        "--batch-size",
        "4",
        "-q",
        "--output",
        str(out),
    ]
    child = subprocess.Popen(
        [sys.executable, "-m", "dlwp_models", *args],
        env=env.subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while (not out.exists() or out.stat().st_size < 200) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.02)
    time.sleep(random.uniform(0, 0.5))  # a random moment once records are flowing
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run ended before it could be killed; give it more inputs"
    before = out.read_bytes()
    result = env.cli(*args, "--resume")
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == "1 of 101 failed"
    if suffix == "jsonl":
        inputs = [r["input"] for r in read_jsonl(out)]
    else:
        inputs = [row[0] for row in list(csv.reader(io.StringIO(out.read_text())))[2:]]
    assert sorted(inputs) == sorted(listed(folder)) and len(inputs) == 101  # exactly one each
    kept = before[: before.rfind(b"\n") + 1]
    kept_lines = [line for line in kept.decode().splitlines(keepends=True) if "broken.jpg" not in line]
    assert out.read_text().startswith("".join(kept_lines))  # what was done is kept, not redone


# --------------------------------------------------------------------------- memory


def test_memory_stays_flat_over_2048_images(env, tmp_path):
    """Resident memory after 2,000 inputs is within 50 MB of that after 200. The pictures decode to
    48 KiB each, so holding the 2,000 inputs (as translate once did) would add about 100 MB; the
    generator runs at 8 pixels a side so that the test is fast."""
    folder = tmp_path / "flat"
    make_images(folder, 2048, size=(128, 128))  # 32 full batches: a smaller last batch is a new
    # shape, for which the CPU kernels allocate new scratch space once (a step, not growth)
    out = tmp_path / "r.jsonl"
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dlwp_models",
            "translate",
            str(folder),
            "-o",
            str(tmp_path / "z"),
            "--size",
            "8",
            "--batch-size",
            "64",
            "-q",
            "--output",
            str(out),
        ],
        env=env.subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    samples = []  # (records written, RSS)
    deadline = time.monotonic() + 300
    while child.poll() is None and time.monotonic() < deadline:
        lines = out.read_bytes().count(b"\n") if out.exists() else 0
        try:
            status = Path(f"/proc/{child.pid}/status").read_text()
        except OSError:
            break
        rss = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), None)
        if rss is not None and lines:
            samples.append((lines, rss))
        time.sleep(0.02)
    assert child.wait(timeout=60) == 0, child.stderr.read().decode()
    assert out.read_bytes().count(b"\n") == 2048 + 1  # the header, then one record per input
    at_200 = next(rss for lines, rss in samples if lines >= 200)
    # while the run is still working (the interpreter's own shutdown after the last record is not part of it)
    near_2000 = [rss for lines, rss in samples if 1800 <= lines < 2048]
    assert near_2000, "the run was not sampled near its end"
    growth = max(near_2000) - at_200
    print(f"RSS after 200: {at_200 / 1e6:.0f} MB; largest from 1800 to 2048: {max(near_2000) / 1e6:.0f} MB")
    trace = [(lines, round(rss / 1e6)) for lines, rss in samples[:: max(1, len(samples) // 40)]]
    assert growth < 50e6, f"(records, MB) over the run: {trace}"

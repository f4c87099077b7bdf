"""``--engine ray`` on a local Ray of 2 CPUs: records equal the local engine's for each task, an
inference actor killed mid-run still leaves exactly one record per input, and a clear error when
Ray is not installed."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from batch_files import make_images, make_mixed_folder, read_jsonl
from PIL import Image

from dlwp_models.cli.main import main


@pytest.fixture(scope="module")
def ray_cluster(batch_env):
    """One local Ray for the module, started with the batch weights' settings (its workers inherit them)."""
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as patch:  # the environment is restored however the module ends
        for key, value in batch_env.vars().items():
            patch.setenv(key, value)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.fixture
def use_env(batch_env, monkeypatch):
    for key, value in batch_env.vars().items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed-ray")
    make_mixed_folder(folder)
    return folder


def by_input(path: Path) -> dict[str, dict]:
    records = read_jsonl(path)
    table = {r["input"]: r for r in records}
    assert len(table) == len(records), "an input has two records"
    return table


@pytest.mark.parametrize(
    "task, extra",
    [
        ("classify", ["--model", "squeezenet1_1", "--topk", "3"]),
        ("caption", ["--beam-size", "2"]),
        ("translate", ["--size", "32", "-o", "{pictures}"]),
    ],
)
def test_ray_records_equal_the_local_engines(task, extra, ray_cluster, use_env, mixed, tmp_path, capsys):
    results = {}
    for engine in ("local", "ray"):
        argv = [
            task,
            str(mixed),
            *[a.format(pictures=tmp_path / f"pictures-{engine}") for a in extra],
            "--engine",
            engine,
            "--output",
            str(tmp_path / f"{engine}.jsonl"),
            "-q",
        ]
        if engine == "ray":
            argv += ["--num-workers", "2"]
        assert main(argv) == 1  # the damaged files
        assert capsys.readouterr().err.strip().splitlines()[-1] == "2 of 9 failed"
        results[engine] = by_input(tmp_path / f"{engine}.jsonl")
    local, ray = results["local"], results["ray"]
    assert set(local) == set(ray)
    for name, record in local.items():
        if task == "translate" and "output" in record:
            assert Path(ray[name]["output"]).name == Path(record["output"]).name
            ours, theirs = Image.open(ray[name]["output"]), Image.open(record["output"])
            assert ours.tobytes() == theirs.tobytes() and ours.size == theirs.size  # the same pixels
            assert ours.info["dlwp-job"] != theirs.info["dlwp-job"]  # each job names itself in its pictures
        elif task == "classify" and "predictions" in record:
            # an actor's torch runs on one thread (Ray's OMP_NUM_THREADS for a fraction of a CPU) and
            # batches differently, so float32 sums round differently in the last bits; labels and
            # indices must be the same, percentages equal to float32 precision
            got = ray[name]["predictions"]
            assert [(p["label"], p["index"]) for p in got] == [(p["label"], p["index"]) for p in record["predictions"]]
            assert [p["percent"] for p in got] == pytest.approx([p["percent"] for p in record["predictions"]], rel=1e-5)
        else:
            assert ray[name] == record


def _inference_actor_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"_Answerer" in cmdline and int(entry) != os.getpid():
                pids.append(int(entry))
    return pids


def test_a_killed_actor_still_leaves_one_record_per_input(ray_cluster, use_env, tmp_path, capsys):
    folder = tmp_path / "many"
    inputs = sorted(str(p) for p in make_images(folder, 80, size=(24, 32)))
    out = tmp_path / "r.jsonl"
    killed: list[int] = []

    def kill_one_actor_mid_run() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            lines = out.read_bytes().count(b"\n") if out.exists() else 0
            pids = _inference_actor_pids()
            if lines >= 8 and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(lines)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_actor_mid_run, daemon=True)
    killer.start()
    code = main(
        [
            "classify",
            str(folder),
            "--model",
            "squeezenet1_1",
            "--topk",
            "1",
            "--batch-size",
            "2",
            "--engine",
            "ray",
            "--num-workers",
            "2",
            "--output",
            str(out),
            "-q",
        ]
    )
    killer.join(timeout=5)
    assert killed and killed[0] < len(inputs), "no actor was killed mid-run"
    assert code == 0, capsys.readouterr().err
    assert sorted(by_input(out)) == inputs


def test_a_file_name_that_is_not_utf8_gets_its_record_on_ray_and_is_resumed(ray_cluster, use_env, tmp_path, capsys):
    """Names are data on Ray too: a name of undecodable bytes travels as bytes, its record is ASCII
    JSON, and --resume matches it (issue 25's attack: rc 1 and every --resume failing)."""
    import shutil

    folder = tmp_path / "odd"
    source = make_images(folder, 1)[0]
    odd = os.path.join(os.fsencode(folder), b"\xff\xfe.png")
    shutil.copy(source, odd)
    out = tmp_path / "ray.jsonl"
    argv = [
        "classify",
        str(folder),
        "--model",
        "squeezenet1_1",
        "--engine",
        "ray",
        "--num-workers",
        "1",
        "--output",
        str(out),
        "-q",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    names = sorted(r["input"] for r in read_jsonl(out))
    assert names == sorted([str(source), os.fsdecode(odd)])
    before = out.read_bytes()
    assert main([*argv, "--resume"]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == "0 of 2 failed" and out.read_bytes() == before


def test_engine_ray_without_ray_is_a_clear_error(use_env, mixed, tmp_path, capsys, monkeypatch):
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as if not installed
    out = tmp_path / "r.jsonl"
    code = main(["classify", str(mixed), "--model", "squeezenet1_1", "--engine", "ray", "--output", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("dlwp: error: --engine ray needs Ray Data") and 'pip install -e ".[ray]"' in err
    assert "Traceback" not in err and not out.exists()

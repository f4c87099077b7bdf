#!/usr/bin/env python3
"""The mutation check of tests/README.md: mutmut over the core modules, then a per-module table.

    python3 tools/mutation_check.py                  # every group; reuses earlier results in mutants/
    python3 tools/mutation_check.py fetcher search   # only these groups
    python3 tools/mutation_check.py --fresh          # forget earlier results and start over
    python3 tools/mutation_check.py --report         # only print the table of the last run
    python3 tools/mutation_check.py --rerun-survivors unpickler   # its survivors again, after new tests

mutmut's settings are in setup.cfg's [mutmut] section (which modules, which tests). mutmut copies
the package and the tests into mutants/ and runs the tests there; this script puts mutants/ first on
PYTHONPATH too, so that the tests' own subprocesses (the CLI, hub.load in a fresh interpreter)
import the mutated copy, not a checkout or the editable install. It is a developer's tool, not a CI
step (hours for every group on two cores; one group at a time fits a session, see tests/README.md)
and pytest never collects it.

A mutant judged equivalent (no observable difference) is listed in tools/mutation_equivalents.txt
with the reason; the score is killed / (mutants - equivalent - not run).
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
EQUIVALENTS = ROOT / "tools" / "mutation_equivalents.txt"

# group -> the modules it mutates (each listed in setup.cfg's [mutmut] only_mutate)
GROUPS = {
    "fetcher": [
        "dlwp_models/weights/download.py",
        "dlwp_models/weights/http.py",
        "dlwp_models/weights/resume.py",
        "dlwp_models/weights/store.py",
        "dlwp_models/weights/derived.py",
        "dlwp_models/weights/integrity.py",
    ],
    "transforms": ["dlwp_models/inputs/transforms.py", "dlwp_models/inputs/caption_transform.py"],
    "search": ["dlwp_models/models/captioning/search.py"],
    "unpickler": ["dlwp_models/loading/checkpoints.py"],
    "cli": ["dlwp_models/cli/arguments.py"],
}

# group -> the tests its mutants are run against. mutmut picks, for each mutated function, the tests
# (of setup.cfg's selection) that called it; this narrows them to the group's own tests, so that a
# fetcher mutant does not download a generated ResNet-101 for the captioning tests, say.
TESTS = {
    # the fetcher's and the transforms' own tests: the loading, CLI and captioning tests also call
    # them, but each loads generated models, and with them the two groups took many hours on 2 cores
    "fetcher": ["tests/weights/"],
    "transforms": ["tests/inputs/", "tests/models/test_cyclegan.py"],
    # the decoding tests (hand-set toy decoders, upstream's loop): not the end-to-end captions, each
    # of which loads a generated ResNet-101 for its module
    "search": [
        f"tests/models/test_captioning.py::test_{name}"
        for name in ("core_step", "greedy", "beam", "first_finished", "unk", "max_length", "sampling", "generate")
    ]
    + ["tests/models/test_caption_search.py"],
    "unpickler": ["tests/loading/", "tests/models/test_captioning.py", "tests/models/test_cyclegan.py"],
    "cli": ["tests/cli/test_cli.py", "tests/models/test_captioning.py"],
}
GROUP_OF_MODULE = {path[:-3].replace("/", "."): group for group, paths in GROUPS.items() for path in paths}

# below this much free disk the script does not start, and stops a run that gets there: each mutant's
# pytest session writes generated weights (up to 2.2 GB for the captioning tests) to its temp folder
MIN_FREE_GB = 15

# mutmut's exit codes -> the columns of the table
STATUS = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    36: "timeout",
    -24: "timeout",
    24: "timeout",
    152: "timeout",
    255: "timeout",
    None: "not run",
}


def module_name(path: str) -> str:
    return path[:-3].replace("/", ".")


def equivalents() -> dict[str, str]:
    """mutant name -> why it is equivalent or not worth a test."""
    found = {}
    if EQUIVALENTS.exists():
        for line in EQUIVALENTS.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                name, _, why = line.partition(" ")
                found[name] = why.strip()
    return found


def results(path: str) -> dict[str, str]:
    meta = MUTANTS / (path + ".meta")
    if not meta.exists():
        return {}
    codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    return {name: STATUS.get(code, "suspicious") for name, code in codes.items()}


def module_of_key(key: str) -> str:
    """``pkg.mod.x_func`` / ``pkg.mod.xǁClassǁmethod`` -> ``pkg.mod``."""
    parts = key.split(".")
    while parts and not parts[-1].startswith(("x_", "xǁ")):
        parts.pop()
    return ".".join(parts[:-1])


def restrict_tests() -> None:
    """Keep, for each mutated function, only the tests of its group (see TESTS)."""
    path = MUTANTS / "mutmut-stats.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for key, tests in data["tests_by_mangled_function_name"].items():
        group = GROUP_OF_MODULE.get(module_of_key(key))
        if group is not None:
            data["tests_by_mangled_function_name"][key] = [t for t in tests if t.startswith(tuple(TESTS[group]))]
    path.write_text(json.dumps(data, indent=4), encoding="utf-8")


def table(groups: list[str]) -> str:
    """A markdown table: per module, the mutants by outcome and the score (killed / judged)."""
    accepted = equivalents()
    rows = [
        "| group | module | mutants | killed | survived | timed out | no tests / suspicious | not run "
        "| equivalent | score |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group in groups:
        for path in GROUPS[group]:
            status = results(path)
            count = Counter(status.values())
            equivalent = sum(1 for n, s in status.items() if n in accepted and s == "survived")
            other = count["suspicious"] + count["no tests"] + count["skipped"]
            judged = len(status) - equivalent - count["not run"]
            score = f"{100 * count['killed'] / judged:.1f} %" if judged else "-"
            rows.append(
                f"| {group} | {Path(path).name} | {len(status)} | {count['killed']} "
                f"| {count['survived'] - equivalent} | {count['timeout']} | {other} | {count['not run']} "
                f"| {equivalent} | {score} |"
            )
    return "\n".join(rows)


def survivors(groups: list[str]) -> list[str]:
    accepted = equivalents()
    return [
        name
        for group in groups
        for path in GROUPS[group]
        for name, s in results(path).items()
        if s == "survived" and name not in accepted
    ]


def check_tests_are_selected() -> None:
    """Every test file of TESTS must be in setup.cfg's selection: mutmut never runs the others, and a
    group's own test file missing there leaves its mutants alive without a word (it happened)."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    selected = parser["mutmut"]["pytest_add_cli_args_test_selection"].split()
    missing = [
        path
        for tests in TESTS.values()
        for path in (test.split("::")[0] for test in tests)
        if not path.startswith(tuple(selected))
    ]
    if missing:
        sys.exit(
            f"setup.cfg's [mutmut] pytest_add_cli_args_test_selection lacks {', '.join(sorted(set(missing)))}: "
            "mutmut would never run them; add them there"
        )


def forget_lost_results() -> None:
    """A mutated copy in mutants/ whose results file is gone (a run that died writing it) makes
    mutmut find no mutants there, and drop the module's entries from its test map as stale. Remove
    the copy and the test map, so that mutmut makes both again."""
    for path in (p for paths in GROUPS.values() for p in paths):
        copy = MUTANTS / path
        if copy.exists() and not (MUTANTS / (path + ".meta")).exists():
            print(f"{copy} has no results file: making its mutants and the test map again", file=sys.stderr)
            copy.unlink()
            (MUTANTS / (path + ".spans")).unlink(missing_ok=True)
            (MUTANTS / "mutmut-stats.json").unlink(missing_ok=True)


def run_until_done_or_low_disk(command: list[str], env: dict[str, str], scratch: Path) -> int:
    """Run mutmut; stop it (and say so) if free disk under the temp folder drops below MIN_FREE_GB."""
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    try:
        while process.poll() is None:
            time.sleep(5)
            if (free := shutil.disk_usage(scratch).free / 1e9) < MIN_FREE_GB:
                print(
                    f"stopping mutmut: only {free:.0f} GB left on the disk of {scratch}; results so far "
                    "are kept in mutants/, run the script again to go on",
                    file=sys.stderr,
                )
                stop(process)
                return 1
    except BaseException:  # Ctrl-C: mutmut runs in a session of its own, so stop it here
        stop(process)
        raise
    return process.returncode


def stop(process: subprocess.Popen) -> None:
    """mutmut and its workers, before their temp folder is removed."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run_mutmut(mutmut: str, args: argparse.Namespace, env: dict[str, str], scratch: Path) -> int:
    """1. mutants, and which tests call which function (for new tests only after the first time),
    running the few argument-handling mutants on the way; 2. narrow the tests per group; 3. the
    mutants: of the groups named (again from scratch), or every one without a result yet."""
    phases = [
        [f"{module_name(p)}.*" for p in GROUPS["cli"]],
        [f"{module_name(p)}.*" for g in args.groups for p in GROUPS[g]],
    ]
    for number, names in enumerate(phases):
        if number == 1:
            restrict_tests()
            if args.rerun_survivors:
                names = survivors(args.groups or list(GROUPS))
                if not names:
                    break
        command = [mutmut, "run", "--max-children", str(args.max_children), *names]
        code = run_until_done_or_low_disk(command, env, scratch)
        if code != 0:
            print(f"mutmut run failed (exit {code}); see its output above", file=sys.stderr)
            return code
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="*", metavar="GROUP", help=f"any of {', '.join(GROUPS)} (default: all)")
    parser.add_argument("--fresh", action="store_true", help="delete mutants/ first (all results)")
    parser.add_argument("--report", action="store_true", help="print the table of the last run only")
    parser.add_argument(
        "--rerun-survivors",
        action="store_true",
        help="run only the survivors (not judged equivalent) of the groups again, after new tests",
    )
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    if unknown := [g for g in args.groups if g not in GROUPS]:
        parser.error(f"unknown group(s) {', '.join(unknown)}: choose from {', '.join(GROUPS)}")
    groups = args.groups or list(GROUPS)
    if not args.report:
        if args.fresh:
            shutil.rmtree(MUTANTS, ignore_errors=True)
        # mutants/ must exist before mutmut starts: a PYTHONPATH entry missing at start-up is never searched
        MUTANTS.mkdir(exist_ok=True)
        check_tests_are_selected()
        forget_lost_results()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DLWP_")}
        # the tests' subprocesses import the mutated copy too; tools/ holds the pytest plugin below
        env["PYTHONPATH"] = os.pathsep.join([str(MUTANTS), str(ROOT / "tools")])
        # every mutant is a pytest session of its own: without these each leaves its temporary folder
        # (up to 2.2 GB of generated weights) behind, and a run fills the disk
        env["PYTEST_ADDOPTS"] = (
            env.get("PYTEST_ADDOPTS", "") + " -o tmp_path_retention_policy=none -p mutation_pytest_plugin"
        ).strip()
        mutmut = shutil.which("mutmut") or sys.exit("mutmut is not installed: pip install mutmut")
        # every pytest session of this run (one per mutant) gets its numbered folder under one temp
        # folder of the run's own, removed at exit: the plugin above does not run in a session that
        # is killed (a timed-out mutant, a stopped run)
        scratch = Path(tempfile.mkdtemp(prefix="dlwp-mutation-"))
        # a `kill` (SIGTERM) of this script unwinds like Ctrl-C does: mutmut stopped, folder removed
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        env["TMPDIR"] = str(scratch)
        try:
            if (free := shutil.disk_usage(scratch).free / 1e9) < MIN_FREE_GB:
                print(
                    f"only {free:.0f} GB free under {scratch.parent}; the mutation check needs "
                    f"{MIN_FREE_GB} GB: free some space and run it again",
                    file=sys.stderr,
                )
                return 1
            return_code = run_mutmut(mutmut, args, env, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if return_code != 0:
            return return_code
    print(table(groups))
    left = survivors(groups)
    if left:
        print(f"\n{len(left)} survivors not judged equivalent (see them with `mutmut show NAME`):")
        print("\n".join(left))
    return 0


if __name__ == "__main__":
    sys.exit(main())

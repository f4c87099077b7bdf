#!/usr/bin/env python3
"""The mutation check of tests/README.md: mutmut over the core modules, then a per-module table.

    python3 tools/mutation_check.py                  # every group; reuses earlier results in mutants/
    python3 tools/mutation_check.py fetcher search   # only these groups
    python3 tools/mutation_check.py --fresh          # forget earlier results and start over
    python3 tools/mutation_check.py --report         # only print the table of the last run

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
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
EQUIVALENTS = ROOT / "tools" / "mutation_equivalents.txt"

# group -> the modules it mutates (each listed in setup.cfg's [mutmut] only_mutate)
GROUPS = {
    "fetcher": ["dlwp_models/weights/download.py", "dlwp_models/weights/http.py", "dlwp_models/weights/resume.py",
                "dlwp_models/weights/store.py", "dlwp_models/weights/integrity.py"],
    "transforms": ["dlwp_models/inputs/transforms.py"],
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
    "search": [f"tests/models/test_captioning.py::test_{name}" for name in (
        "core_step", "greedy", "beam", "first_finished", "unk", "max_length", "sampling", "generate")]
    + ["tests/models/test_caption_search.py"],
    "unpickler": ["tests/loading/", "tests/models/test_captioning.py", "tests/models/test_cyclegan.py"],
    "cli": ["tests/cli/test_cli.py", "tests/models/test_captioning.py"],
}
GROUP_OF_MODULE = {path[:-3].replace("/", "."): group for group, paths in GROUPS.items() for path in paths}

# mutmut's exit codes -> the columns of the table
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
          -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", None: "not run"}


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
    rows = ["| group | module | mutants | killed | survived | timed out | no tests / suspicious | not run "
            "| equivalent | score |", "|---|---|---|---|---|---|---|---|---|---|"]
    for group in groups:
        for path in GROUPS[group]:
            status = results(path)
            count = Counter(status.values())
            equivalent = sum(1 for n, s in status.items() if n in accepted and s == "survived")
            other = count["suspicious"] + count["no tests"] + count["skipped"]
            judged = len(status) - equivalent - count["not run"]
            score = f"{100 * count['killed'] / judged:.1f} %" if judged else "-"
            rows.append(f"| {group} | {Path(path).name} | {len(status)} | {count['killed']} "
                        f"| {count['survived'] - equivalent} | {count['timeout']} | {other} | {count['not run']} "
                        f"| {equivalent} | {score} |")
    return "\n".join(rows)


def survivors(groups: list[str]) -> list[str]:
    accepted = equivalents()
    return [name for group in groups for path in GROUPS[group] for name, s in results(path).items()
            if s == "survived" and name not in accepted]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="*", metavar="GROUP", help=f"any of {', '.join(GROUPS)} (default: all)")
    parser.add_argument("--fresh", action="store_true", help="delete mutants/ first (all results)")
    parser.add_argument("--report", action="store_true", help="print the table of the last run only")
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
        env = {k: v for k, v in os.environ.items() if not k.startswith("DLWP_")}
        env["PYTHONPATH"] = str(MUTANTS)     # the tests' subprocesses import the mutated copy too
        # every mutant is a pytest session of its own: without this each leaves its temporary folder
        # (hundreds of MB of generated weights) in /tmp, and a run fills the disk
        env["PYTEST_ADDOPTS"] = (env.get("PYTEST_ADDOPTS", "") + " -o tmp_path_retention_policy=none").strip()
        mutmut = shutil.which("mutmut") or sys.exit("mutmut is not installed: pip install mutmut")
        # 1. mutants, and which tests call which function (for new tests only after the first time),
        #    running the few argument-handling mutants on the way; 2. narrow the tests per group;
        # 3. the mutants: of the groups named (again from scratch), or every one without a result yet
        phases = [[f"{module_name(p)}.*" for p in GROUPS["cli"]],
                  [f"{module_name(p)}.*" for g in args.groups for p in GROUPS[g]]]
        for number, names in enumerate(phases):
            if number == 1:
                restrict_tests()
            command = [mutmut, "run", "--max-children", str(args.max_children), *names]
            done = subprocess.run(command, cwd=ROOT, env=env)
            if done.returncode != 0:
                print(f"mutmut run failed (exit {done.returncode}); see its output above", file=sys.stderr)
                return done.returncode
    print(table(groups))
    left = survivors(groups)
    if left:
        print(f"\n{len(left)} survivors not judged equivalent (see them with `mutmut show NAME`):")
        print("\n".join(left))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The task subcommands (``classify``, ``translate``, ``caption``): their shared options, the batch-job
options, and the one way each runs: print each input's answer, or with ``--output`` hand the job
to :mod:`dlwp_models.batch` (on this machine or on Ray). The answers come from the task
(:mod:`dlwp_models.tasks`); this module parses, prints and returns the exit status."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ..batch import Job, Settings, local_engine, run_job
from ..errors import UsageError
from ..inputs.images import image_sources
from ..models.onnx_backend import BACKENDS
from ..tasks import ModelSpec, Task
from .arguments import positive_int

__all__ = ["add_task_command", "batch_usage_error", "run_task"]

_INPUTS_HELP = (
    "image files or http(s) URLs; with --output also folders, quoted globs, @list.txt or - (a list on standard input)"
)
_BATCH_ONLY = (
    ("resume", False, "--resume"),
    ("on_error", None, "--on-error"),
    ("batch_size", None, "--batch-size"),
    ("engine", None, "--engine"),
    ("ray_address", None, "--ray-address"),
    ("num_workers", None, "--num-workers"),
    ("device", None, "--device"),
    ("progress", None, "--progress"),
)


def add_task_command(
    sub: argparse._SubParsersAction,
    name: str,
    help: str,
    make_task: Callable[[Any], Task],
    *,
    weights: str,
    backend: bool,
) -> argparse.ArgumentParser:
    """A task's subcommand: INPUTS, --weights, -q, the batch-job options and, for the tasks whose
    networks ONNX Runtime can run, --backend; ``make_task(args)`` makes the task from its options."""
    p = sub.add_parser(name, help=help)
    p.add_argument("images", nargs="+", metavar="INPUT", help=_INPUTS_HELP)
    p.add_argument("--weights", help=weights)
    if backend:
        p.add_argument(
            "--backend",
            choices=BACKENDS,
            default="eager",
            help="engine for the network: eager PyTorch, as the book (default), or ONNX Runtime "
            '(faster; needs pip install -e ".[onnx]"; last-digit differences)',
        )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_batch_options(p)
    p.set_defaults(run=run_task, make_task=make_task)
    return p


def _add_batch_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "batch jobs",
        "with --output, INPUTS may also be folders (searched recursively for images), quoted "
        "globs, @list.txt (one path or URL a line) or - (that list on standard input)",
    )
    group.add_argument(
        "--output",
        dest="records",
        metavar="FILE",
        help="write one record per input to FILE as each batch completes: .jsonl (JSON Lines) "
        "or .csv; - writes JSON Lines to standard output",
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed run: skip inputs FILE already answers, retry its failures, append",
    )
    group.add_argument(
        "--on-error",
        choices=("skip", "stop"),
        help="skip (default): record a failure and go on; stop: end the run at the first failure",
    )
    group.add_argument("--batch-size", type=positive_int, help="inputs per forward pass (default: the model's)")
    group.add_argument("--engine", choices=("local", "ray"), help="local (default): this process; ray: Ray Data")
    group.add_argument(
        "--ray-address", metavar="ADDR", help="join this Ray cluster (default: $RAY_ADDRESS, else a local Ray)"
    )
    group.add_argument("--num-workers", type=positive_int, help="Ray actors, each holding one model (default 2)")
    group.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        help="where the model runs (default cpu); with Ray, cuda gives each actor one GPU",
    )
    group.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on standard error (default: only on a terminal)",
    )


def batch_usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the batch options of ``args``, or None."""
    if args.records is None:
        given = [flag for name, default, flag in _BATCH_ONLY if getattr(args, name) not in (default, None)]
        if given:
            return f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} to batch jobs; add --output FILE"
        return None
    if args.resume and args.records == "-":
        return "--resume needs an --output file; standard output cannot be resumed"
    if (args.engine or "local") == "local":
        for name, flag in (("ray_address", "--ray-address"), ("num_workers", "--num-workers")):
            if getattr(args, name) is not None:
                return f"{flag} applies to --engine ray"
    return None


def run_task(args: argparse.Namespace) -> int:
    """Run the subcommand's task on its inputs; the exit status."""
    task: Task = args.make_task(args)
    model = getattr(args, "model", None) or task.default_model
    try:
        task.check_model(model)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    spec = ModelSpec(model, args.weights, args.device or "cpu", getattr(args, "backend", None) or "eager")
    if args.records is not None:
        return _run_batch(args, Job(task, spec, args.batch_size))
    return _print_answers(args, task, spec)


def _run_batch(args: argparse.Namespace, job: Job) -> int:
    settings = Settings(
        specs=tuple(args.images),
        output=args.records,
        resume=args.resume,
        stop_on_error=args.on_error == "stop",
        progress=args.progress,
        quiet=args.quiet,
    )
    if args.engine == "ray":
        from ..batch.ray_engine import ray_engine

        engine = ray_engine(address=args.ray_address, num_workers=args.num_workers or 2, quiet=args.quiet)
    else:
        engine = local_engine(args.quiet)
    outcome = run_job(job, settings, engine)
    if outcome.stopped_at is not None:
        print(f"dlwp: error: {outcome.stopped_at['input']}: {outcome.stopped_at['error']}", file=sys.stderr)
        print("stopped at the first failure (--on-error stop): ", end="", file=sys.stderr)
    print(f"{outcome.failed} of {outcome.seen} failed", file=sys.stderr)
    return outcome.status


def _print_answers(args: argparse.Namespace, task: Task, spec: ModelSpec) -> int:
    """Each input's answer on standard output as it comes, each failure on standard error; 1 if any
    failed. Missing files, folders, bad URLs and outputs that may not be written fail before the
    model is loaded."""
    task.check_outputs(args.images)
    image_sources(args.images)
    model = spec.build(progress=not args.quiet)
    task.check(model)
    failed = 0
    for name, outcome in task.stream(model, args.images, backend=spec.backend):
        record = task.record(name, outcome)
        if "error" in record:
            failed += 1
            print(f"dlwp: error: {name}: {record['error']}", file=sys.stderr)
        else:
            print(task.text(record), flush=True)
    return 1 if failed else 0

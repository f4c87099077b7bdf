"""Batch jobs for ``classify``, ``caption`` and ``translate``: with ``--output`` the inputs are
streamed (folders, globs, ``@list.txt``, ``-``), one record per input is written as its batch
completes (JSON Lines or CSV), a killed run continues with ``--resume``, and ``--engine ray``
runs the same job on Ray Data. Without ``--output`` the commands print as before.

* :mod:`.inputs` expands INPUTS lazily; :mod:`.records` writes and resumes the output;
  :mod:`.tasks` turns a model's stream into records; :mod:`.runner` is the loop and the local
  engine; :mod:`.ray_engine` the Ray one (imported only when asked for).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from .runner import Settings, local_engine, run_job
from .tasks import Job
from ..arguments import positive_int as _positive_int

__all__ = ["add_batch_options", "batch_usage_error", "run_batch"]

_BATCH_ONLY = (("resume", False, "--resume"), ("on_error", None, "--on-error"), ("batch_size", None, "--batch-size"),
               ("engine", None, "--engine"), ("ray_address", None, "--ray-address"),
               ("num_workers", None, "--num-workers"), ("device", None, "--device"), ("progress", None, "--progress"))


def add_batch_options(parser: argparse.ArgumentParser) -> None:
    """The batch-job options of a task's subcommand."""
    group = parser.add_argument_group(
        "batch jobs", "with --output, INPUTS may also be folders (searched recursively for images), quoted "
                      "globs, @list.txt (one path or URL a line) or - (that list on standard input)")
    group.add_argument("--output", dest="records", metavar="FILE",
                       help="write one record per input to FILE as each batch completes: .jsonl (JSON Lines) "
                            "or .csv; - writes JSON Lines to standard output")
    group.add_argument("--resume", action="store_true",
                       help="continue a killed run: skip inputs FILE already answers, retry its failures, append")
    group.add_argument("--on-error", choices=("skip", "stop"),
                       help="skip (default): record a failure and go on; stop: end the run at the first failure")
    group.add_argument("--batch-size", type=_positive_int, help="inputs per forward pass (default: the model's)")
    group.add_argument("--engine", choices=("local", "ray"), help="local (default): this process; ray: Ray Data")
    group.add_argument("--ray-address", metavar="ADDR",
                       help="join this Ray cluster (default: $RAY_ADDRESS, else a local Ray)")
    group.add_argument("--num-workers", type=_positive_int, help="Ray actors, each holding one model (default 2)")
    group.add_argument("--device", choices=("cpu", "cuda"), help="where the model runs (default cpu); with Ray, "
                                                                 "cuda gives each actor one GPU")
    group.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="show a progress bar on standard error (default: only on a terminal)")


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


def run_batch(args: argparse.Namespace, task: str) -> int:
    """Run ``task`` as a batch job with the parsed ``args``; the exit status."""
    device = args.device or "cpu"
    if device == "cuda" and (args.engine or "local") == "local":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda, but no CUDA GPU is visible to PyTorch here; run on a machine with "
                             "one, or use --device cpu.")
    job = Job(task=task, model=getattr(args, "model", None) or _default_model(task), weights=args.weights,
              device=device, batch_size=args.batch_size, topk=getattr(args, "topk", 5),
              beam_size=getattr(args, "beam_size", 2), size=getattr(args, "size", 256),
              preset=getattr(args, "preset", "trained"),
              output_dir=os.fspath(args.output_dir) if getattr(args, "output_dir", None) else None,
              overwrite=bool(getattr(args, "overwrite", False) or args.resume),
              backend=getattr(args, "backend", None) or "eager")
    settings = Settings(specs=tuple(args.images), output=args.records, resume=args.resume,
                        stop_on_error=args.on_error == "stop", progress=args.progress, quiet=args.quiet)
    engine: Any
    if args.engine == "ray":
        from .ray_engine import ray_engine

        engine = ray_engine(address=args.ray_address, num_workers=args.num_workers or 2, quiet=args.quiet)
    else:
        engine = local_engine(args.quiet)
    return run_job(job, settings, engine)


def _default_model(task: str) -> str:
    from .tasks import TASK_MODELS

    return TASK_MODELS[task]

"""``--engine ray``: the same batch job on Ray Data (imported only when asked for).

The inputs become a dataset; each is read and decoded by a Ray task (so the cluster's cores do
the decoding, and for classify also the resize and crop of the weights' transform, so that 150 kB
instead of megabytes travel per image); inference runs in ``map_batches`` on a pool of ``--num-workers`` actors, each
building the model once through dlwp's normal path (cache, mirrors, ``DLWP_OFFLINE`` and the
``DLWP_*`` settings of the driver apply on every node), with one GPU per actor under ``--device
cuda``. An actor that dies is restarted and its batch retried, so every input gets exactly one
record; records arrive in the order batches finish. Inputs must be readable from every node (a
shared file system, or URLs), and translate's ``-o`` folder writable from every node.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from ..errors import RayNotInstalledError
from ..inputs.streaming import INPUT_ERRORS
from ..tasks import error_record, error_text
from .runner import Job

__all__ = ["ray_engine"]

log = logging.getLogger(__name__)

#: logical CPUs an inference actor asks for: below 1, so that decoding tasks still get a share of a
#: small machine's CPUs. (Ray then runs the actor's torch on one thread: on CPUs, use about one
#: worker per core.)
ACTOR_CPUS = 0.5
#: logical CPUs a decoding task asks for: a whole one, so that Ray starts one decoding worker
#: process per free core (each imports torch and dlwp: a quarter CPU let Ray start four per core,
#: and on two cores their start-up cost more than the decoding; measured in benchmarks/)
DECODE_CPUS = 1


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RayNotInstalledError(
            f"--engine ray needs Ray Data, which cannot be imported here ({exc}). Install it with "
            'pip install -e ".[ray]" (or pip install "ray[data]"), or run with --engine local.'
        ) from None
    return ray


def ray_engine(
    *, address: str | None, num_workers: int, quiet: bool
) -> Callable[[Job], Callable[[Iterable[str]], Iterator[dict]]]:
    """An engine (see :mod:`.runner`) that runs jobs on the Ray cluster at ``address`` (default:
    ``$RAY_ADDRESS``, else a local Ray started for this run) with ``num_workers`` model actors."""
    ray = _import_ray()

    def start(job: Job) -> Callable[[Iterable[str]], Iterator[dict]]:
        if not ray.is_initialized():
            target = address or os.environ.get("RAY_ADDRESS") or None
            settings = {key: value for key, value in os.environ.items() if key.startswith("DLWP_")}
            ray.init(
                address=target,
                include_dashboard=False,
                log_to_driver=not quiet,
                logging_level=logging.WARNING,
                runtime_env={"env_vars": settings} if settings else None,
            )
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        return lambda todo: _records(ray, job, todo, num_workers)

    return start


def _records(ray: Any, job: Job, todo: Iterable[str], num_workers: int) -> Iterator[dict]:
    # names travel as the OS's bytes (Arrow strings cannot hold a file name's undecodable bytes)
    items = [{"input": os.fsencode(item)} for item in todo]
    if not items:
        return
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // 4, 1000)))
    ds = ds.map(_decode_row, fn_kwargs={"job": job}, num_cpus=DECODE_CPUS)
    ds = ds.map_batches(
        _Answerer,
        fn_constructor_kwargs={"job": job},
        batch_format="numpy",
        batch_size=job.batch_size or job.task.default_batch_size or 16,
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_cpus=ACTOR_CPUS,
        num_gpus=1 if job.model.device == "cuda" else 0,
    )
    # Ray Data restarts a dead actor and retries its batch (max_restarts = max_task_retries = -1)
    for row in ds.iter_rows():
        yield json.loads(row["record"])


def _decode_row(row: dict[str, Any], job: Job) -> dict[str, Any]:
    """A Ray task: read and decode one input into RGB pixels, and do what the task can do without
    the model (for classify with a weight set: its resize and crop, so that 150 kB instead of
    megabytes travel per image; ``prepared``), or say why it cannot be."""
    from ..inputs.images import load_image

    name = os.fsdecode(bytes(row["input"]))
    prepare = _decode_preparer(job)
    try:
        image = load_image(name)
        pixels = np.asarray(prepare(image) if prepare is not None else image, dtype=np.uint8)  # (H, W, 3)
    except INPUT_ERRORS as exc:
        return {
            "input": row["input"],
            "error": os.fsencode(error_text(exc)),
            "pixels": b"",
            "height": 0,
            "width": 0,
            "prepared": False,
        }
    return {
        "input": row["input"],
        "error": b"",
        "pixels": pixels.tobytes(),
        "height": pixels.shape[0],
        "width": pixels.shape[1],
        "prepared": prepare is not None,
    }


_PREPARERS: dict[Job, Callable[[Any], Any] | None] = {}


def _decode_preparer(job: Job) -> Callable[[Any], Any] | None:
    """The job's :meth:`~dlwp_models.tasks.Task.decode_preparer`, made once per decoding worker."""
    if job not in _PREPARERS:
        _PREPARERS[job] = job.task.decode_preparer(job.model)
    return _PREPARERS[job]


class _Answerer:
    """A Ray actor holding one model: decoded inputs in, one JSON record per input out."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.model = job.model.build(progress=False)
        job.task.check(self.model)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        import torch

        from ..inputs.images import load_image

        task, names = self.job.task, [os.fsdecode(bytes(name)) for name in batch["input"]]
        records: dict[int, dict] = {
            i: error_record(names[i], os.fsdecode(bytes(batch["error"][i])))
            for i in range(len(names))
            if batch["error"][i]
        }
        prepared: dict[int, Any] = {}
        for i in (i for i in range(len(names)) if i not in records):
            pixels = np.frombuffer(batch["pixels"][i], dtype=np.uint8).reshape(
                int(batch["height"][i]), int(batch["width"][i]), 3
            )
            try:
                prepared[i] = (
                    torch.from_numpy(pixels.copy())
                    if batch["prepared"][i]
                    else task.prepare(self.model, load_image(pixels.copy()))
                )
            except INPUT_ERRORS as exc:  # e.g. too small for this task: this input fails alone
                records[i] = error_record(names[i], exc)
        if prepared:
            try:
                answers = task.run(self.model, list(prepared.values()), backend=self.job.model.backend)
            except INPUT_ERRORS as exc:  # the batch failed: each of its inputs says why
                answers = [exc] * len(prepared)
            records.update((i, task.record(names[i], answer)) for i, answer in zip(prepared, answers))
        # ASCII JSON: a record may hold a file name's undecodable bytes, which Arrow strings cannot
        return {"record": [json.dumps(records[i], ensure_ascii=True) for i in range(len(names))]}

"""Ray Data's own cost per task, with the Ray engine's shape (a map task per block, then
``map_batches`` on 2 actors) but functions that do nothing: printed as JSON for bench_batch.py.

    python benchmarks/_ray_overhead.py [ROWS]

Three runs over the same rows (after a warm-up that starts the actors): few blocks and batches of
16; many blocks (so the difference is the cost of a block: one map task, its scheduling and its
object); few blocks and batches of 1 (the difference is the cost of an actor call). Each run starts its
own actor pool, which `pipeline_start_s` measures.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path


class _Nothing:
    """An actor that returns its batch (imports torch first, as the engine's actors do)."""

    def __init__(self) -> None:
        import torch  # noqa: F401

    def __call__(self, batch: dict) -> dict:
        return batch


def _same(row: dict) -> dict:
    return row


def main() -> None:
    import ray
    import ray.data

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's dlwp_models
    from dlwp_models.batch.ray_engine import ACTOR_CPUS, DECODE_CPUS

    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    started = time.perf_counter()
    ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    ray_init_s = time.perf_counter() - started
    ray.data.DataContext.get_current().enable_progress_bars = False

    def run(blocks: int, batch_size: int) -> tuple[float, float]:
        ds = ray.data.from_items([{"input": i} for i in range(rows)], override_num_blocks=blocks)
        ds = ds.map(_same, num_cpus=DECODE_CPUS).map_batches(
            _Nothing,
            batch_format="numpy",
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=2),
            num_cpus=ACTOR_CPUS,
        )
        t0 = time.perf_counter()
        first = None
        count = 0
        for _ in ds.iter_rows():
            count += 1
            if first is None:
                first = time.perf_counter() - t0
        assert count == rows
        return first or 0.0, time.perf_counter() - t0

    start_first, _ = run(20, 16)  # warm-up; its first row waits for the actor pool
    few = min(run(50, 16)[1] for _ in range(2))
    many_blocks = min(run(rows // 4, 16)[1] for _ in range(2))
    small_batches = min(run(50, 1)[1] for _ in range(2))
    print(
        json.dumps(
            {
                "rows": rows,
                "ray_init_s": ray_init_s,
                "pipeline_start_s": start_first,
                "per_block_ms": 1000 * (many_blocks - few) / (rows // 4 - 50),
                "per_batch_ms": 1000 * (small_batches - few) / (rows - rows / 16),
                "few_s": few,
                "many_blocks_s": many_blocks,
                "small_batches_s": small_batches,
            }
        )
    )


if __name__ == "__main__":
    main()

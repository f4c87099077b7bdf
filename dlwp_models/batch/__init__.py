"""Batch jobs: any task over thousands of inputs, streamed (folders, globs, ``@list.txt``, ``-``),
one record per input written as its batch completes (JSON Lines or CSV), a killed run continued
with ``--resume``, on this machine or on Ray Data.

* :mod:`.inputs` expands INPUTS lazily; :mod:`.records` writes and resumes the records file;
  :mod:`.runner` is the loop (:func:`run_job`) and the local engine; :mod:`.ray_engine` the Ray
  one (imported only when asked for). What a record holds is the task's (:mod:`dlwp_models.tasks`).
"""

from __future__ import annotations

from .runner import Job, Outcome, Settings, local_engine, run_job

__all__ = ["Job", "Outcome", "Settings", "local_engine", "run_job"]

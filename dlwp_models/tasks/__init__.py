"""The tasks, each defined once: classify, translate, caption (:mod:`.base` says what a task is).

The shell, the batch engines (local and Ray) and the server all run a task through its
:class:`Task` methods and build its model with :meth:`ModelSpec.build`; none of them computes an
answer, a file name or a model itself. A new task is one module here (a :class:`Task` subclass
with a ``name``), one subcommand and one route.
"""

from __future__ import annotations

from .base import ModelSpec, Task, backend_for, error_record, error_text, task_named, tasks

__all__ = ["ModelSpec", "Task", "backend_for", "error_record", "error_text", "task_named", "tasks"]

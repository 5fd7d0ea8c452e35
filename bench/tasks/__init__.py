"""Tasks: train/dev/test splits and the lm-eval task that scores them.

Tasks are found through the ``hizfo_bench.tasks`` entry-point group (bench/tasks/
registry.py); the built-in ones register there exactly like outside plugins. One module
per task family; jsonl.py is the task type a suite builds from the user's own files.
"""

from __future__ import annotations

from bench.tasks.base import (
    Example,
    Task,
    TaskDataError,
    TaskError,
    TaskUnavailableError,
    UnknownTaskError,
)
from bench.tasks.registry import (
    available_tasks,
    get_task,
    refresh_tasks,
    resolve_paths,
    split_definitions,
    task_labels,
    task_types,
)

__all__ = [
    "Example",
    "Task",
    "TaskDataError",
    "TaskError",
    "TaskUnavailableError",
    "UnknownTaskError",
    "available_tasks",
    "get_task",
    "refresh_tasks",
    "resolve_paths",
    "split_definitions",
    "task_labels",
    "task_types",
]

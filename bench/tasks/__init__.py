"""The task registry: task name -> task class. One module per task family."""

from __future__ import annotations

from bench.tasks.base import (
    Example,
    Task,
    TaskDataError,
    TaskError,
    TaskUnavailableError,
    UnknownTaskError,
)
from bench.tasks.code import HumanEval, Mbpp
from bench.tasks.generative import DocstringSummary, Squad
from bench.tasks.gsm8k import Gsm8k
from bench.tasks.math_mini import MathMini

_TASKS: dict[str, type[Task]] = {
    cls.name: cls for cls in (MathMini, Gsm8k, HumanEval, Mbpp, DocstringSummary, Squad)
}


def available_tasks() -> dict[str, type[Task]]:
    return dict(_TASKS)


def get_task(name: str) -> Task:
    try:
        return _TASKS[name]()
    except KeyError:
        known = ", ".join(sorted(_TASKS))
        raise UnknownTaskError(
            f"unknown task {name!r}; known tasks: {known} (`hizfo-bench tasks` lists them)"
        ) from None


__all__ = [
    "Example",
    "Task",
    "TaskDataError",
    "TaskError",
    "TaskUnavailableError",
    "UnknownTaskError",
    "available_tasks",
    "get_task",
]

"""The ToT tasks by name: adding one = a module with a `Task` subclass + an entry here."""

from __future__ import annotations

from .blocksworld import BlocksworldTask
from .creative import CreativeTask
from .gsm8k import Gsm8kTask
from .task import Task

TASKS: dict[str, type[Task]] = {
    Gsm8kTask.name: Gsm8kTask,
    CreativeTask.name: CreativeTask,
    BlocksworldTask.name: BlocksworldTask,
}


def make_task(name: str) -> Task:
    """The task called `name`; an unknown name is a ValueError listing the valid ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid choices: {', '.join(sorted(TASKS))}")
    return TASKS[name]()


__all__ = ["TASKS", "make_task"]

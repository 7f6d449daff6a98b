"""The task zoo: registered tasks with prompts, output grammars and metrics.

    from unified.task_zoo import get_task, list_tasks, register_task, Task
"""

from unified.task_zoo import tasks  # noqa: F401  (registers the built-in tasks)
from unified.task_zoo.base import Example, Task
from unified.task_zoo.registry import (
    TASKS,
    build_tasks,
    fit_tasks,
    get_task,
    list_tasks,
    load_plugins,
    register_task,
)

__all__ = ["TASKS", "Example", "Task", "build_tasks", "fit_tasks", "get_task", "list_tasks", "load_plugins",
           "register_task"]

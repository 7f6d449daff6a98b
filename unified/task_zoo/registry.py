"""The task registry: a plain dict, filled by `@register_task`, loud on duplicates.

Built-in tasks are imported explicitly by `unified.task_zoo`; third-party packages register theirs through the
``unified.tasks`` entry-point group, loaded by `load_plugins()` (called once by `list_tasks` / `get_task`):

    # a plug-in's pyproject.toml
    [project.entry-points."unified.tasks"]
    my_task = "my_package.tasks:MyTask"

Example:
    >>> @register_task("echo")
    ... class Echo(Task): ...
    >>> get_task("echo")          # a fresh instance of Echo
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from unified.errors import ConfigError, InputError

if TYPE_CHECKING:
    from unified.task_zoo.base import Task

ENTRY_POINT_GROUP = "unified.tasks"
TASKS: dict[str, type[Task]] = {}
_plugins_loaded = False


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: register `cls` under `name`; a name already taken raises `ConfigError`."""

    def add(cls: type[Task]) -> type[Task]:
        if name in TASKS and TASKS[name] is not cls:
            raise ConfigError("task name", name, f"already registered by {TASKS[name].__module__}."
                              f"{TASKS[name].__qualname__}; pick another name")
        cls.name = name
        TASKS[name] = cls
        return cls

    return add


def load_plugins() -> list[str]:
    """Import every ``unified.tasks`` entry point once; return the names it added.

    A plug-in whose import fails raises `ConfigError` naming the entry point: a task the user installed must not
    vanish silently.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return []
    _plugins_loaded = True
    before = set(TASKS)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = point.load()
        except Exception as err:
            raise ConfigError(f"entry point {ENTRY_POINT_GROUP}:{point.name}", point.value,
                              f"could not be imported ({type(err).__name__}: {err})") from err
        if point.name not in TASKS:  # the class may not use @register_task; the entry-point name then counts
            register_task(point.name)(cls)
    return sorted(set(TASKS) - before)


def reload_plugins() -> list[str]:
    """Look at the entry points again (after installing a plug-in in a running process)."""
    global _plugins_loaded
    _plugins_loaded = False
    return load_plugins()


def list_tasks() -> list[str]:
    """Names of every registered task, built-in and plug-in, sorted."""
    load_plugins()
    return sorted(TASKS)


def get_task(name: str, **options) -> Task:
    """A new instance of the task registered as `name` (keyword `options` go to its constructor)."""
    load_plugins()
    if name not in TASKS:
        raise InputError("task", name, f"no task registered under this name; registered: {sorted(TASKS)}")
    return TASKS[name](**options)

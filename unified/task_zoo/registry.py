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

import functools
import random
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import PackageNotFoundError, entry_points, packages_distributions, version
from typing import Any

from unified.errors import ConfigError, InputError
from unified.task_zoo.base import MODALITIES, Task, validate_task_class
from unified.tokenizers.layout import VocabLayout

ENTRY_POINT_GROUP = "unified.tasks"
TASKS: dict[str, type[Task]] = {}
_plugins_loaded = False


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: register `cls` under `name`; a name already taken raises `ConfigError`."""

    def add(cls: type[Task]) -> type[Task]:
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError("task name", name, "expected an identifier (letters, digits, underscores)")
        if name in TASKS and TASKS[name] is not cls:
            raise ConfigError("task name", name, f"already registered by {TASKS[name].__module__}."
                              f"{TASKS[name].__qualname__}; pick another name")
        cls.name = name
        validate_task_class(cls)  # grammar, metrics, prompt fields, hooks, the example row: ConfigError naming it
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


def get_task(name: str, layout: VocabLayout | None = None, **options) -> Task:
    """A new instance of the task registered as `name`: keyword `options` go to its constructor, `layout` (the
    tokenizer's `VocabLayout`; default: the default layout) sets the bins its targets and parses use."""
    task = _lookup(name)(**options)
    if layout is not None:
        task.layout = layout
    return task


def _lookup(name: str) -> type[Task]:
    load_plugins()
    if name not in TASKS:
        raise InputError("task", name, f"no task registered under this name; registered: {sorted(TASKS)}")
    return TASKS[name]


def _distributions() -> Mapping[str, list[str]]:
    return _distributions_on(tuple(sys.path))


@functools.lru_cache(maxsize=4)
def _distributions_on(path: tuple[str, ...]) -> Mapping[str, list[str]]:
    # importlib's map of every installed distribution's top-level modules: ~2 s on a full environment, and every
    # checkpoint asked for it once per task (13.6 s of a 4-step tiny run); computed again when sys.path changes
    return packages_distributions()


def task_sources(names: Iterable[str]) -> dict[str, dict[str, str]]:
    """{task: {"module", "package", "version"}}: where each registered task's class comes from, saved with a model
    so that loading it where a plug-in is missing names the package to install. Unknown names are left out."""
    load_plugins()
    found = {}
    known = [name for name in names if name in TASKS]
    for name in known:
        module = TASKS[name].__module__
        top = module.split(".")[0]
        packages = _distributions().get(top, [])
        package = packages[0] if packages else top
        try:
            version_ = version(package)
        except PackageNotFoundError:
            version_ = ""
        found[name] = {"module": module, "package": package, "version": version_}
    return found


# options every task takes, set here, not by the task: `Task.max_new_tokens`, and `Task.demos` with the demonstrations
# saved with the model (`demo_rows`, drawn from the training rows by `fit_tasks`)
COMMON_OPTIONS = ("max_new_tokens", "demos", "demo_rows")


def build_tasks(names: Iterable[str], task_options: Mapping[str, Mapping[str, Any]] | None = None,
                layout: VocabLayout | None = None) -> dict[str, Task]:
    """{name: task} built with each task's configured options and the vocabulary's layout: the one way every
    caller (vocabulary, row checks, training, evaluation, generate) builds the tasks of a run, so options never
    reach one place and miss another. Options for a task not in `names` raise `ConfigError`."""
    names = list(names)
    options = dict(task_options or {})
    stray = sorted(set(options) - set(names))
    if stray:
        raise ConfigError("task_options", stray, f"options for tasks this run does not have; it has {sorted(names)}")
    tasks = {}
    for name in names:
        given = options.get(name) or {}
        if not isinstance(given, Mapping):
            raise ConfigError(f"task_options.{name}", given, "expected a mapping of option names to values")
        _lookup(name)  # an unknown task is an InputError naming it, not an options problem
        own = {key: value for key, value in given.items() if key not in COMMON_OPTIONS}
        try:
            tasks[name] = get_task(name, layout, **own)
        except (InputError, TypeError) as err:
            reason = err.reason if isinstance(err, InputError) else str(err)
            raise ConfigError(f"task_options.{name}", dict(given), reason) from err
        if "max_new_tokens" in given:
            limit = given["max_new_tokens"]
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ConfigError(f"task_options.{name}.max_new_tokens", limit, "expected a positive whole number "
                                  "of tokens")
            tasks[name].max_new_tokens = limit
        _set_demos(tasks[name], given)
    return tasks


def _set_demos(task: Task, given: Mapping[str, Any]) -> None:
    where = f"task_options.{task.name}"
    k = given.get("demos", 0)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ConfigError(f"{where}.demos", k, "expected a whole number of demonstrations >= 0")
    if k and task.answer_mode == "embed":
        raise ConfigError(f"{where}.demos", k, "an embedding task writes no answer for a demonstration to show")
    rows = given.get("demo_rows", [])
    if not isinstance(rows, (list, tuple)) or not all(isinstance(r, Mapping) for r in rows):
        raise ConfigError(f"{where}.demo_rows", rows, "expected a list of complete rows of the task")
    if rows and not k:
        raise ConfigError(f"{where}.demo_rows", f"{len(rows)} row(s)", "demos is 0: no demonstration is written")
    if rows and len(rows) < k:
        raise ConfigError(f"{where}.demo_rows", f"{len(rows)} row(s)", f"fewer than demos: {k}")
    for index, row in enumerate(rows):
        try:
            task.to_example(row, rng=None)
        except InputError as err:
            raise ConfigError(f"{where}.demo_rows[{index}]", err.value, f"{err.what}: {err.reason}") from err
    task.demos, task.demo_rows = k, list(rows)


def fit_tasks(rows: Mapping[str, Any], task_options: Mapping[str, Mapping[str, Any]] | None = None,
              layout: VocabLayout | None = None) -> tuple[dict[str, Task], dict[str, dict[str, Any]]]:
    """The run's tasks (`build_tasks` over `rows`, {task: its training rows}) with what each learns from its rows
    (`Task.fit`: regress's scaler) added to its options, and those options: what the trained model saves in its
    `task_options.json`, so inference builds the tasks exactly as training did."""
    tasks = build_tasks(rows, task_options, layout)
    options = {name: dict((task_options or {}).get(name) or {}) for name in tasks}
    learnt = {name: {**task.fit(rows[name]), **_demo_rows(task, rows[name], options[name])}
              for name, task in tasks.items()}
    if any(learnt.values()):
        options = {name: {**options[name], **learnt[name]} for name in tasks}
        tasks = build_tasks(rows, options, layout)
    for name, task in tasks.items():
        task.demo_pool = rows[name]  # training draws each row's demonstrations from the other training rows
    return tasks, options


def _demo_rows(task: Task, rows: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """{"demo_rows": `demos` training rows drawn with a seed of the task's name} (without `_` keys), the
    demonstrations evaluation and inference write; none when the task has no `demos` or was given its own."""
    if not task.demos or "demo_rows" in options:
        return {}
    if len(rows) < task.demos:
        raise ConfigError(f"task_options.{task.name}.demos", task.demos, f"only {len(rows)} training row(s) to "
                          "draw demonstrations from")
    picks = random.Random(f"demos:{task.name}").sample(range(len(rows)), task.demos)
    return {"demo_rows": [_saved(rows[i]) for i in picks]}


def _saved(row: Mapping[str, Any]) -> dict[str, Any]:
    # a demonstration's media are never encoded, only their presence checked: keep paths, name what is not one
    def media(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [media(v) for v in value]
        return value if isinstance(value, str) else f"({type(value).__name__} in the training data)"

    return {k: media(v) if k in MODALITIES else v for k, v in dict(row).items() if not k.startswith("_")}

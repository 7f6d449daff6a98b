"""A config field declared once: default, meaning and allowed values in one place, read by the loaders that check
values and by the configuration reference the docs generate.

dataclass field (`setting`) -> `typing.Literal` annotation = allowed values, `metadata["doc"]` = meaning
                             -> `check_choices` (loaders), `describe` (the generated reference, one row per key)

    >>> from dataclasses import dataclass
    >>> from typing import Literal
    >>> @dataclass
    ... class Optim:
    ...     precision: Literal["no", "bf16"] = setting("no", "autocast dtype of the training step")
    ...     lr_scale: dict = setting(doc="parameter group -> learning-rate multiplier", factory=dict)
    >>> [(row.key, row.choices, row.meaning) for row in describe(Optim)][0]
    ('precision', ('no', 'bf16'), 'autocast dtype of the training step')
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, Literal

from unified.errors import ConfigError

MISSING: Any = dataclasses.MISSING


def setting(default: Any = MISSING, doc: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its meaning in `metadata["doc"]` (one line, what the setting does); `factory` for a
    mutable default (`factory=dict`). A field without a meaning is refused: the reference would show a blank."""
    if not doc.strip():
        raise TypeError("setting(...) needs doc: one line saying what the setting does")
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


def meaning(f: dataclasses.Field) -> str:
    return f.metadata.get("doc", "")


def choices(hint: Any) -> tuple | None:
    """The allowed values of a `Literal[...]` annotation (also inside `X | None`), else None."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            found = choices(arg)
            if found is not None:
                return found
    return None


def check_choices(obj: Any, prefix: str = "") -> None:
    """Raise `ConfigError` naming the first field of dataclass `obj` (its sections and lists of sections too) whose
    value is outside its Literal: a scalar not among the values (None passes where the annotation allows it), the
    items of a `list[Literal]` or the keys of a `dict[Literal, ...]` that are not."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        hint, value, key = hints[f.name], getattr(obj, f.name), f"{prefix}{f.name}"
        allowed = choices(hint)
        if allowed is not None and value not in allowed and not (value is None and _optional(hint)):
            raise ConfigError(key, value, f"expected one of {', '.join(map(repr, allowed))}")
        inner = choices(typing.get_args(hint)[0]) if typing.get_origin(hint) in (list, dict) else None
        if inner is not None and isinstance(value, (list, dict)):
            bad = [v for v in value if v not in inner]
            if bad:
                what = "keys" if isinstance(value, dict) else "values"
                raise ConfigError(key, bad, f"unknown {what}; known: {', '.join(map(repr, inner))}")
        if dataclasses.is_dataclass(value):
            check_choices(value, f"{key}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    check_choices(item, f"{key}[{i}].")


def _optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


@dataclasses.dataclass
class Row:
    """One line of the configuration reference."""

    key: str  # dotted, as written in a config or an override: optim.lr, stages[].train
    type: str
    default: str
    choices: tuple | None  # of the value; of each item of a list, or each key of a dict
    meaning: str


def describe(cls: type, prefix: str = "") -> Iterator[Row]:
    """Every field of dataclass `cls`, depth first: a field whose type is a dataclass (or a list of them, or one
    that may be None) is a section, listed with its own fields after it."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        key = f"{prefix}{f.name}"
        section = _section(hint)
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        allowed = choices(hint)
        if allowed is None and typing.get_origin(hint) in (list, dict):  # the allowed items, or keys
            allowed = choices(typing.get_args(hint)[0]) if typing.get_args(hint) else None
        yield Row(key, type_name(hint), _show(default), allowed, meaning(f))
        if section is not None:
            inner = f"{key}[]." if typing.get_origin(hint) is list else f"{key}."
            yield from describe(section, inner)


def _section(hint: Any) -> type | None:
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def type_name(hint: Any) -> str:
    """A short, YAML-minded name: `int | null`, `list of str`, `section`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(sorted({type(a).__name__ for a in args}))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if dataclasses.is_dataclass(hint):
        return "section"
    if origin is list:
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"dict {type_name(args[0])} -> {type_name(args[1])}" if args else "dict"
    return getattr(hint, "__name__", str(hint))


def _show(value: Any) -> str:
    if value is MISSING:
        return "required"
    if dataclasses.is_dataclass(value):
        return "(section)"
    if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
        return f"{len(value)} {type(value[0]).__name__.lower()}(s) with the defaults below"
    return json.dumps(value, default=str)  # JSON is YAML: null, true, "tiny", [1, 2], {}

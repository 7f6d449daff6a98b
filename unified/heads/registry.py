"""The head registry: a plain dict from task-facing name to head class, loud on duplicates and unknown names.

Built-in heads register themselves with `@register_head("name")` and are imported explicitly by
`unified/heads/__init__.py`; a plug-in registers the same way from its own package.
"""

from __future__ import annotations

from collections.abc import Callable

from unified.errors import InputError

HEADS: dict[str, type] = {}


def register_head(name: str) -> Callable[[type], type]:
    """Class decorator: `@register_head("classify")`. A name already taken raises InputError."""

    def add(cls: type) -> type:
        if name in HEADS:
            raise InputError("head name", name, f"already registered to {HEADS[name].__qualname__}")
        HEADS[name] = cls
        return cls

    return add


def get_head(name: str) -> type:
    """The head class registered under `name`; an unknown name raises InputError listing the known ones."""
    try:
        return HEADS[name]
    except KeyError:
        raise InputError("head", name, f"unknown head; known heads: {', '.join(sorted(HEADS))}") from None


def list_heads() -> list[str]:
    """Registered head names, sorted."""
    return sorted(HEADS)

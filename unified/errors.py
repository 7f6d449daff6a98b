"""The library's exceptions: one small hierarchy, each naming the input at fault and what was expected.

    UnifiedError
    ├── InputError          bad user input (a path, a value, a token, a row)
    │   └── MediaDecodeError    a media file or buffer that could not be decoded
    ├── ConfigError         an inconsistent or unknown configuration field
    └── TrainingError       a training run that cannot go on (non-finite losses, a mis-launched run)

Example:
    >>> raise InputError("box", (10, 5, 3, 8), "x2 must be greater than x1")
    Traceback (most recent call last):
    unified.errors.InputError: box=(10, 5, 3, 8): x2 must be greater than x1
"""

from __future__ import annotations

from typing import Any


def _short(value: Any, limit: int = 120) -> str:
    # Long inputs (a byte buffer, a big array) must not flood the message; their head and tail are enough (the tail
    # keeps a long path's file name: which file of a checkpoint is damaged)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    text = repr(value)
    head = limit // 3
    return text if len(text) <= limit else text[:head] + "..." + text[len(text) - (limit - head - 3):]


class UnifiedError(Exception):
    """Base class of every error raised on purpose by `unified`."""


class InputError(UnifiedError, ValueError):
    """A user input is wrong: `what` names it, `value` is what was given, `reason` says what was expected."""

    def __init__(self, what: str, value: Any, reason: str):
        self.what, self.value, self.reason = what, value, reason
        super().__init__(f"{what}={_short(value)}: {reason}")

    def __reduce__(self):  # pickled whole (a DataLoader worker's error reaches the training process as itself)
        return type(self), (self.what, self.value, self.reason)


class MediaDecodeError(InputError):
    """An image, video or audio source could not be decoded (corrupt, truncated, no such stream)."""


class ConfigError(UnifiedError, ValueError):
    """A configuration field is unknown, of the wrong type, or inconsistent with another field."""

    def __init__(self, field: str, value: Any, reason: str):
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"config field {field!r}={_short(value)}: {reason}")

    def __reduce__(self):
        return type(self), (self.field, self.value, self.reason)


class TrainingError(UnifiedError):
    """The run cannot go on (non-finite losses, a mis-launched multi-process run); the message says why."""

"""How the vocabulary's non-text tokens are written, and the one parser every module uses to read them back.

Numbered tokens are written ``<kind_index>`` with a plain decimal index and no spaces: ``<loc_12>``,
``<val_1023>``, ``<int_7>``, ``<time_99>``. The specials are ``<pad>``, ``</s>``, ``<unk>``, ``<s>`` and the
media placeholders ``<image>``, ``<video>``, ``<audio>``.

Anything shaped like a numbered token is reserved: ``<loc_99999>``, ``<loc_-1>``, ``<loc_x>`` or ``<loc_012>``
raise `InputError` instead of passing as plain text, so an out-of-range bin or a typo is never silently
spelled out as text.

Example:
    >>> format_token("loc", 12)
    '<loc_12>'
    >>> find_indices("a box <loc_1><loc_2> and <val_5>", "loc", size=1000)
    [1, 2]
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

from unified.errors import InputError

PAD_TOKEN, EOS_TOKEN, UNK_TOKEN, BOS_TOKEN = "<pad>", "</s>", "<unk>", "<s>"
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN, BOS_TOKEN)  # ids 0, 1, 2, 3 in this order
MEDIA_TOKENS = ("<image>", "<video>", "<audio>")
NUMBERED_KINDS = {"loc": "location", "val": "value", "int": "integer", "time": "time"}

# One alternation for every inline token; group 1 is the kind and group 2 the index text of a numbered token.
TOKEN_RE = re.compile(r"</s>|<(?:pad|unk|s|image|video|audio)>|<(loc|val|int|time)_([^<>\s]*)>")
_CANONICAL_INDEX = re.compile(r"0|[1-9][0-9]*")


def format_token(kind: str, index: int) -> str:
    """The token string of bin `index` of a numbered kind (``"loc"``, ``"val"``, ``"int"``, ``"time"``)."""
    if kind not in NUMBERED_KINDS:
        raise InputError("token kind", kind, f"expected one of {sorted(NUMBERED_KINDS)}")
    return f"<{kind}_{index}>"


def token_span(kind: str, size: int) -> str:
    """The valid tokens of a kind written as a range, for error messages: ``<loc_0>..<loc_999>``."""
    return f"<{kind}_0>..<{kind}_{size - 1}>"


def parse_index(token: str, kind: str, index_text: str, size: int) -> int:
    """The index of a matched numbered token, checked against the `size` tokens of its kind."""
    if not _CANONICAL_INDEX.fullmatch(index_text):
        raise InputError("token", token, f"not a valid {NUMBERED_KINDS[kind]} token; write a plain decimal "
                         f"index without sign or leading zeros, in {token_span(kind, size)}")
    index = int(index_text)
    if index >= size:
        raise InputError("token", token, f"out of range; valid {NUMBERED_KINDS[kind]} tokens are "
                         f"{token_span(kind, size)}")
    return index


def find_indices(text: str, kind: str, size: int) -> list[int]:
    """Indices of every ``<kind_i>`` token in `text`, in order; other text and other kinds are ignored."""
    if not isinstance(text, str):
        raise InputError("text", text, f"expected a str holding {NUMBERED_KINDS[kind]} tokens")
    return [parse_index(m.group(0), kind, m.group(2), size)
            for m in TOKEN_RE.finditer(text) if m.group(1) == kind]


def check_count(name: str, value: Any, minimum: int) -> int:
    """A bin or token count given as an argument: an int of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(name, value, f"expected an int >= {minimum}")
    return int(value)


def check_real(name: str, value: Any) -> float:
    """A finite real number, as float; NaN, inf, bools and non-numbers are user errors."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()  # a 0-d tensor or array holding one number
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(name, value, "expected a real number")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(name, value, "must be finite (not NaN or inf)")
    return value

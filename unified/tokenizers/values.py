"""Continuous values as mu-law binned ``<val_i>`` tokens (Gato), and discrete values as ``<int_i>`` tokens.

Values: ``F(x) = sign(x) * log(|x| * mu + 1) / log(M * mu + 1)`` with mu = 100, M = 256, clipped to [-1, 1],
then n = 1024 uniform bins over [-1, 1] (bin ``k`` covers ``[-1 + 2k/n, -1 + 2(k+1)/n)``, the last one
includes 1). Decoding takes the bin centre ``c`` and inverts F:
``x' = sign(c) * ((M * mu + 1)^|c| - 1) / mu``.

Round-trip error (derived from the bin half-width h = 1/n pushed through the inverse at the bin's edge; with
``B = M * mu + 1``, ``|x - x'| = |B^F(|x|) - B^|c||/mu <= B^F(|x|) * (B^h - 1)/mu``), for ``|x| <= M``::

    |x - x'| <= (|x| + 1/mu) * (B^(1/n) - 1) = 0.0099618 * (|x| + 0.01)      (n = 1024)

so about 1 % of |x| plus 1e-4: 9.96e-5 at 0 (0 decodes to +9.96e-5, the first bin's centre), 0.0101 at 1.
The bound is attained: a value on a bin's inner edge (the one nearer 0) decodes exactly that far off; on the
outer edge the error is the bound divided by ``B^(1/n)`` = 1.00996. The largest error is 2.525 at |x| = 256
(bound 2.550). Beyond ``|x| > M`` the value is clipped and decodes to +-253.47 (error ``|x| - 253.47``).

`scale` maps your range into Gato's: the tokens encode ``x / scale`` and decoding multiplies back, so values
up to ``M * scale`` in magnitude keep the bound above with ``1/mu`` replaced by ``scale/mu``.

Example:
    >>> values_to_tokens([0.5, -3.0])
    '<val_710><val_224>'
    >>> tokens_to_values("<val_710><val_224>")  # within 0.0051 and 0.030 of the inputs
    [0.5017531775079889, -2.977717868738412]
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from unified.errors import InputError
from unified.tokenizers.grammar import check_count, check_real, find_indices, format_token

MU_LAW_MU = 100.0  # Gato's mu
MU_LAW_M = 256.0  # Gato's M: |x| = M companded to exactly 1
DEFAULT_VALUE_BINS = 1024  # = VocabLayout.num_value_bins
DEFAULT_INT_TOKENS = 256  # = VocabLayout.num_int_tokens
_LOG_BASE = math.log(MU_LAW_M * MU_LAW_MU + 1)  # log B


def mu_law(x: float) -> float:
    """Gato's companding F(x), not clipped: F(M) = 1, F(1) = log(101) / log(25601)."""
    return math.copysign(math.log1p(abs(x) * MU_LAW_MU) / _LOG_BASE, x)


def inverse_mu_law(y: float) -> float:
    """The inverse of `mu_law`."""
    return math.copysign(math.expm1(abs(y) * _LOG_BASE) / MU_LAW_MU, y)


def value_to_bin(x: float, num_bins: int = DEFAULT_VALUE_BINS, scale: float = 1.0) -> int:
    """The bin of a finite value: ``mu_law(x / scale)`` clipped to [-1, 1] then binned uniformly."""
    x = check_real("value", x)
    n, scale = check_count("num_bins", num_bins, 1), _scale(scale)
    y = min(1.0, max(-1.0, mu_law(x / scale)))
    return min(n - 1, int((y + 1.0) / 2.0 * n))


def bin_to_value(index: int, num_bins: int = DEFAULT_VALUE_BINS, scale: float = 1.0) -> float:
    """The value a bin decodes to: the inverse companding of its centre, times `scale`."""
    n, scale = check_count("num_bins", num_bins, 1), _scale(scale)
    if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < n:
        raise InputError("bin", index, f"expected an int in [0, {n})")
    return scale * inverse_mu_law(-1.0 + (2 * int(index) + 1) / n)


def value_error_bound(x: float, num_bins: int = DEFAULT_VALUE_BINS, scale: float = 1.0) -> float:
    """Worst-case ``|x - decoded|`` for values like `x` (the module docstring's bound; exact when clipped)."""
    x = check_real("value", x)
    n, scale = check_count("num_bins", num_bins, 1), _scale(scale)
    if abs(x) > MU_LAW_M * scale:
        return abs(x) - abs(bin_to_value(n - 1, n, scale))
    return (abs(x) + scale / MU_LAW_MU) * math.expm1(_LOG_BASE / n)


def values_to_tokens(values: float | Sequence[float], *, num_bins: int = DEFAULT_VALUE_BINS,
                     scale: float = 1.0) -> str:
    """One ``<val_i>`` token per value (a number, or a sequence, array or tensor of them); NaN, inf raise."""
    return "".join(format_token("val", value_to_bin(x, num_bins, scale)) for x in _as_list(values, "value"))


def tokens_to_values(text: str, *, num_bins: int = DEFAULT_VALUE_BINS, scale: float = 1.0) -> list[float]:
    """The values of every ``<val_i>`` token in `text`, in order (other text is ignored; none gives [])."""
    n = check_count("num_bins", num_bins, 1)
    return [bin_to_value(k, n, scale) for k in find_indices(text, "val", n)]


def int_to_tokens(values: int | Sequence[int], num_tokens: int = DEFAULT_INT_TOKENS) -> str:
    """One ``<int_n>`` token per integer, each with 0 <= n < `num_tokens` (floats, even 3.0, raise)."""
    size = check_count("num_tokens", num_tokens, 1)
    out = []
    for n in _as_list(values, "int"):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise InputError("int", n, "expected an int")
        if not 0 <= n < size:
            raise InputError("int", n, f"out of range; expected 0 <= n < {size}")
        out.append(format_token("int", int(n)))
    return "".join(out)


def tokens_to_ints(text: str, num_tokens: int = DEFAULT_INT_TOKENS) -> list[int]:
    """The integers of every ``<int_n>`` token in `text`, in order."""
    return find_indices(text, "int", check_count("num_tokens", num_tokens, 1))


def _scale(scale: Any) -> float:
    # Values are divided by it, so zero, negative and non-finite scales would give nonsense silently.
    scale = check_real("scale", scale)
    if scale <= 0:
        raise InputError("scale", scale, "expected a positive number")
    return scale


def _as_list(values: Any, what: str) -> list:
    # One number or many: arrays and tensors become lists first, so 0-d ones count as one number.
    if hasattr(values, "tolist"):
        values = values.tolist()
    if isinstance(values, (str, bytes)):
        raise InputError(what, values, "expected a number or a sequence of numbers")
    if isinstance(values, numbers.Number):
        return [values]
    try:
        items = list(values)
    except TypeError:
        raise InputError(what, values, "expected a number or a sequence of numbers") from None
    if any(isinstance(v, (list, tuple)) for v in items):
        raise InputError(what, values, "expected a flat sequence of numbers")
    return items

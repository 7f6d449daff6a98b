"""Boxes and points as location tokens, OFA-style: each coordinate becomes one ``<loc_i>`` token.

Image sizes are ``(width, height)`` in pixels, as PIL's ``Image.size`` (not a tensor's ``(H, W)``). A
coordinate ``c`` on an axis of ``size`` pixels goes to bin ``round(c / size * (N - 1))`` (N = `num_bins`, 1000
by default, so 0 is ``<loc_0>`` and the far edge ``<loc_{N-1}>``) and comes back as ``bin / (N - 1) * size``.
The round-trip error is at most half a bin: ``size / (N - 1) / 2`` pixels per coordinate (0.32 px on a 640 px
axis with N = 1000).

Example:
    >>> box_to_tokens((0, 0, 640, 480), image_size=(640, 480))
    '<loc_0><loc_0><loc_999><loc_999>'
    >>> tokens_to_box("the dog <loc_0><loc_0><loc_999><loc_999>", image_size=(640, 480))
    Box(x1=0.0, y1=0.0, x2=640.0, y2=480.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import astuple, dataclass
from typing import Any

from unified.errors import InputError
from unified.tokenizers.grammar import check_count, find_indices, format_token, token_span

DEFAULT_LOC_BINS = 1000  # = VocabLayout.num_loc_bins


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels: (x1, y1) the top-left corner, (x2, y2) the bottom-right one.

    A plain container: it does not check order, so a box decoded from a model's output may be empty or
    inverted (its `area` is then 0 and its `iou` with anything 0). `box_to_tokens` checks boxes given as
    input.

    Example:
        >>> Box(0, 0, 10, 10).iou(Box(5, 0, 15, 10))
        0.3333333333333333
        >>> x1, y1, x2, y2 = Box(1, 2, 3, 4)
    """

    x1: float
    y1: float
    x2: float
    y2: float

    def __post_init__(self) -> None:
        for name in ("x1", "y1", "x2", "y2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not _is_real(value):
                raise InputError(f"box.{name}", value, "expected a real number")
            object.__setattr__(self, name, float(value))

    @property
    def width(self) -> float:
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        return max(0.0, self.y2 - self.y1)

    @property
    def area(self) -> float:
        return self.width * self.height

    def iou(self, other: Box) -> float:
        """Intersection over union with `other` (0.0 when both are empty)."""
        other = other if isinstance(other, Box) else Box(*_coords("box", other, 4))
        inter = Box(max(self.x1, other.x1), max(self.y1, other.y1),
                    min(self.x2, other.x2), min(self.y2, other.y2))
        union = self.area + other.area - inter.area
        return inter.area / union if union > 0 else 0.0

    def __iter__(self) -> Iterator[float]:
        return iter(astuple(self))


def box_to_tokens(box: Box | Sequence[float], image_size: Sequence[float],
                  num_bins: int = DEFAULT_LOC_BINS) -> str:
    """Four location tokens for a box (x1, y1, x2, y2) in pixels; `image_size` is (width, height).

    The box must lie in the image (0 <= x1 < x2 <= width, 0 <= y1 < y2 <= height) with finite coordinates.
    """
    width, height = _image_size(image_size)
    x1, y1, x2, y2 = _coords("box", box, 4)
    if min(x1, y1) < 0 or max(x1, x2) > width or max(y1, y2) > height:
        raise InputError("box", box, f"outside the {width:g}x{height:g} image; need 0 <= x <= {width:g} and "
                         f"0 <= y <= {height:g}")
    if x2 <= x1:
        raise InputError("box", box, "inverted or empty: x2 must be greater than x1")
    if y2 <= y1:
        raise InputError("box", box, "inverted or empty: y2 must be greater than y1")
    n = check_count("num_bins", num_bins, 2)
    return "".join(format_token("loc", _to_bin(c, size, n)) for c, size in
                   ((x1, width), (y1, height), (x2, width), (y2, height)))


def tokens_to_box(text: str, image_size: Sequence[float], num_bins: int = DEFAULT_LOC_BINS) -> Box:
    """The box written by the first four location tokens in `text` (other text is ignored), in pixels.

    The box is returned as written, even if a model wrote it inverted; fewer than four tokens raise
    `InputError`.
    """
    width, height = _image_size(image_size)
    n = check_count("num_bins", num_bins, 2)
    bins = find_indices(text, "loc", n)
    if len(bins) < 4:
        raise InputError("text", text, f"expected 4 location tokens ({token_span('loc', n)}) for a box, "
                         f"found {len(bins)}")
    return Box(*(_from_bin(b, size, n) for b, size in zip(bins[:4], (width, height, width, height))))


def point_to_tokens(point: Sequence[float], image_size: Sequence[float],
                    num_bins: int = DEFAULT_LOC_BINS) -> str:
    """Two location tokens for a point (x, y) in pixels, with 0 <= x <= width and 0 <= y <= height."""
    width, height = _image_size(image_size)
    x, y = _coords("point", point, 2)
    if not (0 <= x <= width and 0 <= y <= height):
        raise InputError("point", point, f"outside the {width:g}x{height:g} image; need 0 <= x <= {width:g} "
                         f"and 0 <= y <= {height:g}")
    n = check_count("num_bins", num_bins, 2)
    return format_token("loc", _to_bin(x, width, n)) + format_token("loc", _to_bin(y, height, n))


def tokens_to_point(text: str, image_size: Sequence[float],
                    num_bins: int = DEFAULT_LOC_BINS) -> tuple[float, float]:
    """The point (x, y) in pixels written by the first two location tokens in `text`."""
    width, height = _image_size(image_size)
    n = check_count("num_bins", num_bins, 2)
    bins = find_indices(text, "loc", n)
    if len(bins) < 2:
        raise InputError("text", text, f"expected 2 location tokens ({token_span('loc', n)}) for a point, "
                         f"found {len(bins)}")
    return _from_bin(bins[0], width, n), _from_bin(bins[1], height, n)


def _to_bin(c: float, size: float, n: int) -> int:
    # min/max guard against a float landing a hair outside [0, n-1]; inputs were checked to lie in [0, size].
    return min(n - 1, max(0, round(c / size * (n - 1))))


def _from_bin(index: int, size: float, n: int) -> float:
    # Bins sit on the grid 0, size/(n-1), ..., size, so both image edges are exactly representable.
    return index / (n - 1) * size


def _is_real(value: Any) -> bool:
    # Duck-typed, so numpy scalars and 0-d tensors pass, but numeric strings ("5") do not.
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, str)


def _coords(what: str, value: Any, count: int) -> tuple[float, ...]:
    # Boxes arrive as Box, tuples, lists, arrays or tensors; all are read as `count` finite floats.
    if hasattr(value, "tolist") and not isinstance(value, Box):
        value = value.tolist()
    try:
        items = list(value)
    except TypeError:
        items = None
    if items is None or len(items) != count or isinstance(value, str):
        raise InputError(what, value, f"expected {count} coordinates")
    coords = []
    for item in items:
        if isinstance(item, bool) or not _is_real(item):
            raise InputError(what, value, "coordinates must be real numbers")
        coords.append(float(item))
    if not all(math.isfinite(c) for c in coords):
        raise InputError(what, value, "coordinates must be finite (not NaN or inf)")
    return tuple(coords)


def _image_size(image_size: Any) -> tuple[float, float]:
    # Checked before anything is divided by it; (width, height) order as PIL's Image.size.
    width, height = _coords("image_size", image_size, 2)
    if width <= 0 or height <= 0:
        raise InputError("image_size", image_size, "expected a positive (width, height)")
    return width, height


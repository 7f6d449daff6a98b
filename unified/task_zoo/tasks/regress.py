"""`regress`: numbers and/or media in, numbers out through Gato's mu-law value tokens.

Two row shapes: a question about media (``{"video", "question", "values"}``), and Gato-style sequences
(``{"inputs": [x0..xk], "values": [next m]}``), whose inputs are written as value tokens in the prompt.

Numbers are never clipped silently. With the option ``scale: "range"`` (the default), a row's `value_range`
``[low, high]`` is mapped linearly onto the value tokens' whole domain ``[-256, 256]`` (Gato's M) for its targets, and
answers are mapped back; its inputs use `input_range` when given, else the same `value_range`. So targets from 140
to 2,500 use all 1,024 bins instead of all landing on the last one. A row without a range keeps its numbers as they
are, and one whose magnitude exceeds 256 is refused (`InputError` naming it) instead of being clipped. ``scale:
"none"`` writes every number as it is (how the built-in default model was trained), still refusing |x| > 256.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import torch

from unified.errors import InputError
from unified.task_zoo.base import Task
from unified.task_zoo.registry import register_task
from unified.tokenizers import tokens_to_values, values_to_tokens
from unified.tokenizers.grammar import check_real
from unified.tokenizers.values import MU_LAW_M, bin_to_value, value_to_bin

SCALES = ("range", "none")
DECODES = ("argmax", "mean", "median")  # a value from the greedy bin, or the mean / median of the bin distribution


@functools.lru_cache(maxsize=4)
def bin_values(n: int) -> torch.Tensor:
    """(n,) float64: the value each of n value bins decodes to (`bin_to_value`)."""
    return torch.tensor([bin_to_value(k, n) for k in range(n)], dtype=torch.float64)


def _bounds(row: Mapping[str, Any], field: str) -> tuple[float, float] | None:
    """A row's `value_range` / `input_range` as (low, high), checked; None when absent."""
    bounds = row.get(field)
    if bounds is None:
        return None
    if (not isinstance(bounds, (list, tuple)) or len(bounds) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bounds)
            or not bounds[0] < bounds[1]):
        raise InputError(f"regress {field}", bounds, "expected [low, high] finite numbers with low < high")
    return float(bounds[0]), float(bounds[1])


@register_task("regress")
class Regress(Task):
    accepts = frozenset({"image", "video", "audio"})
    prompts = ("{question}", "answer with numbers: {question}")
    sequence_prompt = "continue the sequence {inputs} with {count} values"
    grammar = "val"
    metrics = ("mae", "rmse")
    row_fields = ("values",)
    target_fields = ("values",)  # at inference, `num_values` (default 1) says how many to write
    optional_fields = ("question", "inputs", "num_values", "value_range", "input_range")
    list_fields = ("inputs", "input_range")
    example_row = {"video": "clips/train_00001.mp4", "question": "how many pixels does the circle move per frame?",
                   "values": [1.5], "value_range": [0, 4]}

    def __init__(self, scale: str = "range", decode: str = "argmax"):
        if scale not in SCALES:
            raise InputError("regress scale", scale, f"expected one of {SCALES}")
        if decode not in DECODES:
            raise InputError("regress decode", decode, f"expected one of {DECODES}")
        self.scale, self.decode = scale, decode

    @property
    def reads_distribution(self) -> bool:
        return self.decode != "argmax"

    def parse_distribution(self, text: str, probs: Any, row: Mapping[str, Any]) -> list[float]:
        """Each value as the mean (or median) of the value its bins decode to, weighted by the step's bin
        probabilities (`probs`: (steps, bins)); then mapped back from the row's range."""
        wanted = self.answer_length(row)
        centres = bin_values(self.layout.num_value_bins)  # (bins,) the value each bin decodes to
        out = []
        for step in probs[:wanted]:
            p = step.double() / step.double().sum()
            if self.decode == "mean":
                y = float((p * centres).sum())
            else:  # median: the first bin where the cumulative probability reaches one half
                y = float(centres[int(torch.searchsorted(p.cumsum(0), torch.tensor(0.5, dtype=torch.float64)))])
            out.append(self._from_tokens_domain(y, row))
        return out if len(out) == wanted else self.parse(text, row)

    def answer_length(self, row: Mapping[str, Any]) -> int:
        """How many values the answer has."""
        return len(row["values"]) if row.get("values") is not None else int(row.get("num_values", 1))

    def show_row(self, row: Mapping[str, Any]) -> tuple[str, str]:
        asked = row.get("question") or f"continue {self.show(list(row.get('inputs') or []))}"
        return str(asked), self.show(self.truth(row))

    def check_row(self, row: Mapping[str, Any], with_target: bool = True) -> None:
        super().check_row(row, with_target)
        if row.get("question") is None and row.get("inputs") is None:
            raise InputError("regress row", sorted(row), "needs a 'question' or Gato-style 'inputs'")
        for field, what in (("value_range", "values"), ("input_range", "inputs")):
            declared = _bounds(row, field)  # checked even where unused
            numbers = row.get(what) if with_target or what == "inputs" else None
            if numbers is None:
                continue
            for v in numbers:  # a list: `field_kinds` checked it above
                check_real(f"regress {what}", v)  # a real, finite number
            bounds = declared or self._range(row, field)
            if bounds is not None:
                outside = [v for v in numbers if not bounds[0] <= v <= bounds[1]]
                if outside:
                    used = field if declared else "value_range (inputs without an input_range use it)"
                    raise InputError(f"regress {what}", outside, f"outside the row's {used} {list(bounds)}")
            elif any(abs(v) > MU_LAW_M for v in numbers):
                raise InputError(f"regress {what}", [v for v in numbers if abs(v) > MU_LAW_M],
                                 f"beyond the value tokens' domain of +-{MU_LAW_M:g}, where they would be clipped: give "
                                 "the row a value_range [low, high] (scale: range maps it onto the tokens)")

    def allowed_bins(self, row: Mapping[str, Any]) -> range | None:
        """With a `value_range`, only the value bins inside it: answers never leave the declared range."""
        bounds = _bounds(row, "value_range")
        if bounds is None:
            return None
        n = self.layout.num_value_bins
        low, high = (self._to_tokens_domain(b, row, "value_range") for b in bounds)
        return range(value_to_bin(low, n), value_to_bin(high, n) + 1)

    # ------------------------------------------------------------------ numbers <-> the value tokens' domain
    def _range(self, row: Mapping[str, Any], field: str) -> tuple[float, float] | None:
        """The [low, high] that `field`'s numbers are mapped from, or None (written as they are)."""
        if self.scale == "none":
            return None
        bounds = _bounds(row, field)
        return bounds if bounds is not None or field == "value_range" else _bounds(row, "value_range")

    def _to_tokens_domain(self, x: float, row: Mapping[str, Any], field: str) -> float:
        bounds = self._range(row, field)
        if bounds is None:
            return float(x)
        low, high = bounds
        return (float(x) - (low + high) / 2) / ((high - low) / 2) * MU_LAW_M  # [low, high] -> [-M, M]

    def _from_tokens_domain(self, y: float, row: Mapping[str, Any]) -> float:
        bounds = self._range(row, "value_range")
        if bounds is None:
            return y
        low, high = bounds
        return (low + high) / 2 + y / MU_LAW_M * (high - low) / 2

    def prompt(self, row, media, rng):
        if row.get("inputs") is not None:
            inputs = [self._to_tokens_domain(v, row, "input_range") for v in row["inputs"]]
            text = self.sequence_prompt.format(inputs=self._tokens(inputs), count=self.answer_length(row))
            placeholders = "".join(f"<{m}>" * len(v) for m, v in media.items())
            return f"{placeholders} {text}" if placeholders else text
        return super().prompt(row, media, rng)

    def _tokens(self, values) -> str:
        return values_to_tokens(values, num_bins=self.layout.num_value_bins)

    def target(self, row: Mapping[str, Any]) -> str:
        return self._tokens([self._to_tokens_domain(v, row, "value_range") for v in row["values"]])

    def parse(self, text: str, row: Mapping[str, Any]) -> list[float]:
        """Generated value tokens -> as many floats as the truth has; a short answer is filled with the far end of the
        value range so the missing values count as wrong instead of being dropped."""
        try:
            values = [self._from_tokens_domain(y, row)
                      for y in tokens_to_values(text, num_bins=self.layout.num_value_bins)]
        except InputError:
            values = []
        wanted = self.answer_length(row)
        scale = row.get("value_range") or row.get("values") or [0.0]
        fill = float(max(abs(v) for v in scale)) if wanted > len(values) else 0.0
        return (values + [fill] * wanted)[:wanted]

    def truth(self, row: Mapping[str, Any]) -> list[float]:
        return [float(v) for v in row["values"]]

    def score(self, predictions: list[list[float]], truths: list[list[float]]) -> dict[str, float]:
        flat_pred = [v for values in predictions for v in values]
        flat_true = [v for values in truths for v in values]
        return super().score(flat_pred, flat_true)

    def normalised(self, metrics: Mapping[str, float], rows: list[Mapping[str, Any]]) -> float:
        """1 - MAE / (mean width of the rows' value ranges), clipped to [0, 1]."""
        widths = [float(max(r.get("value_range", r["values"])) - min(r.get("value_range", r["values"])))
                  for r in rows]
        width = sum(widths) / len(widths) if widths else 0.0
        return min(1.0, max(0.0, 1.0 - float(metrics["mae"]) / width)) if width > 0 else float(metrics["mae"] == 0)

"""`regress`: numbers and/or media in, numbers out through Gato's mu-law value tokens.

Two row shapes: a question about media (``{"video", "question", "values"}``), and Gato-style sequences
(``{"inputs": [x0..xk], "values": [next m]}``), whose inputs are written as value tokens in the prompt.

Numbers are never clipped silently. With the option ``scale: "range"`` (the default), a row's `value_range`
``[low, high]`` is mapped linearly onto the value tokens' whole domain ``[-256, 256]`` (Gato's M) for its targets, and
answers are mapped back; its inputs use `input_range` when given, else the same `value_range`. So targets from 140
to 2,500 use all 1,024 bins instead of all landing on the last one. A row without a range keeps its numbers as they
are, and one whose magnitude exceeds 256 is refused (`InputError` naming it) instead of being clipped. ``scale:
"none"`` writes every number as it is, still refusing |x| > 256.

``scale: "fit"`` is a min-max scaler fitted on the training rows (`fit`, called by `unified train`): targets get
one range, inputs one per position (one for all when rows differ in length), each the training [min, max] widened
by `FIT_MARGIN` of its width on both sides; the ranges are saved with the model as the option `fitted`, so
`Model.generate` and `unified eval` read numbers as training did. A row's own `value_range` / `input_range` still
wins. An input outside its fitted range at inference is clamped to it with a warning naming it (held-out data may
lie past the training rows' extremes; refusing it would make a fitted model unusable on them).

``spacing`` says how a scaled range lies on the 1,024 bins. ``"mu_law"`` (the default, so saved models read numbers as
they were trained to) maps it linearly onto [-256, 256] and then through Gato's companding, so the middle tenth of
the range takes 791 bins and the outer nine tenths 233. ``"uniform"`` maps it to the value whose companded position is
linear in it: every bin is 1/1,024 of the range wide.

``input_noise`` s > 0 (training only: prompts built with an rng) moves each Gato-style input by a Gaussian of s times
its range's half-width before it is written, kept inside the range. This is noise injection, a smoothness prior
(for a linear model it equals ridge regularisation). A few hundred table rows are otherwise memorised: each
input's bin is its own embedding row.
"""

from __future__ import annotations

import functools
import math
import random
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from unified.errors import InputError
from unified.task_zoo.base import Task
from unified.task_zoo.registry import register_task
from unified.tokenizers import tokens_to_values, values_to_tokens
from unified.tokenizers.grammar import check_real
from unified.tokenizers.values import MU_LAW_M, bin_to_value, inverse_mu_law, mu_law, value_to_bin

SCALES = ("range", "fit", "none")
SPACINGS = ("mu_law", "uniform")  # how a scaled range is laid over the value bins (module docstring)
FIT_MARGIN = 0.1  # a fitted range is the training [min, max] widened by this share of its width on each side
DECODES = ("argmax", "mean", "median")  # a value from the greedy bin, or the mean / median of the bin distribution


@functools.lru_cache(maxsize=4)
def bin_values(n: int) -> torch.Tensor:
    """(n,) float64: the value each of n value bins decodes to (`bin_to_value`)."""
    return torch.tensor([bin_to_value(k, n) for k in range(n)], dtype=torch.float64)


def _pair(bounds: Any, what: str) -> tuple[float, float]:
    if (not isinstance(bounds, (list, tuple)) or len(bounds) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bounds)
            or not bounds[0] < bounds[1]):
        raise InputError(what, bounds, "expected [low, high] finite numbers with low < high")
    return float(bounds[0]), float(bounds[1])


def _bounds(row: Mapping[str, Any], field: str) -> tuple[float, float] | None:
    """A row's `value_range` / `input_range` as (low, high), checked; None when absent."""
    bounds = row.get(field)
    return None if bounds is None else _pair(bounds, f"regress {field}")


def fitted_range(numbers: list[float]) -> list[float]:
    """[low, high]: the numbers' [min, max] widened by FIT_MARGIN of the width on each side (+-1 around one value).

    Example:
        >>> fitted_range([10.0, 30.0, 20.0])
        [8.0, 32.0]
    """
    low, high = min(numbers), max(numbers)
    pad = FIT_MARGIN * (high - low) if high > low else 1.0
    return [low - pad, high + pad]


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

    def __init__(self, scale: str = "range", decode: str = "argmax", fitted: Mapping[str, Any] | None = None,
                 spacing: str = "mu_law", input_noise: float = 0.0):
        if scale not in SCALES:
            raise InputError("regress scale", scale, f"expected one of {SCALES}")
        if spacing not in SPACINGS:
            raise InputError("regress spacing", spacing, f"expected one of {SPACINGS}")
        if spacing == "uniform" and scale == "none":
            raise InputError("regress spacing", spacing, "lays a range evenly over the bins, and scale: none maps no "
                             "range (use scale: range or fit)")
        if decode not in DECODES:
            raise InputError("regress decode", decode, f"expected one of {DECODES}")
        if fitted is not None and scale != "fit":
            raise InputError("regress fitted", dict(fitted), f"a fitted scaler needs scale: fit (this task: {scale!r})")
        if not (isinstance(input_noise, (int, float)) and not isinstance(input_noise, bool) and 0 <= input_noise < 1):
            raise InputError("regress input_noise", input_noise, "expected a share of the input range in [0, 1)")
        if input_noise and scale == "none":
            raise InputError("regress input_noise", input_noise, "is a share of each input's range, and scale: none "
                             "maps no range (use scale: range or fit)")
        self.scale, self.decode, self.spacing, self.input_noise = scale, decode, spacing, float(input_noise)
        self.fitted = self._check_fitted(fitted) if fitted is not None else None

    @staticmethod
    def _check_fitted(fitted: Any) -> dict[str, Any]:
        """{"value_range": [low, high] or None, "input_range": [low, high], [[low, high], ...] or None}, checked."""
        if not isinstance(fitted, Mapping) or set(fitted) - {"value_range", "input_range"}:
            raise InputError("regress fitted", fitted, "expected {value_range: [low, high], input_range: [low, high] "
                             "or one [low, high] per input position}")
        out = {"value_range": None, "input_range": None}
        if fitted.get("value_range") is not None:
            out["value_range"] = list(_pair(fitted["value_range"], "regress fitted value_range"))
        given = fitted.get("input_range")
        if given is not None:
            per_position = isinstance(given, (list, tuple)) and bool(given) and isinstance(given[0], (list, tuple))
            out["input_range"] = ([list(_pair(b, f"regress fitted input_range[{i}]")) for i, b in enumerate(given)]
                                  if per_position else list(_pair(given, "regress fitted input_range")))
        return out

    def fit(self, rows) -> dict[str, Any]:
        """With scale: fit, the scaler's ranges from the training rows: {"fitted": {value_range, input_range}}.
        `input_noise` on rows none of which has `inputs` would do nothing, and is refused."""
        rows = list(rows)
        if self.input_noise and rows and all(row.get("inputs") is None for row in rows):
            raise InputError("regress input_noise", self.input_noise, f"jitters Gato-style inputs, and none of the "
                             f"{len(rows)} training rows has inputs")
        if self.scale != "fit":
            return {}
        targets, inputs = [], []
        for row in rows:
            targets += [float(v) for v in row.get("values") or []]
            if row.get("inputs") is not None:
                inputs.append([float(v) for v in row["inputs"]])
        fitted = {"value_range": fitted_range(targets) if targets else None, "input_range": None}
        if inputs and len({len(x) for x in inputs}) == 1:  # one range per position, as a min-max scaler
            fitted["input_range"] = [fitted_range(list(column)) for column in zip(*inputs)]
        elif inputs:
            fitted["input_range"] = fitted_range([v for x in inputs for v in x])
        return {"fitted": fitted}

    @property
    def reads_distribution(self) -> bool:
        return self.decode != "argmax"

    def parse_distribution(self, text: str, probs: Any, row: Mapping[str, Any]) -> list[float]:
        """Each value as the mean (or median) of the value its bins decode to, weighted by the step's bin
        probabilities (`probs`: (steps, bins)); then mapped back from the row's range."""
        wanted = self.answer_length(row)
        centres = self._bin_answers(row)  # (bins,) the number each bin means for this row
        out = []
        for step in probs[:wanted]:
            p = step.double() / step.double().sum()
            if self.decode == "mean":
                out.append(float((p * centres).sum()))
            else:  # median: the first bin where the cumulative probability reaches one half
                out.append(float(centres[int(torch.searchsorted(p.cumsum(0), torch.tensor(0.5, dtype=torch.float64)))]))
        return out if len(out) == wanted else self.parse(text, row)

    def _bin_answers(self, row: Mapping[str, Any]) -> torch.Tensor:
        """(bins,) float64: the answer each value bin stands for in the row's own units."""
        n = self.layout.num_value_bins
        bounds = self._value_bounds(row)
        if bounds is None:
            return bin_values(n)  # (bins,) the value each bin decodes to
        low, high = bounds
        if self.spacing == "uniform":  # the bin's companded centre is its place in the row's range
            fraction = -1.0 + (2.0 * torch.arange(n, dtype=torch.float64) + 1.0) / n
        else:
            fraction = bin_values(n) / MU_LAW_M
        return (low + high) / 2 + fraction * (high - low) / 2

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
        if (self.input_noise and self.scale == "range" and row.get("inputs") is not None
                and _bounds(row, "input_range") is None and _bounds(row, "value_range") is None):
            raise self._rangeless_noise()
        for field, what in (("value_range", "values"), ("input_range", "inputs")):
            declared = _bounds(row, field)  # checked even where unused
            numbers = row.get(what) if with_target or what == "inputs" else None
            if numbers is None:
                continue
            for v in numbers:  # a list: `field_kinds` checked it above
                check_real(f"regress {what}", v)  # a real, finite number
            bounds = declared or (_bounds(row, "value_range") if self.scale != "none" else None)
            if bounds is not None:
                outside = [v for v in numbers if not bounds[0] <= v <= bounds[1]]
                if outside:
                    used = field if declared else "value_range (inputs without an input_range use it)"
                    raise InputError(f"regress {what}", outside, f"outside the row's {used} {list(bounds)}")
            elif self.scale != "fit" and any(abs(v) > MU_LAW_M for v in numbers):
                raise InputError(f"regress {what}", [v for v in numbers if abs(v) > MU_LAW_M],
                                 f"beyond the value tokens' domain of +-{MU_LAW_M:g}, where they would be clipped: "
                                 "give the row a value_range [low, high] (scale: range maps it onto the tokens)")

    def allowed_bins(self, row: Mapping[str, Any]) -> range | None:
        """With a `value_range`, only the value bins inside it: answers never leave the declared range."""
        bounds = self._value_bounds(row) if self.scale != "none" else _bounds(row, "value_range")
        if bounds is None:
            return None
        n = self.layout.num_value_bins
        low, high = (self._to_tokens_domain(b, bounds if self.scale != "none" else None) for b in bounds)
        return range(value_to_bin(low, n), value_to_bin(high, n) + 1)

    # ------------------------------------------------------------------ numbers <-> the value tokens' domain
    def _value_bounds(self, row: Mapping[str, Any]) -> tuple[float, float] | None:
        """The [low, high] targets are mapped from: the row's value_range, else the fitted one; None: as they are."""
        if self.scale == "none":
            return None
        declared = _bounds(row, "value_range")
        if declared is not None or self.scale == "range":
            return declared
        if self.fitted is None:
            raise InputError("regress scale", "fit", "the scaler is not fitted yet: `unified train` fits it on the "
                             "training rows (Task.fit) and saves it with the model")
        fitted = self.fitted["value_range"]
        return tuple(fitted) if fitted is not None else None

    def _input_bounds(self, row: Mapping[str, Any], count: int) -> list[tuple[float, float] | None]:
        """The [low, high] each of `count` inputs is mapped from: the row's input_range, else the fitted range of
        its position, else the targets' range."""
        if self.scale == "none":
            return [None] * count
        declared = _bounds(row, "input_range")
        fitted = self.fitted["input_range"] if self.fitted is not None and declared is None else None
        if fitted is None:
            return [declared or self._value_bounds(row)] * count
        if not isinstance(fitted[0], list):
            return [tuple(fitted)] * count
        if count != len(fitted):
            raise InputError("regress inputs", list(row["inputs"]), f"{count} numbers, but the scaler was fitted on "
                             f"rows of {len(fitted)} inputs (give the row an input_range to map them)")
        return [tuple(b) for b in fitted]

    def _rangeless_noise(self) -> InputError:
        return InputError("regress input_noise", self.input_noise, "is a share of each input's range, and this row's "
                          "inputs have none (give it an input_range or a value_range)")

    def _to_tokens_domain(self, x: float, bounds: tuple[float, float] | None) -> float:
        """A number in [low, high] -> the value tokens' domain: linearly onto [-M, M] (`mu_law` spacing), or to the
        value whose companded position is linear in it (`uniform`: the range spread evenly over the bins)."""
        if bounds is None:
            return float(x)
        low, high = bounds
        fraction = (float(x) - (low + high) / 2) / ((high - low) / 2)  # [low, high] -> [-1, 1]
        return inverse_mu_law(fraction) if self.spacing == "uniform" else fraction * MU_LAW_M

    def _from_tokens_domain(self, y: float, row: Mapping[str, Any]) -> float:
        bounds = self._value_bounds(row)
        if bounds is None:
            return y
        low, high = bounds
        fraction = mu_law(y) if self.spacing == "uniform" else y / MU_LAW_M
        return (low + high) / 2 + fraction * (high - low) / 2

    def _scaled_inputs(self, row: Mapping[str, Any], rng: random.Random | None = None) -> list[float]:
        """The row's inputs in the tokens' domain; one past its fitted range is clamped to it, with a warning. In
        training (`rng` given) with `input_noise` s, each input first moves by a Gaussian of s times its range's
        half-width, kept inside the range."""
        numbers = [float(v) for v in row["inputs"]]
        bounds = self._input_bounds(row, len(numbers))
        if self.input_noise and isinstance(rng, random.Random):
            if None in bounds:
                raise self._rangeless_noise()
            numbers = [min(max(v + rng.gauss(0.0, self.input_noise * (b[1] - b[0]) / 2), b[0]), b[1])
                       for v, b in zip(numbers, bounds)]
        if self.fitted is not None and _bounds(row, "input_range") is None:
            outside = [(i, v) for i, (v, b) in enumerate(zip(numbers, bounds)) if b and not b[0] <= v <= b[1]]
            if outside:
                warnings.warn(f"regress inputs {outside} (position, value): outside the ranges fitted on the "
                              "training rows; clamped to them", stacklevel=2)
                numbers = [min(max(v, b[0]), b[1]) if b else v for v, b in zip(numbers, bounds)]
        return [self._to_tokens_domain(v, b) for v, b in zip(numbers, bounds)]

    def prompt(self, row, media, rng):
        if row.get("inputs") is not None:
            text = self.sequence_prompt.format(inputs=self._tokens(self._scaled_inputs(row, rng)),
                                               count=self.answer_length(row))
            placeholders = "".join(f"<{m}>" * len(v) for m, v in media.items())
            return f"{placeholders} {text}" if placeholders else text
        return super().prompt(row, media, rng)

    def _tokens(self, values) -> str:
        return values_to_tokens(values, num_bins=self.layout.num_value_bins)

    def target(self, row: Mapping[str, Any]) -> str:
        bounds = self._value_bounds(row)
        return self._tokens([self._to_tokens_domain(v, bounds) for v in row["values"]])

    def parse(self, text: str, row: Mapping[str, Any]) -> list[float]:
        """Generated value tokens -> as many floats as the truth has; a short answer is filled with the far end of the
        value range so the missing values count as wrong instead of being dropped."""
        try:
            values = [self._from_tokens_domain(y, row)
                      for y in tokens_to_values(text, num_bins=self.layout.num_value_bins)]
        except InputError:
            values = []
        wanted = self.answer_length(row)
        scale = self._value_bounds(row) or row.get("value_range") or row.get("values") or [0.0]
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
        spans = [self._value_bounds(r) or r.get("value_range") or r["values"] for r in rows]
        widths = [float(max(span) - min(span)) for span in spans]
        width = sum(widths) / len(widths) if widths else 0.0
        return min(1.0, max(0.0, 1.0 - float(metrics["mae"]) / width)) if width > 0 else float(metrics["mae"] == 0)

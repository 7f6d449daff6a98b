"""`regress`: numbers and/or media in, numbers out through Gato's mu-law value tokens.

Two row shapes: a question about media (``{"video", "question", "values"}``), and Gato-style sequences
(``{"inputs": [x0..xk], "values": [next m]}``), whose inputs are written as value tokens in the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from unified.errors import InputError
from unified.task_zoo.base import Task
from unified.task_zoo.registry import register_task
from unified.tokenizers import tokens_to_values, values_to_tokens
from unified.tokenizers.values import value_to_bin


@register_task("regress")
class Regress(Task):
    accepts = frozenset({"image", "video", "audio"})
    prompts = ("{question}", "answer with numbers: {question}")
    sequence_prompt = "continue the sequence {inputs} with {count} values"
    grammar = "val"
    metrics = ("mae", "rmse")
    row_fields = ("values",)
    target_fields = ("values",)  # at inference, `num_values` (default 1) says how many to write
    optional_fields = ("question", "inputs", "num_values", "value_range")
    list_fields = ("inputs",)
    example_row = {"video": "clips/train_00001.mp4", "question": "how many pixels does the circle move per frame?",
                   "values": [1.5], "value_range": [0, 4]}

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
        bounds = row.get("value_range")
        if bounds is not None:
            if (not isinstance(bounds, (list, tuple)) or len(bounds) != 2
                    or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
                    or not bounds[0] < bounds[1]):
                raise InputError("regress value_range", bounds, "expected [low, high] numbers with low < high")
            if with_target:
                outside = [v for v in row["values"] if not bounds[0] <= v <= bounds[1]]
                if outside:
                    raise InputError("regress values", outside, f"outside the row's value_range {list(bounds)}")

    def allowed_bins(self, row: Mapping[str, Any]) -> range | None:
        """With a `value_range`, only the value bins inside it: answers never leave the declared range."""
        bounds = row.get("value_range")
        if bounds is None:
            return None
        n = self.layout.num_value_bins
        return range(value_to_bin(bounds[0], n), value_to_bin(bounds[1], n) + 1)

    def prompt(self, row, media, rng):
        if row.get("inputs") is not None:
            text = self.sequence_prompt.format(inputs=self._tokens(row["inputs"]), count=self.answer_length(row))
            placeholders = "".join(f"<{m}>" * len(v) for m, v in media.items())
            return f"{placeholders} {text}" if placeholders else text
        return super().prompt(row, media, rng)

    def _tokens(self, values) -> str:
        return values_to_tokens(values, num_bins=self.layout.num_value_bins)

    def target(self, row: Mapping[str, Any]) -> str:
        return self._tokens(row["values"])

    def parse(self, text: str, row: Mapping[str, Any]) -> list[float]:
        """Generated value tokens -> as many floats as the truth has; a short answer is filled with the far end of the
        value range so the missing values count as wrong instead of being dropped."""
        try:
            values = tokens_to_values(text, num_bins=self.layout.num_value_bins)
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

"""`grounding` (a phrase -> its box as four location tokens, OFA-style) and `temporal_grounding` (a question -> the
start and end of the moment as two time tokens, relative to the clip's duration)."""

from __future__ import annotations

from typing import Any, Mapping

from unified.errors import InputError
from unified.task_zoo.base import Task
from unified.task_zoo.registry import register_task
from unified.tokenizers import Box, box_to_tokens, span_to_tokens, tokens_to_box, tokens_to_span


@register_task("grounding")
class Grounding(Task):
    accepts = frozenset({"image", "video"})
    prompts = ("where is the {phrase}?", "which region does \"{phrase}\" describe?", "find the {phrase}.")
    grammar = "loc"
    metrics = ("accuracy_at_iou", "mean_iou")
    row_fields = ("phrase", "box", "image_size")
    target_fields = ("box",)

    def target(self, row: Mapping[str, Any]) -> str:
        return box_to_tokens(row["box"], tuple(row["image_size"]))

    def parse(self, text: str, row: Mapping[str, Any]) -> Box | None:
        """Generated location tokens -> a `Box` in pixels; None when fewer than four were written."""
        try:
            return tokens_to_box(text, tuple(row["image_size"]))
        except InputError:
            return None

    def truth(self, row: Mapping[str, Any]) -> Box:
        return Box(*map(float, row["box"]))


@register_task("temporal_grounding")
class TemporalGrounding(Task):
    accepts = frozenset({"video", "audio"})
    requires = frozenset({"video"})
    prompts = ("{question}", "when does this happen: {question}", "find the moment: {question}")
    grammar = "time"
    metrics = ("mean_temporal_iou",)
    row_fields = ("question", "span", "duration")
    target_fields = ("span",)

    def target(self, row: Mapping[str, Any]) -> str:
        start, end = row["span"]
        return span_to_tokens(start, end, row["duration"])

    def parse(self, text: str, row: Mapping[str, Any]) -> tuple[float, float] | None:
        """Generated time tokens -> (start, end) in seconds; None when fewer than two were written."""
        try:
            return tokens_to_span(text, row["duration"])
        except InputError:
            return None

    def truth(self, row: Mapping[str, Any]) -> tuple[float, float]:
        start, end = row["span"]
        return float(start), float(end)

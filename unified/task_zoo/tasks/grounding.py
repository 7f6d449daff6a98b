"""`grounding` (a phrase -> its box as four location tokens, OFA-style) and `temporal_grounding` (a question -> the
start and end of the moment as two time tokens, relative to the clip's duration). Both use the vocabulary's bin counts
(`Task.layout`), and both fill at inference what a user should not have to give (the frame size, the duration)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    derived_fields = ("image_size",)  # (width, height) in pixels; read from the image or video when not given
    increasing = ((2, 0), (3, 1))  # x2 > x1, y2 > y1: decoding never writes an empty or inverted box
    example_row = {"image": "images/train_00001.png", "phrase": "red circle", "box": [12, 30, 28, 46],
                   "image_size": [64, 64]}

    def complete(self, row: Mapping[str, Any], media: Any) -> dict[str, Any]:
        row = dict(row)
        if row.get("image_size") is None:
            modality = "image" if row.get("image") is not None else "video"
            row["image_size"] = list(media.frame_size(row[modality], modality))
        return row

    def answer_length(self, row: Mapping[str, Any]) -> int:
        return 4  # x1 y1 x2 y2

    def target(self, row: Mapping[str, Any]) -> str:
        return box_to_tokens(row["box"], tuple(row["image_size"]), num_bins=self.layout.num_loc_bins)

    def parse(self, text: str, row: Mapping[str, Any]) -> Box | None:
        """Generated location tokens -> a `Box` in pixels; None when fewer than four were written."""
        try:
            return tokens_to_box(text, tuple(row["image_size"]), num_bins=self.layout.num_loc_bins)
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
    derived_fields = ("duration",)  # seconds; read from the video when not given
    increasing = ((1, 0),)  # end > start
    example_row = {"video": "clips/train_00001.mp4", "question": "when does the beep sound?", "span": [1.0, 1.5],
                   "duration": 4.0}

    def complete(self, row: Mapping[str, Any], media: Any) -> dict[str, Any]:
        row = dict(row)
        if row.get("duration") is None:
            row["duration"] = float(media.duration(row["video"]))
        return row

    def check_row(self, row: Mapping[str, Any], with_target: bool = True) -> None:
        super().check_row(row, with_target)
        span = row.get("span")
        if with_target and (len(span) != 2 or not all(isinstance(t, (int, float)) and not isinstance(t, bool)
                                                      for t in span)):
            raise InputError("temporal_grounding span", span, "expected [start, end] in seconds")

    def answer_length(self, row: Mapping[str, Any]) -> int:
        return 2  # start, end

    def target(self, row: Mapping[str, Any]) -> str:
        start, end = row["span"]
        return span_to_tokens(start, end, row["duration"], num_bins=self.layout.num_time_bins)

    def parse(self, text: str, row: Mapping[str, Any]) -> tuple[float, float] | None:
        """Generated time tokens -> (start, end) in seconds; None when fewer than two were written."""
        try:
            return tokens_to_span(text, row["duration"], num_bins=self.layout.num_time_bins)
        except InputError:
            return None

    def truth(self, row: Mapping[str, Any]) -> tuple[float, float]:
        start, end = row["span"]
        return float(start), float(end)

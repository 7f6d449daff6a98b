"""`grounding` (a phrase -> its box as four location tokens, OFA-style) and `temporal_grounding` (a question -> the
start and end of the moment as two time tokens, relative to the clip's duration). Both use the vocabulary's bin counts
(`Task.layout`), and both fill at inference what a user should not have to give (the frame size, the duration)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from unified.errors import InputError
from unified.task_zoo.base import Task
from unified.task_zoo.registry import register_task
from unified.tokenizers import Box, box_to_tokens, span_to_tokens, tokens_to_box, tokens_to_span


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
        """The frame size read from the image or video; a given `image_size` must agree with it (boxes are in
        its pixels: another size would move every box)."""
        row = dict(row)
        modality = "image" if row.get("image") is not None else "video"
        size = list(media.frame_size(row[modality], modality))
        if row.get("image_size") is None:
            row["image_size"] = size
        elif [float(v) for v in row["image_size"]] != [float(v) for v in size]:
            raise InputError(f"grounding image_size of {row.get('_source', 'a row')}", row["image_size"],
                             f"contradicts its {modality}, whose frames are {size[0]} x {size[1]} px")
        return row

    def check_row(self, row: Mapping[str, Any], with_target: bool = True) -> None:
        """Also: `image_size` is two positive numbers, and the box four numbers with x1 < x2 and y1 < y2 inside it."""
        super().check_row(row, with_target)
        size = row.get("image_size")
        if size is not None and not (len(size) == 2 and all(_number(v) and v > 0 for v in size)):
            raise InputError("grounding image_size", size, "expected [width, height] in pixels, both > 0")
        box = row.get("box")
        if not with_target or box is None:
            return
        if len(box) != 4 or not all(_number(v) for v in box):
            raise InputError("grounding box", box, "expected [x1, y1, x2, y2] in pixels")
        x1, y1, x2, y2 = box
        if not (x1 < x2 and y1 < y2):
            raise InputError("grounding box", box, "expected x1 < x2 and y1 < y2")
        if size is not None and (min(x1, y1) < 0 or x2 > size[0] or y2 > size[1]):
            raise InputError("grounding box", box, f"lies outside the image of {size[0]} x {size[1]} px "
                             "(image_size)")

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
        """Also: `duration` is positive, and the span [start, end] has start < end inside [0, duration]."""
        super().check_row(row, with_target)
        duration = row.get("duration")
        if duration is not None and not (_number(duration) and duration > 0):
            raise InputError("temporal_grounding duration", duration, "expected seconds > 0")
        span = row.get("span")
        if not with_target or span is None:
            return
        if len(span) != 2 or not all(_number(t) for t in span):
            raise InputError("temporal_grounding span", span, "expected [start, end] in seconds")
        if not 0 <= span[0] < span[1]:
            raise InputError("temporal_grounding span", span, "expected 0 <= start < end")
        if duration is not None and span[1] > duration:
            raise InputError("temporal_grounding span", span, f"ends past the clip's duration {duration} s")

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

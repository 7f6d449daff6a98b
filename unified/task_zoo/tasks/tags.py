"""`tags`: multi-label tagging of a clip (the QQ-browser winner's pretraining on ~10k video tags), answered as a set
of tokens: the decoder writes the tags, most likely first, separated by ", "; scored by mean average precision of
that ranked list, micro F1 and precision at 1."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from unified.errors import InputError
from unified.task_zoo.base import Task
from unified.task_zoo.metrics import normalise
from unified.task_zoo.registry import register_task

SEPARATOR = ", "


@register_task("tags")
class Tags(Task):
    accepts = frozenset({"image", "video", "audio"})
    prompts = ("list the tags of the clip.", "tags:", "which tags fit this?")
    grammar = "text"
    metrics = ("tags_map", "tags_f1", "tags_p_at_1")
    row_fields = ("tags",)
    target_fields = ("tags",)
    example_row = {"video": "clips/train_00001.mp4", "tags": ["red", "circle", "moves left"]}
    max_new_tokens = 48

    def check_row(self, row: Mapping[str, Any], with_target: bool = True) -> None:
        super().check_row(row, with_target)
        tags = row.get("tags")
        if with_target and (not tags or not all(isinstance(t, str) and t.strip() and "," not in t for t in tags)):
            raise InputError(f"{self.name} tags", tags, "expected a non-empty list of tags (text without commas: "
                             "the answer lists them separated by ', ')")

    def media_of(self, row: Mapping[str, Any]) -> dict[str, list[Any]]:
        media = super().media_of(row)
        if not media:
            raise InputError("tags input", sorted(row), f"needs one of {sorted(self.accepts)}")
        return media

    def target(self, row: Mapping[str, Any]) -> str:
        return SEPARATOR.join(t.strip() for t in row["tags"])  # the row's order: most relevant first, if it has one

    def parse(self, text: str, row: Mapping[str, Any]) -> list[str]:
        return list(dict.fromkeys(t for t in (normalise(p) for p in text.split(",")) if t))

    def truth(self, row: Mapping[str, Any]) -> list[str]:
        return [normalise(t) for t in row["tags"]]

    def show_row(self, row: Mapping[str, Any]) -> tuple[str, str]:
        return "(tag the clip)", SEPARATOR.join(row["tags"])

"""`classify`: input -> one of the task's labels, written as text and constrained to the label set."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from unified.errors import InputError
from unified.task_zoo.base import Task
from unified.task_zoo.registry import register_task


@register_task("classify")
class Classify(Task):
    accepts = frozenset({"image", "video", "audio"})
    prompts = ("which class is this? {choices}", "classify: {choices}")
    grammar = "options"
    metrics = ("accuracy",)
    row_fields = ("label", "labels")
    target_fields = ("label",)
    derived_fields = ("choices",)  # the labels, listed in the prompt
    example_row = {"image": "images/cat.png", "labels": ["cat", "dog", "bird"], "label": "cat"}

    def check_row(self, row: Mapping[str, Any], with_target: bool = True) -> None:
        super().check_row(row, with_target)
        if with_target and row["label"] not in row["labels"]:
            raise InputError("classify label", row["label"], f"not one of the row's labels {row['labels']}")

    def prompt(self, row, media, rng):
        return super().prompt({**row, "choices": ", ".join(map(str, row["labels"]))}, media, rng)

    def options(self, row: Mapping[str, Any], rng) -> list[str]:
        return [str(label) for label in row["labels"]]

    def target(self, row: Mapping[str, Any]) -> str:
        return str(row["label"])

    def parse(self, text: str, row: Mapping[str, Any]) -> str:
        return text.strip()

    def truth(self, row: Mapping[str, Any]) -> str:
        return str(row["label"])

    def show_row(self, row: Mapping[str, Any]) -> tuple[str, str]:
        return f"one of {list(row['labels'])}", self.truth(row)

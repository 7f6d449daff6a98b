"""`text2text`: a text-only instruction and its answer (Apollo keeps 10-14 % text-only data in the mix so the
language side is not forgotten)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from unified.task_zoo.base import Task
from unified.task_zoo.metrics import normalise as normalise_answer
from unified.task_zoo.registry import register_task


@register_task("text2text")
class Text2Text(Task):
    accepts = frozenset()
    prompts = ("{text}",)
    grammar = "text"
    chat_turn = "text"  # an imported turn with no media
    metrics = ("accuracy",)
    row_fields = ("text", "target")
    target_fields = ("target",)
    example_row = {"text": "what is the opposite of left?", "target": "right"}

    def target(self, row: Mapping[str, Any]) -> str:
        return str(row["target"])

    def parse(self, text: str, row: Mapping[str, Any]) -> str:
        return normalise_answer(text)

    def truth(self, row: Mapping[str, Any]) -> str:
        return normalise_answer(str(row["target"]))

"""`vqa`: an open question about an image or a video; the answer is short free text (exact-match accuracy)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from unified.task_zoo.base import Task
from unified.task_zoo.metrics import normalise as normalise_answer
from unified.task_zoo.registry import register_task


@register_task("vqa")
class VQA(Task):
    accepts = frozenset({"image", "video"})
    requires = frozenset()
    prompts = ("{question}", "question: {question} answer:", "answer briefly: {question}")
    grammar = "text"
    chat_turn = "question"  # an imported turn asking about its media
    metrics = ("accuracy",)
    row_fields = ("question", "answer")
    target_fields = ("answer",)
    example_row = {"video": "clips/train_00001.mp4", "question": "what colour is the circle?", "answer": "red"}

    def target(self, row: Mapping[str, Any]) -> str:
        return str(row["answer"])

    def parse(self, text: str, row: Mapping[str, Any]) -> str:
        return normalise_answer(text)

    def truth(self, row: Mapping[str, Any]) -> str:
        return normalise_answer(str(row["answer"]))

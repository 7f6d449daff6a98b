"""`clip_text_match`: is this text this clip's? The decoder answers "yes" or "no" (the "options" grammar).

Rows are the clip with its own text (`match` true, the default) or, where a corpus has them, a wrong text (`match`
false). Training needs no negatives in the data: the task has its own loss batch (`Task.own_loss`), where each row
also meets the hardest negative the batch holds, the other row's text sharing most words with its own (ties: the
earlier row), answered "no". Scored by accuracy over the rows as given.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from unified.errors import InputError
from unified.task_zoo.base import Task
from unified.task_zoo.batching import task_batch
from unified.task_zoo.metrics import normalise
from unified.task_zoo.registry import register_task

ANSWERS = ("yes", "no")


def hard_negatives(texts: Sequence[str]) -> list[int | None]:
    """For each text, the index of the most similar other text (word Jaccard; ties: the first), None when every
    other text is the same text."""
    words = [set(normalise(t).split()) for t in texts]
    found: list[int | None] = []
    for i, own in enumerate(words):
        best, score = None, -1.0
        for j, other in enumerate(words):
            if j == i or normalise(texts[j]) == normalise(texts[i]):
                continue
            similarity = len(own & other) / max(1, len(own | other))
            if similarity > score:
                best, score = j, similarity
        found.append(best)
    return found


@register_task("clip_text_match")
class ClipTextMatch(Task):
    accepts = frozenset({"image", "video", "audio"})
    prompts = ("does this text describe the clip? {text}", "is this the clip's text: {text}")
    grammar = "options"
    metrics = ("accuracy",)
    row_fields = ("text",)
    optional_fields = ("match",)
    target_fields = ("match",)
    example_row = {"video": "clips/train_00001.mp4", "text": "a red circle moves left.", "match": True}
    own_loss = True

    def media_of(self, row: Mapping[str, Any]) -> dict[str, list[Any]]:
        media = super().media_of(row)
        if not media:
            raise InputError("clip_text_match input", sorted(row), f"needs one of {sorted(self.accepts)}")
        return media

    def options(self, row: Mapping[str, Any], rng: random.Random | None) -> list[str]:
        return list(ANSWERS)

    def target(self, row: Mapping[str, Any]) -> str:
        return ANSWERS[0] if row.get("match", True) else ANSWERS[1]

    def parse(self, text: str, row: Mapping[str, Any]) -> bool | None:
        answer = normalise(text)
        return answer == ANSWERS[0] if answer in ANSWERS else None

    def truth(self, row: Mapping[str, Any]) -> bool:
        return bool(row.get("match", True))

    def loss_batch(self, rows: Sequence[Mapping[str, Any]], processor: Any, rng: random.Random | None
                   ) -> dict[str, Any]:
        """The rows as given, then each row's clip with its hardest negative text from the batch, answered "no"."""
        negatives = [{**row, "text": rows[j]["text"], "match": False}
                     for row, j in zip(rows, hard_negatives([str(r["text"]) for r in rows])) if j is not None]
        return task_batch(self, [*rows, *negatives], processor, rng=rng)

    def show_row(self, row: Mapping[str, Any]) -> tuple[str, str]:
        return str(row["text"]), ANSWERS[0] if self.truth(row) else ANSWERS[1]

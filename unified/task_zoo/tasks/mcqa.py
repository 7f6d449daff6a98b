"""`video_mcqa` and `audio_video_mcqa`: multiple choice about a clip.

Two answer modes:
- ``generate`` (default): the options are listed in the prompt behind labels and the decoder writes one label,
  constrained to the labels (the "options" grammar).
- ``rank``: each option text is scored by its length-normalised log-likelihood under the LM head
  (`unified.heads.score_options`) and the best one wins.

Option order is shuffled in training, so position carries no signal; labels are configurable because models
over-pick "A" (the default labels avoid A-D). Evaluation adds how often each label is predicted vs how often it is
right (`label_distribution`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from unified.errors import InputError
from unified.task_zoo.base import Example, Task
from unified.task_zoo.metrics import get_metric
from unified.task_zoo.registry import register_task

DEFAULT_LABELS = ("W", "X", "Y", "Z", "V", "U")


class MultipleChoice(Task):
    prompts = ("{question} options: {choices} answer:", "question: {question} choose from {choices}.",
               "{question} pick one: {choices}")
    grammar = "options"
    chat_turn = "options"  # an imported turn whose user lists lettered options
    metrics = ("accuracy",)
    row_fields = ("question", "options", "answer_index")
    target_fields = ("answer_index",)
    derived_fields = ("choices",)  # the options behind their labels, as the prompt lists them
    example_row = {"video": "clips/train_00001.mp4", "audio": "clips/train_00001.mp4",
                   "question": "which shape appears first?",
                   "options": ["red circle", "blue square", "green triangle"], "answer_index": 0}

    def __init__(self, labels: tuple[str, ...] = DEFAULT_LABELS, mode: str = "generate"):
        if mode not in ("generate", "rank"):
            raise InputError(f"{self.name} mode", mode, "expected 'generate' or 'rank'")
        if len(set(labels)) != len(labels) or not all(isinstance(x, str) and x.strip() for x in labels):
            raise InputError(f"{self.name} labels", labels, "expected distinct non-empty strings")
        self.labels, self.mode = tuple(labels), mode

    def check_row(self, row: Mapping[str, Any], with_target: bool = True) -> None:
        super().check_row(row, with_target)
        options, index = row["options"], row.get("answer_index")
        if not isinstance(options, (list, tuple)) or not 2 <= len(options) <= len(self.labels):
            raise InputError(f"{self.name} options", options, f"expected 2..{len(self.labels)} options "
                             f"(one per label {self.labels})")
        if with_target and (not isinstance(index, int) or not 0 <= index < len(options)):
            raise InputError(f"{self.name} answer_index", index, f"expected an int in 0..{len(options) - 1}")

    def order(self, row: Mapping[str, Any], rng: random.Random | None) -> list[int]:
        order = list(range(len(row["options"])))
        if rng is not None:
            rng.shuffle(order)
        return order

    def to_example(self, row: Mapping[str, Any], *, rng: random.Random | None = None,
                   with_target: bool = True) -> Example:
        self.check_row(row, with_target)
        media = self.media_of(row)
        order = self.order(row, rng)
        options = [str(row["options"][i]) for i in order]
        choices = " ".join(f"{label}. {text}" for label, text in zip(self.labels, options))
        template = self.prompts[0] if rng is None else rng.choice(self.prompts)
        text = template.format(question=row["question"], choices=choices)
        placeholders = "".join(f"<{m}>" * len(v) for m, v in media.items())
        target = None
        if with_target:
            answer = order.index(row["answer_index"])
            target = options[answer] if self.mode == "rank" else self.labels[answer]
        return Example(f"{placeholders} {text}", media, target, options)

    @property
    def answer_mode(self) -> str:
        return self.mode

    def choices(self, row: Mapping[str, Any]) -> list[str]:
        """The labels the decoder may write (`generate` mode), or the option texts that are scored (`rank`)."""
        return self.option_labels(row) if self.mode == "generate" else [str(o) for o in row["options"]]

    def option_labels(self, row: Mapping[str, Any]) -> list[str]:
        return list(self.labels[: len(row["options"])])

    def vocabulary(self, rows, rng) -> list[str]:
        return [*super().vocabulary(rows, rng), *(f"{label}. {label}" for label in self.labels)]

    def target(self, row: Mapping[str, Any]) -> str:
        return self.labels[row["answer_index"]]

    def parse(self, text: str, row: Mapping[str, Any]) -> str:
        """Generated label (or, in `rank` mode, the chosen option text) -> the option text ("" if neither)."""
        text = text.strip()
        options = [str(o) for o in row["options"]]
        if text in options:
            return text
        labels = self.option_labels(row)
        first = text.split(".")[0].strip()
        return options[labels.index(first)] if first in labels else ""

    def truth(self, row: Mapping[str, Any]) -> str:
        return str(row["options"][row["answer_index"]])

    def label_of(self, answer: str, row: Mapping[str, Any]) -> str:
        options = [str(o) for o in row["options"]]
        return self.labels[options.index(answer)] if answer in options else "?"

    def details(self, predictions, truths, rows) -> dict[str, Any]:
        """How often each label is picked vs how often it is right (models over-pick one position)."""
        picked = [self.label_of(p, row) for p, row in zip(predictions, rows)]
        right = [self.label_of(t, row) for t, row in zip(truths, rows)]
        return {"label_distribution": get_metric("label_distribution")(picked, right)}

    def show_row(self, row: Mapping[str, Any]) -> tuple[str, str]:
        return f"{row['question']} {list(row['options'])}", self.truth(row)


@register_task("video_mcqa")
class VideoMCQA(MultipleChoice):
    """Multiple choice whose answer needs the frames (order, direction, counting, what happens after what)."""

    accepts = frozenset({"video"})
    requires = frozenset({"video"})
    example_row = {k: v for k, v in MultipleChoice.example_row.items() if k != "audio"}


@register_task("audio_video_mcqa")
class AudioVideoMCQA(MultipleChoice):
    """Multiple choice whose answer needs the audio track as well as the frames."""

    accepts = frozenset({"video", "audio"})
    requires = frozenset({"video", "audio"})

"""`caption`: image, video or audio in; a sentence out (METEOR, CIDEr, BLEU-4, ROUGE-L against the references)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from unified.errors import InputError
from unified.task_zoo.base import Example, Task
from unified.task_zoo.metrics import CaptionScorer
from unified.task_zoo.registry import register_task


@register_task("caption")
class Caption(Task):
    accepts = frozenset({"image", "video", "audio"})
    prompts = ("what does the clip show?", "describe the clip.", "write a caption for this.",
               "what happens here?")
    grammar = "text"
    chat_turn = "description"  # an imported turn asking to describe its media
    metrics = ("meteor", "cider", "bleu4", "rouge_l")
    main_metric = "meteor"
    row_fields = ("caption",)
    target_fields = ("caption", "captions")
    optional_fields = ("captions",)  # every reference caption; training samples one as the target
    example_row = {"video": "clips/train_00001.mp4", "caption": "a red circle moves left.",
                   "captions": ["a red circle moves left.", "the red circle slides to the left."]}

    def media_of(self, row: Mapping[str, Any]) -> dict[str, list[Any]]:
        media = super().media_of(row)
        if not media:
            raise self._no_media(row)
        return media

    def to_example(self, row: Mapping[str, Any], *, rng: random.Random | None = None,
                   with_target: bool = True) -> Example:
        example = super().to_example(row, rng=rng, with_target=with_target)
        if with_target and rng is not None and row.get("captions"):
            example.target = rng.choice(list(row["captions"]))  # every reference is a valid target
        return example

    def target(self, row: Mapping[str, Any]) -> str:
        return str(row["caption"])

    def parse(self, text: str, row: Mapping[str, Any]) -> str:
        return text.strip()

    def truth(self, row: Mapping[str, Any]) -> list[str]:
        return list(row.get("captions") or [row["caption"]])

    def score(self, predictions: list[str], truths: list[list[str]]) -> dict[str, float]:
        with CaptionScorer(metrics=self.metrics) as scorer:  # one JVM for the whole evaluation
            result = scorer.score(predictions, truths)
        return {name: float(result[name]) for name in self.metrics}

    def show_row(self, row: Mapping[str, Any]) -> tuple[str, str]:
        return "(describe the clip)", self.truth(row)[0]

    def _no_media(self, row: Mapping[str, Any]) -> Exception:
        return InputError("caption input", sorted(row), f"needs one of {sorted(self.accepts)}")

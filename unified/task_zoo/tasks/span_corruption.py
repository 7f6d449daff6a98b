"""`span_corruption`: T5's self-supervised objective on any text (a caption, a title, a transcript), with or
without the clip it belongs to. Spans of words are replaced by sentinels ``[0]``, ``[1]``...; the decoder writes each
sentinel followed by the words it hid, and a closing sentinel:

    text    the quick brown fox jumps over the lazy dog     spans (1, 3), (6, 8)
    input   the [0] fox jumps over [1] dog
    target  [0] quick brown [1] the lazy [2]

`density` of the words (T5: 0.15, at least one word, never all) are hidden in spans of `mean_span` words on average
(T5: 3), laid out as T5's `random_spans_noise_mask` does: hidden and kept words are each cut into the same number of
runs of random positive length, and the runs alternate, starting with a kept one. Training draws new spans every
time; evaluation draws them from the text itself (the same spans for the same text).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from unified.errors import InputError
from unified.task_zoo.base import Example, Task
from unified.task_zoo.metrics import normalise
from unified.task_zoo.registry import register_task


def sentinel(index: int) -> str:
    return f"[{index}]"


def random_spans(n: int, density: float, mean_span: float, rng: random.Random) -> list[tuple[int, int]]:
    """[(start, end)) word spans to hide in `n` words (n >= 2)."""
    hidden = min(max(round(n * density), 1), n - 1)
    count = max(1, min(round(hidden / mean_span), hidden, n - hidden))
    hidden_runs, kept_runs = _cut(hidden, count, rng), _cut(n - hidden, count, rng)
    spans, at = [], 0
    for kept, length in zip(kept_runs, hidden_runs):
        at += kept
        spans.append((at, at + length))
        at += length
    return spans


def _cut(total: int, parts: int, rng: random.Random) -> list[int]:
    """`total` as `parts` positive lengths, the cut points drawn uniformly."""
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total])]


def corrupt(words: list[str], spans: list[tuple[int, int]]) -> tuple[str, str]:
    """(input, target) for hiding `spans` of `words` (see the module docstring)."""
    kept, target, at = [], [], 0
    for index, (start, end) in enumerate(spans):
        kept += [*words[at:start], sentinel(index)]
        target += [sentinel(index), *words[start:end]]
        at = end
    return " ".join([*kept, *words[at:]]), " ".join([*target, sentinel(len(spans))])


@register_task("span_corruption")
class SpanCorruption(Task):
    accepts = frozenset({"image", "video", "audio"})
    prompts = ("fill in the blanks: {corrupted}", "{corrupted}")
    grammar = "text"
    metrics = ("accuracy",)
    row_fields = ("text",)
    derived_fields = ("corrupted",)  # the text with its spans hidden
    example_row = {"text": "a red circle moves to the left of the frame."}
    max_new_tokens = 48

    def __init__(self, density: float = 0.15, mean_span: float = 3.0):
        if not isinstance(density, (int, float)) or not 0 < density < 1:
            raise InputError("span_corruption density", density, "expected a fraction of the words in (0, 1)")
        if not isinstance(mean_span, (int, float)) or mean_span < 1:
            raise InputError("span_corruption mean_span", mean_span, "expected a mean span length >= 1 word")
        self.density, self.mean_span = float(density), float(mean_span)

    def check_row(self, row: Mapping[str, Any], with_target: bool = True) -> None:
        super().check_row(row, with_target)
        if len(str(row["text"]).split()) < 2:
            raise InputError(f"{self.name} text", row["text"], "expected at least two words (one to hide, one to keep)")

    def corrupted(self, row: Mapping[str, Any], rng: random.Random | None) -> tuple[str, str]:
        words = str(row["text"]).split()
        spans = random_spans(len(words), self.density, self.mean_span, rng or random.Random(" ".join(words)))
        return corrupt(words, spans)

    def to_example(self, row: Mapping[str, Any], *, rng: random.Random | None = None,
                   with_target: bool = True) -> Example:
        self.check_row(row, with_target)
        media = self.media_of(row)
        shown, target = self.corrupted(row, rng)
        prompt = self.prompt({"corrupted": shown}, media, rng)
        return Example(prompt, media, target if with_target else None)

    def target(self, row: Mapping[str, Any]) -> str:
        return self.corrupted(row, None)[1]

    def parse(self, text: str, row: Mapping[str, Any]) -> str:
        return normalise(text)

    def truth(self, row: Mapping[str, Any]) -> str:
        return normalise(self.corrupted(row, None)[1])

    def show_row(self, row: Mapping[str, Any]) -> tuple[str, str]:
        shown, target = self.corrupted(row, None)
        return shown, target

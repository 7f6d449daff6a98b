"""What a task is: prompts, how a raw row becomes model inputs and a target, the output grammar for constrained
decoding, how generated text becomes a typed result, and the metrics that judge it.

A new task is a short subclass (see the README for a complete one):

    @register_task("count_shapes")
    class CountShapes(Task):
        accepts = frozenset({"video"})
        requires = frozenset({"video"})
        prompts = ("<video> how many shapes appear?", "<video> count the shapes.")
        grammar = "int"
        metrics = ("accuracy",)

        def target(self, row):            # the text the decoder learns to write
            return int_to_tokens(row["count"])

        def parse(self, text, row):       # generated text -> typed result
            return tokens_to_ints(text)[0]

        def truth(self, row):             # what `parse` is compared with
            return row["count"]
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from unified.errors import InputError

MODALITIES = ("image", "video", "audio")
GRAMMARS = ("text", "loc", "time", "val", "int", "options", "embedding")


@dataclass
class Example:
    """One model input built from a row: `text` is the prompt with placeholders; `media` maps modality -> sources
    in prompt order; `target` is the decoder's text (None at inference); `options` the allowed answers for the
    "options" grammar."""

    text: str
    media: dict[str, list[Any]] = field(default_factory=dict)
    target: str | None = None
    options: list[str] | None = None

    def as_processor_input(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, **{k: v for k, v in self.media.items() if v}}
        if self.target is not None:
            out["target"] = self.target
        return out


class Task:
    """Base class of every task. Subclasses set the class attributes and implement `target`, `parse`, `truth`.

    `prompts` are templates formatted with the row's fields (``{question}``, ``{phrase}``...); in training one is
    sampled per example, in evaluation the first is used. Media placeholders (``<video>`` ...) for the modalities a
    row carries are put in front of the prompt unless the template places them itself.
    """

    name: ClassVar[str] = ""
    accepts: ClassVar[frozenset[str]] = frozenset()  # modalities the task can take
    requires: ClassVar[frozenset[str]] = frozenset()  # modalities it cannot do without
    prompts: ClassVar[tuple[str, ...]] = ()
    grammar: ClassVar[str] = "text"  # what the decoder may emit: one of GRAMMARS
    metrics: ClassVar[tuple[str, ...]] = ()
    main_metric: ClassVar[str] = ""  # the metric the integral score uses (default: the first of `metrics`)
    head: ClassVar[str] = "lm"
    row_fields: ClassVar[tuple[str, ...]] = ()  # fields a row must carry besides its media
    target_fields: ClassVar[tuple[str, ...]] = ()  # those of `row_fields` only training/evaluation need

    def __init__(self, **options: Any):
        if options:
            raise InputError(f"options of task {self.name!r}", sorted(options), "this task takes no options")

    # ------------------------------------------------------------------ rows -> examples
    def media_of(self, row: Mapping[str, Any]) -> dict[str, list[Any]]:
        """The row's media by modality, checked against `accepts` and `requires`."""
        media = {m: _as_list(row.get(m)) for m in MODALITIES if row.get(m) is not None}
        extra = sorted(set(media) - self.accepts)
        if extra:
            raise InputError(f"{self.name} input", extra, f"this task accepts {sorted(self.accepts) or 'no media'}")
        missing = sorted(self.requires - set(media))
        if missing:
            raise InputError(f"{self.name} input", missing, f"this task requires {sorted(self.requires)}; "
                             f"it accepts {sorted(self.accepts)}")
        return media

    def check_row(self, row: Mapping[str, Any], with_target: bool = True) -> None:
        """Raise `InputError` naming the fields a row lacks (the target's only when `with_target`)."""
        needed = [f for f in self.row_fields if with_target or f not in self.target_fields]
        missing = [f for f in needed if row.get(f) is None]
        if missing:
            raise InputError(f"{self.name} row", sorted(row), f"missing field(s) {missing}")

    def prompt(self, row: Mapping[str, Any], media: Mapping[str, list[Any]], rng: random.Random | None) -> str:
        template = self.prompts[0] if rng is None else rng.choice(self.prompts)
        text = template.format(**{k: v for k, v in row.items() if isinstance(v, (str, int, float))})
        placeholders = "".join(f"<{m}>" * len(media[m]) for m in MODALITIES if m in media and f"<{m}>" not in text)
        return f"{placeholders} {text}" if placeholders else text

    def to_example(self, row: Mapping[str, Any], *, rng: random.Random | None = None,
                   with_target: bool = True) -> Example:
        """Row -> `Example`. `rng` None means evaluation (the first prompt, no shuffling)."""
        self.check_row(row, with_target)
        media = self.media_of(row)
        return Example(self.prompt(row, media, rng), media, self.target(row) if with_target else None,
                       self.options(row, rng))

    # ------------------------------------------------------------------ subclass hooks
    def target(self, row: Mapping[str, Any]) -> str:
        raise NotImplementedError(f"{type(self).__name__}.target")

    def parse(self, text: str, row: Mapping[str, Any]) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.parse")

    def truth(self, row: Mapping[str, Any]) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.truth")

    def options(self, row: Mapping[str, Any], rng: random.Random | None) -> list[str] | None:
        return None

    def score(self, predictions: list[Any], truths: list[Any]) -> dict[str, float]:
        """The task's metrics over parsed predictions and truths."""
        from unified.task_zoo.metrics import get_metric

        return {name: float(get_metric(name)(predictions, truths)) for name in self.metrics}

    def normalised(self, metrics: Mapping[str, float], rows: list[Mapping[str, Any]]) -> float:
        """The main metric mapped to [0, 1], higher is better (what the integral score averages)."""
        return min(1.0, max(0.0, float(metrics[self.primary_metric])))

    @property
    def primary_metric(self) -> str:
        return self.main_metric or self.metrics[0]

    def describe(self) -> dict[str, Any]:
        """What `unified tasks` prints."""
        return {"name": self.name, "accepts": sorted(self.accepts), "requires": sorted(self.requires),
                "grammar": self.grammar, "metrics": list(self.metrics), "head": self.head,
                "prompts": list(self.prompts)}


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]

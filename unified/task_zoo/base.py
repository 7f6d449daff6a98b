"""What a task is: the one protocol every caller (training, evaluation, `Model.generate`, the demo, the vocabulary)
uses. Nothing outside a task's own file knows which task it is; it asks the task through the hooks below.

A new task is a short subclass (docs/writing-a-task.md has a complete one):

    @register_task("count_shapes")
    class CountShapes(Task):
        accepts = frozenset({"video"})
        requires = frozenset({"video"})
        prompts = ("how many shapes appear?", "count the shapes.")
        grammar = "int"
        metrics = ("accuracy",)
        row_fields = ("count",)
        target_fields = ("count",)
        example_row = {"video": "clip.mp4", "count": 3}

        def target(self, row):            # the text the decoder learns to write
            return int_to_tokens(row["count"], self.layout.num_int_tokens)

        def parse(self, text, row):       # generated text -> typed result
            ints = tokens_to_ints(text, self.layout.num_int_tokens)
            return ints[0] if ints else None

        def truth(self, row):             # what `parse` is compared with
            return row["count"]

The protocol, with each hook's default:

    declared (class attributes)      checked at registration (`validate_task_class`), `ConfigError` naming the task
      accepts, requires              modalities the task takes / cannot do without
      prompts                        templates formatted with the row's fields and `derived_fields`
      grammar                        what the decoder may write: one of GRAMMARS
      metrics, main_metric           registered metric names (`unified.task_zoo.metrics`)
      row_fields, optional_fields    the fields a row must / may carry
      target_fields                  those of them only training and evaluation use (not given to generate)
      derived_fields                 fields `complete` or `prompt` add (a frame size, a list of choices)
      list_fields                    list-valued fields the example row does not show (regress's `inputs`)
      example_row                    a complete training row: registration runs the task on it, `unified tasks`
                                     prints it
      contrastive                    trained with InfoNCE between `to_example` and `pair_example` (grammar
                                     "embedding"), not through the LM head (an `own_loss` task)
      increasing                     (later, earlier) pairs of answer tokens whose bins must increase (a box's
                                     x2 > x1: (2, 0)); decoding enforces them
      chat_turn                      which turns of an imported conversation become its rows: one of CHAT_TURNS
                                     ("options", "description", "question", "text") or None (none)
    hooks (methods)
      complete(row, media)           a row given at inference -> the row with its derived fields (default: as is)
      inputs(row)                    a data row -> what `Model.generate` is given (the row minus target fields)
      own_loss                       trained by its own `loss` on whole batches of its rows (`loss_batch`),
                                     never mixed or packed with other tasks' rows; default: contrastive tasks
      loss_batch(rows, processor, rng)   the tensors `loss` reads (default: pairs for contrastive tasks, else
                                     the rows' examples and targets)
      loss(model, batch)             a scalar training loss (default: InfoNCE for contrastive tasks, else the LM
                                     head's token cross-entropy); the mixture weights it like any task's
      fit(rows)                      options learnt from the training rows, saved with the model (regress's
                                     fitted scaler); default none
      synthetic_rows(scene)          rows about one scene of the synthetic world (`unified.data.scene.Scene`),
                                     media as "{video}" / "{image}"; default none. A plug-in task that defines it
                                     gets synthetic training data, evaluation rows and a demo row
      answer_mode                    "generate" (under the grammar), "rank" (options by likelihood) or "embed"
      answer_length(row)             tokens of the answer: exact for loc/time/val, at most for int, None for text
      allowed_bins(row)              the bins a loc/time/val answer may use (default: all; regress: value_range)
      reads_distribution,            read the answer from the bin probabilities of each step instead of the
      parse_distribution(text, p, row)   greedy tokens (regress's decode: mean / median); default: parse
      choices(row)                   what the "options" grammar may write (default: `options(row, None)`)
      vocabulary(rows, rng)          texts the tokenizer must cover (prompts, targets, option labels, pair texts)
      evaluate(model, processor, rows)   (metrics, details): predict + `score` + `details`, or retrieval metrics
      details(predictions, truths, rows) extra evaluation tables (default: none)
      show(answer) / show_row(row)   the demo's answer cell / (question, truth) cells
      example(row, rng)              `to_example` with the `demos` demonstrations written before the query: what
                                     generic code calls (the common option `demos: k`, saved `demo_rows`)
      message_field                  the input field a chat message's text fills (`unified.data.chat`)
      answer_json(answer, row)       the typed answer as JSON: {"type", "value"[, "index", "field"]} (the server's
                                     `answer`, `unified predict`'s lines)
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from unified.errors import ConfigError, InputError
from unified.heads.embedding import info_nce
from unified.task_zoo.batching import contrastive_batch, task_batch
from unified.task_zoo.decoding import pair_metrics, predict
from unified.task_zoo.metrics import METRICS, get_metric
from unified.task_zoo.protocol import (
    ANSWER_MODES,
    ANSWER_TYPES,
    CHAT_TURNS,
    FIXED_LENGTH,
    GRAMMARS,
    MAX_INT_TOKENS,
    MODALITIES,
)
from unified.tokenizers.layout import VocabLayout

DEMO_SEPARATOR = " | "  # between demonstrations, and before the query
PLACEHOLDER = re.compile(r"<(?:image|video|audio)>")

__all__ = ["ANSWER_MODES", "ANSWER_TYPES", "FIXED_LENGTH", "GRAMMARS", "MAX_INT_TOKENS", "MODALITIES", "Example",
           "NthPrompt", "Task", "validate_task_class"]


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
    """Base class of every task. Subclasses set the class attributes and implement `target`, `parse`, `truth`;
    the other hooks have defaults (see the module docstring).

    `prompts` are templates formatted with the row's fields (``{question}``, ``{phrase}``...); in training one is
    sampled per example, in evaluation the first is used. Media placeholders (``<video>`` ...) for the modalities a
    row carries are put in front of the prompt unless the template places them itself.

    `layout` is the vocabulary's `VocabLayout` (bin counts of the location, value, integer and time tokens);
    `get_task(name, layout=tokenizer.layout)` sets it, so targets and parses use the tokenizer's own bins.
    """

    name: ClassVar[str] = ""
    accepts: ClassVar[frozenset[str]] = frozenset()  # modalities the task can take
    requires: ClassVar[frozenset[str]] = frozenset()  # modalities it cannot do without
    prompts: ClassVar[tuple[str, ...]] = ()
    grammar: ClassVar[str] = "text"  # what the decoder may emit: one of GRAMMARS
    metrics: ClassVar[tuple[str, ...]] = ()
    main_metric: ClassVar[str] = ""  # the metric the integral score uses (default: the first of `metrics`)
    row_fields: ClassVar[tuple[str, ...]] = ()  # fields a row must carry besides its media
    target_fields: ClassVar[tuple[str, ...]] = ()  # fields (required or optional) only training/evaluation use
    optional_fields: ClassVar[tuple[str, ...]] = ()  # fields a row may carry (`unified tasks` lists them)
    derived_fields: ClassVar[tuple[str, ...]] = ()  # fields `complete` / `prompt` fill in (not given by users)
    list_fields: ClassVar[tuple[str, ...]] = ()  # fields whose value is a list, besides those the example row shows
    example_row: ClassVar[Mapping[str, Any]] = {}  # a complete training row (registration runs the task on it)
    contrastive: ClassVar[bool] = False  # InfoNCE between `to_example` and `pair_example` instead of the LM loss
    increasing: ClassVar[tuple[tuple[int, int], ...]] = ()  # (later, earlier) answer tokens: later's bin is greater
    chat_turn: ClassVar[str | None] = None  # the imported conversation turns that become its rows (CHAT_TURNS)
    # the longest "text" answer `Model.generate` / evaluation write when the caller gives no `max_new_tokens`; a run
    # sets it per task with the common option `task_options: {caption: {max_new_tokens: 48}}`, saved with the model
    max_new_tokens: int = 32
    # Gato's prompt conditioning: `task_options: {vqa: {demos: 2}}` writes 2 solved examples before each query (see
    # `example`); `demo_rows` are the ones saved with the model, `demo_pool` the training rows drawn from in training
    demos: int = 0
    demo_rows: Sequence[Mapping[str, Any]] = ()
    demo_pool: Sequence[Mapping[str, Any]] = ()
    layout: VocabLayout = VocabLayout()

    def __init__(self, **options: Any):
        if options:
            raise InputError(f"options of task {self.name!r}", sorted(options), "this task takes no options")

    def fit(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Options learnt from the training rows (a scaler, say), given back to the constructor and saved with the
        model in its `task_options.json`, so inference reads numbers as training did. Default: nothing to learn."""
        return {}

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
        """Raise `InputError` naming the fields a row lacks (the target's only when `with_target`) or holds as the
        wrong kind (`field_kinds`: a list where text belongs, text where a list belongs)."""
        needed = [f for f in self.row_fields if with_target or f not in self.target_fields]
        missing = [f for f in needed if row.get(f) is None]
        if missing:
            raise InputError(f"{self.name} row", sorted(row), f"missing field(s) {missing}")
        for key, kind in self.field_kinds.items():
            value = row.get(key)
            if value is not None and not KIND_CHECKS[kind](value):
                raise InputError(f"{self.name} {key}", value, f"expected {kind}, got {type(value).__name__}")

    @property
    def field_kinds(self) -> dict[str, str]:
        """{field: "text" | "number" | "list" | "mapping" | "flag"}, from the example row's values and
        `list_fields`; media columns are paths and checked where they are read."""
        kinds = {key: _kind_of(value) for key, value in self.example_row.items() if key not in MODALITIES}
        return {**kinds, **dict.fromkeys(self.list_fields, "list")}

    def complete(self, row: Mapping[str, Any], media: Any) -> dict[str, Any]:
        """A row given at inference -> the row with the fields a user should not have to give (`derived_fields`
        such as a frame size or a clip's duration). `media` answers `frame_size(source, modality)` -> (w, h) and
        `duration(source)` -> seconds, as the processor does. Default: the row unchanged."""
        return dict(row)

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
        target = self.target(row) if with_target and not self.contrastive else None  # contrastive: no decoder text
        return Example(self.prompt(row, media, rng), media, target, self.options(row, rng))

    def example(self, row: Mapping[str, Any], *, rng: random.Random | None = None,
                with_target: bool = True) -> Example:
        """`to_example` with the task's `demos` demonstrations before the query, each as "prompt answer" (the
        evaluation prompt, media placeholders left out: their media are not encoded), joined by " | ":

            what shape? circle | what size? big | <video> what colour?

        What every generic caller (training batches, evaluation, `Model.generate`) uses. In training (`rng` given)
        the demonstrations are drawn from `demo_pool`, the task's training rows, never the row itself; otherwise
        they are the first `demos` of `demo_rows`, saved with the model or set by the caller."""
        example = self.to_example(row, rng=rng, with_target=with_target)
        if self.demos:
            example.text = DEMO_SEPARATOR.join([*self.demo_texts(row, rng), example.text])
        return example

    def demo_texts(self, row: Mapping[str, Any], rng: random.Random | None) -> list[str]:
        """The `demos` demonstrations written before `row`'s prompt (see `example`)."""
        k, pool = self.demos, self.demo_pool
        if rng is not None and len(pool) > k:
            source = row.get("_source")
            picks = [pool[i] for i in rng.sample(range(len(pool)), k + 1)]
            chosen = [d for d in picks if d is not row and (source is None or d.get("_source") != source)][:k]
        elif len(self.demo_rows) >= k:
            chosen = list(self.demo_rows[:k])
        else:
            raise InputError(f"{self.name} demos", k, f"only {len(self.demo_rows)} demonstration row(s); give "
                             "task_options demo_rows (training saves them with the model)")
        texts = []
        for demo in chosen:
            shown = self.to_example(demo, rng=None)
            texts.append(f"{' '.join(PLACEHOLDER.sub(' ', shown.text).split())} {shown.target}")
        return texts

    # ------------------------------------------------------------------ training loss
    @property
    def own_loss(self) -> bool:
        """Trained by `loss` on `loss_batch` (whole batches of its own rows) instead of sharing the LM head's
        token cross-entropy with other tasks' rows. A task sets `own_loss = True` to use its own; default: the
        contrastive tasks."""
        return self.contrastive

    def loss_batch(self, rows: Sequence[Mapping[str, Any]], processor: Any, rng: random.Random | None
                   ) -> dict[str, Any]:
        """The tensors `loss` needs for `rows` (built where batches are prepared, in DataLoader workers too):
        contrastive tasks' rows then their pairs, else the rows' examples with their targets."""
        if self.contrastive:
            return contrastive_batch(self, rows, processor, rng)
        return task_batch(self, rows, processor, rng=rng)

    def loss(self, model: Any, batch: Mapping[str, Any]) -> Any:
        """One `loss_batch`'s training loss, a scalar tensor (the batch is on the model's device): symmetric
        InfoNCE for contrastive tasks, else the LM head's token cross-entropy."""
        if self.contrastive:
            embeddings = model(**batch, return_embeddings=True)  # (2N, E): the rows, then their pairs
            n = embeddings.shape[0] // 2
            core = getattr(model, "module", model)  # DDP/accelerate wrap the model; the temperature lives on it
            return info_nce(embeddings[:n], embeddings[n:], core.embed_head.temperature)
        return model(**batch).loss

    def pair_example(self, row: Mapping[str, Any]) -> Example:
        """A contrastive task's other side of the pair (retrieval: the text that matches the clip)."""
        raise NotImplementedError(f"{type(self).__name__}.pair_example (needed by contrastive tasks)")

    # ------------------------------------------------------------------ subclass hooks
    def target(self, row: Mapping[str, Any]) -> str:
        raise NotImplementedError(f"{type(self).__name__}.target")

    def parse(self, text: str, row: Mapping[str, Any]) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.parse")

    def truth(self, row: Mapping[str, Any]) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.truth")

    def options(self, row: Mapping[str, Any], rng: random.Random | None) -> list[str] | None:
        return None

    # ------------------------------------------------------------------ answering
    @property
    def answer_mode(self) -> str:
        """How an answer is produced: "generate" under the grammar, "rank" the row's `choices` by likelihood,
        or "embed" (the embedding head; grammar "embedding")."""
        return "embed" if self.grammar == "embedding" else "generate"

    def answer_length(self, row: Mapping[str, Any]) -> int | None:
        """Tokens in the answer: exact for the loc/time/val grammars (tasks using them override this), at most
        `MAX_INT_TOKENS` for "int", None (the caller's `max_new_tokens`) otherwise."""
        if self.grammar == "int":
            return MAX_INT_TOKENS
        if self.grammar in FIXED_LENGTH:
            raise NotImplementedError(f"{type(self).__name__}.answer_length (grammar {self.grammar!r})")
        return None

    def allowed_bins(self, row: Mapping[str, Any]) -> range | None:
        """For the loc/time/val grammars, the bins the answer may use (None: all of them)."""
        return None

    @property
    def reads_distribution(self) -> bool:
        """True when the answer is read from the probabilities over the grammar's bins (`parse_distribution`),
        not from the greedy tokens alone. Default: False."""
        return False

    def parse_distribution(self, text: str, probs: Any, row: Mapping[str, Any]) -> Any:
        """The answer from the greedy `text` and `probs`, (steps, bins) probabilities over the grammar's bins at
        each step (used when `reads_distribution`). Default: `parse(text, row)`."""
        return self.parse(text, row)

    def choices(self, row: Mapping[str, Any]) -> list[str] | None:
        """What an "options" task may answer for this row (and, in "rank" mode, the texts that are scored)."""
        return self.options(row, None)

    # ------------------------------------------------------------------ vocabulary
    def vocabulary(self, rows: Sequence[Mapping[str, Any]], rng: random.Random) -> list[str]:
        """The texts a vocabulary trained for this task must cover: for each row two sampled prompts, their targets
        and, for contrastive tasks, the pair's text; then every prompt template."""
        texts = []
        for row in rows:
            for _ in range(2):
                example = self.example(row, rng=rng)
                texts.append(example.text)
                if example.target:
                    texts.append(example.target)
            if self.contrastive:
                texts.append(self.pair_example(row).text)
        return [*texts, *self.prompts]

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], *, batch_size: int = 16,
                 max_new_tokens: int | None = None, progress: Any = None
                 ) -> tuple[dict[str, float], dict[str, Any]]:
        """(metrics, details) on `rows`: each row answered (`unified.task_zoo.decoding.predict`) and scored;
        an "embed" task ranks the split's pair texts for each row (`unified.task_zoo.decoding.pair_metrics`)."""
        if self.answer_mode == "embed":
            metrics = pair_metrics(self, model, processor, rows, batch_size)
            if progress is not None:
                progress.update(len(rows))
            return metrics, {}
        on_batch = progress.update if progress is not None else None
        predictions = predict(self, model, processor, rows, batch_size=batch_size, max_new_tokens=max_new_tokens,
                              on_batch=on_batch)
        truths = [self.truth(row) for row in rows]
        return self.score(predictions, truths), self.details(predictions, truths, rows)

    def score(self, predictions: list[Any], truths: list[Any]) -> dict[str, float]:
        """The task's metrics over parsed predictions and truths."""
        return {name: float(get_metric(name)(predictions, truths)) for name in self.metrics}

    def details(self, predictions: list[Any], truths: list[Any], rows: Sequence[Mapping[str, Any]]
                ) -> dict[str, Any]:
        """Extra tables an evaluation reports next to the metrics (multiple choice: labels picked vs right)."""
        return {}

    def normalised(self, metrics: Mapping[str, float], rows: list[Mapping[str, Any]]) -> float:
        """The main metric mapped to [0, 1], higher is better (what the integral score averages)."""
        return min(1.0, max(0.0, float(metrics[self.primary_metric])))

    @property
    def primary_metric(self) -> str:
        return self.main_metric or self.metrics[0]

    @property
    def sequence_fields(self) -> set[str]:
        """Fields whose value is itself a list (`list_fields` and the example row's lists): `Model.generate` takes a
        list of such lists as one per item."""
        return {*self.list_fields, *(k for k, v in self.example_row.items() if isinstance(v, (list, tuple)))}

    @property
    def input_fields(self) -> set[str]:
        """The fields `Model.generate` takes besides media: row, optional and derived fields minus the target
        fields (a contrastive task's pair side, retrieval's `text`, is answered alone, so it stays)."""
        fields = {*self.row_fields, *self.optional_fields, *self.derived_fields}
        return fields if self.contrastive else fields - set(self.target_fields)

    def inputs(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """What `Model.generate` is given for a data row: its media and fields minus the target side."""
        fields = {*MODALITIES, *self.row_fields, *self.optional_fields} - set(self.target_fields)
        return {k: v for k, v in row.items() if k in fields}

    def synthetic_rows(self, scene: Any) -> list[dict[str, Any]]:
        """Rows about one synthetic scene (`unified.data.scene.Scene`: its shapes, their motion, the beep), media
        given as the placeholders "{video}" (the clip, with its audio) and "{image}" (its grounding frame).
        The built-in tasks' rows come from `unified.data.synthetic.scene_rows`; default: none."""
        return []

    # ------------------------------------------------------------------ showing
    def show(self, answer: Any) -> str:
        """One answer (or truth) as the demo's table prints it."""
        return show_value(answer)

    def show_row(self, row: Mapping[str, Any]) -> tuple[str, str]:
        """(what was asked, the truth) as the demo's table prints them: the row's non-media input fields."""
        asked = [f"{row[f]}" for f in self.row_fields
                 if f not in self.target_fields and f not in self.derived_fields and f in row]
        return " ".join(asked) or "(the clip alone)", self.show(self.truth(row))

    @property
    def message_field(self) -> str | None:
        """The input field the text of a chat message fills (`unified.data.chat`): by default the one text field
        a user gives (a question, a phrase, a text); None when the task has none (a caption's prompt is fixed) or
        several (then each is named in the request)."""
        kinds = self.field_kinds
        text = sorted(f for f in self.input_fields - set(self.derived_fields) if kinds.get(f) == "text")
        return text[0] if len(text) == 1 else None

    def answer_json(self, answer: Any, row: Mapping[str, Any]) -> dict[str, Any]:
        """`answer` as JSON: {"type": ANSWER_TYPES[grammar], "value": ...} (a box as [x1, y1, x2, y2] pixels, a span
        as [start, end] seconds, numbers, text; None when the answer could not be parsed). An answer picked from
        one of the row's list fields (an option, a label) also gets its "index" there and that "field"."""
        out: dict[str, Any] = {"type": ANSWER_TYPES[self.grammar], "value": json_value(answer)}
        if isinstance(answer, str):
            for key in sorted(self.sequence_fields):
                values = row.get(key)
                if isinstance(values, (list, tuple)) and answer in [str(v) for v in values]:
                    out.update(index=[str(v) for v in values].index(answer), field=key)
                    break
        return out

    def describe(self) -> dict[str, Any]:
        """What `unified tasks` prints."""
        return {"name": self.name, "accepts": sorted(self.accepts), "requires": sorted(self.requires),
                "grammar": self.grammar, "answer": self.answer_mode, "contrastive": self.contrastive,
                "metrics": list(self.metrics), "fields": list(self.row_fields),
                "target_fields": list(self.target_fields), "optional_fields": list(self.optional_fields),
                "derived_fields": list(self.derived_fields),
                "prompts": list(self.prompts), "example_row": dict(self.example_row)}


def json_value(value: Any) -> Any:
    """A typed answer as plain JSON values: named tuples, tuples and arrays as lists, numbers as floats."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value
    if hasattr(value, "tolist"):  # a tensor or an array (an embedding)
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    try:  # other containers of numbers (a `Box` unpacks to x1, y1, x2, y2)
        return [json_value(v) for v in value]
    except TypeError:
        return str(value)


def show_value(value: Any) -> str:
    """A short printable form: boxes and spans to one decimal, embeddings by size, floats to two decimals."""
    if hasattr(value, "x1"):
        return "box (" + ", ".join(f"{v:.1f}" for v in value) + ")"
    if hasattr(value, "shape") and getattr(value, "ndim", 0) == 1:
        return f"embedding ({value.shape[0]} numbers)"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


# ---------------------------------------------------------------------------------------------- registration checks
class NthPrompt(random.Random):
    """An rng whose `choice` returns the i-th item: `task.prompt(row, media, NthPrompt(i))` uses template i."""

    def __init__(self, index: int):
        super().__init__(0)
        self.index = index

    def choice(self, seq):
        return seq[self.index % len(seq)]


def validate_task_class(cls: type[Task]) -> None:
    """Everything knowable about a task before it runs, checked once at registration; `ConfigError` naming it."""
    name = cls.name

    def fail(what: str, value: Any, reason: str) -> None:
        raise ConfigError(f"task {name!r} {what}", value, reason)

    if cls.grammar not in GRAMMARS:
        fail("grammar", cls.grammar, f"expected one of {GRAMMARS}")
    for attr in ("accepts", "requires"):
        unknown = sorted(set(getattr(cls, attr)) - set(MODALITIES))
        if unknown:
            fail(attr, unknown, f"unknown modalities; expected some of {MODALITIES}")
    if not cls.requires <= cls.accepts:
        fail("requires", sorted(cls.requires), f"not all in accepts {sorted(cls.accepts)}")
    if not cls.metrics:
        fail("metrics", cls.metrics, "declare at least one metric")
    unknown = [m for m in cls.metrics if m not in METRICS]
    if unknown:
        fail("metrics", unknown, f"not registered metrics; registered: {sorted(METRICS)}")
    if cls.main_metric and cls.main_metric not in cls.metrics:
        fail("main_metric", cls.main_metric, f"not one of its metrics {list(cls.metrics)}")
    if not set(cls.target_fields) <= {*cls.row_fields, *cls.optional_fields}:
        fail("target_fields", list(cls.target_fields), f"not all in row_fields {list(cls.row_fields)} or "
             f"optional_fields {list(cls.optional_fields)}")
    if not cls.prompts:
        fail("prompts", cls.prompts, "declare at least one prompt template")
    known = {*cls.row_fields, *cls.optional_fields, *cls.derived_fields}
    for template in cls.prompts:
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(template) if f}
        except ValueError as err:
            fail("prompts", template, f"not a format template ({err})")
        missing = sorted(used - known)
        if missing:
            fail("prompts", template, f"uses {missing}, which are not among its row, optional or derived fields "
                 f"{sorted(known)}")
    if cls.chat_turn is not None and cls.chat_turn not in CHAT_TURNS:
        fail("chat_turn", cls.chat_turn, f"expected None or one of {CHAT_TURNS}")
    if cls.contrastive != (cls.grammar == "embedding"):
        fail("contrastive", cls.contrastive, "contrastive tasks and only they use the 'embedding' grammar")
    if cls.contrastive and cls.pair_example is Task.pair_example:
        fail("pair_example", None, "a contrastive task must define pair_example(row)")
    for pair in cls.increasing:
        if cls.grammar not in FIXED_LENGTH or len(pair) != 2 or not 0 <= pair[1] < pair[0]:
            fail("increasing", cls.increasing, f"expected (later, earlier) token positions, later > earlier >= 0, "
                 f"for a grammar in {FIXED_LENGTH}")
    if cls.grammar in FIXED_LENGTH and cls.answer_length is Task.answer_length:
        fail("answer_length", None, f"grammar {cls.grammar!r} writes an exact number of tokens: define "
             "answer_length(row)")
    for hook in ("truth",) if cls.contrastive else ("target", "parse", "truth"):
        if getattr(cls, hook) is getattr(Task, hook):
            fail(hook, None, f"define {hook}(row) (see unified.task_zoo.base)")
    if not cls.example_row:
        fail("example_row", cls.example_row, "declare a complete training row (registration checks the task on it "
             "and `unified tasks` prints it)")
    try:
        task = cls()
    except Exception as err:  # noqa: BLE001  (any failure: a task must build with its default options)
        fail("options", None, f"cannot be built with its default options ({type(err).__name__}: {err})")
    row = dict(cls.example_row)
    try:
        for index in range(len(cls.prompts)):
            task.to_example(row, rng=NthPrompt(index))
        task.to_example(row, rng=None, with_target=False)
        task.truth(row)
        if cls.contrastive:
            task.pair_example(row)
    except Exception as err:  # noqa: BLE001  (whatever the task raises on its own example is reported)
        fail("example_row", row, f"the task fails on it: {type(err).__name__}: {err}")


KIND_CHECKS = {
    "text": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "list": lambda v: isinstance(v, (list, tuple)),
    "mapping": lambda v: isinstance(v, Mapping),
    "flag": lambda v: isinstance(v, bool),
}


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "flag"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "list"
    return "mapping" if isinstance(value, Mapping) else "text"


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]

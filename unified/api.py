"""`Model`: the front door. One object holding the network, its vocabulary and processor, answering any task.

    >>> from unified import Model
    >>> Model.generate(task="caption", video="clip.mp4")                 # the built-in default model
    'a red circle moves left while a blue square appears.'
    >>> model = Model.from_pretrained("runs/shapes/best")
    >>> model.generate(task="grounding", image="frame.png", phrase="red circle")
    Box(x1=12.1, y1=30.0, x2=27.9, y2=45.8)
    >>> model.generate(task="video_mcqa", video=["a.mp4", "b.mp4"], question="which shape appears first?",
    ...                options=["red circle", "blue square", "green triangle"])
    ['red circle', 'green triangle']

Media are paths, bytes, numpy arrays, torch tensors or PIL images. A list of media gives a list of answers (batched);
other keyword arguments are the task's row fields (`unified tasks` lists them: `question`, `phrase`, `options`...)
and are shared by every item unless given as a list of the same length (for a field whose value is itself a list,
such as `options`, a list of lists). Fields a task derives from its media (a frame size, a duration) are filled
by the task's `complete`.
What comes back depends on the task: str (caption, vqa, text2text, classify), the chosen option (multiple choice),
a `Box` (grounding), `(start, end)` seconds (temporal_grounding), floats (regress), a unit vector (retrieval).
With `return_score=True` each answer comes as `Scored(answer, score)`: the answer's mean token log-probability
under the model (the chosen option's length-normalised log-likelihood for ranked multiple choice; None for
embeddings), so a confident answer can be told from a guess:

    >>> Model.generate(task="grounding", image="street.jpg", phrase="red circle", return_score=True)
    Scored(answer=Box(x1=3.0, y1=40.2, x2=20.1, y2=61.0), score=-2.31)
"""

from __future__ import annotations

import difflib
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from unified.data import load_data_dir
from unified.data.files import SUFFIXES
from unified.data.shard_rows import is_shard_dir, load_shards
from unified.errors import InputError
from unified.local_dirs import check_saved_model, read_json
from unified.media.audio import Samples
from unified.media.video import Frames
from unified.model import UnifiedModel
from unified.model.adapters import load_saved_adapters
from unified.model.modeling import DEFAULT_MAX_NEW_TOKENS
from unified.model.quantization import load_quantized
from unified.processing import UnifiedProcessor
from unified.saving import read_task_options, read_task_sources, require_safetensors, write_servable
from unified.task_zoo import build_tasks, list_tasks
from unified.task_zoo.base import MODALITIES
from unified.task_zoo.decoding import answer_likelihoods, embed_rows, predict
from unified.task_zoo.evaluation import evaluate
from unified.task_zoo.registry import task_sources

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
EXPORT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_default: Model | None = None
_default_lock = threading.Lock()


class Scored(NamedTuple):
    """An answer with its score: the mean log-probability of its tokens (None for embeddings)."""

    answer: Any
    score: float | None


class Likelihood(NamedTuple):
    """One answer's likelihood (`Model.loglikelihood`): the sum of its tokens' log-probabilities, their count, and
    whether greedy decoding would write exactly it."""

    logprob: float
    tokens: int
    greedy: bool


class _ClassOrInstance:
    """A method that, called on the class, runs on the built-in default model (loaded once per process)."""

    def __init__(self, fn):
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, instance, owner):
        target = instance if instance is not None else owner.default()
        return self.fn.__get__(target, owner)


class Model:
    """A trained `UnifiedModel` with its processor (and tokenizer). See the module docstring."""

    def __init__(self, network: Any, processor: Any, task_options: Mapping[str, Mapping[str, Any]] | None = None,
                 task_sources: Mapping[str, Mapping[str, str]] | None = None):
        self.network, self.processor = network.eval(), processor
        # every task the model was trained on, with its options ({} when the model does not record them)
        self.task_options = {k: dict(v) for k, v in (task_options or {}).items()}
        # where each of them comes from (a plug-in's package), {} for models saved before it was recorded
        self.task_sources = {k: dict(v) for k, v in (task_sources or {}).items()}
        self._warned_untracked = False

    def check_trained(self, task: str, allow_untrained: bool = False) -> None:
        """Refuse a task this model was not trained on (`InputError` naming the tasks it was), unless
        `allow_untrained`; a model that does not record its tasks (saved before it did) warns once instead."""
        if not self.task_options:
            if not self._warned_untracked and not allow_untrained:
                self._warned_untracked = True
                warnings.warn("this model does not record which tasks it was trained on (no task_options.json): "
                              f"its answers to {task!r} may be untrained", stacklevel=3)
            return
        if task not in self.task_options and not allow_untrained:
            raise InputError("task", task, f"this model was not trained on it; it was trained on "
                             f"{sorted(self.task_options)} (pass allow_untrained=True, or --allow-untrained, to "
                             "ask it anyway)")
        source = self.task_sources.get(task)
        if source and task not in list_tasks():
            raise InputError("task", task, f"this model was trained on it, and its code comes from the package "
                             f"{source.get('package')!r} {source.get('version', '')} (module {source.get('module')}"
                             f"), which is not installed here: install it (pip install {source.get('package')})")

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None) -> Model:
        """A directory written by `save_pretrained` (or by training): config + safetensors + vocabulary + processor.
        Loaded in float32, unless `dtype` says otherwise or the directory is an export (`unified export`), which
        loads in the dtype it was exported in, its quantised layers as they were written."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise InputError("model", str(path), "not a saved model: no config.json there")
        require_safetensors(path, "model")
        config = read_json(path / "config.json", "model")  # a damaged one named, not a JSONDecodeError
        # an export (`unified export`) loads in the dtype it was written in; a trained model in float32
        dtype = dtype or EXPORT_DTYPES.get((config.get("export") or {}).get("dtype"), torch.float32)
        if config.get("quantization"):  # every file checked first: a damaged one is named, not handed to torchao
            check_saved_model(path, "model", model_type=UnifiedModel.config_class.model_type)
            network = load_quantized(path, dtype, UnifiedModel)
        else:  # UnifiedModel.from_pretrained checks every file itself
            network = UnifiedModel.from_pretrained(path, dtype=dtype, use_safetensors=True)
        load_saved_adapters(network, path)  # per-task LoRA adapters, chosen by task in generate/evaluate
        if network.generation_config.max_new_tokens is None:  # saved before the default existed
            network.generation_config.max_new_tokens = DEFAULT_MAX_NEW_TOKENS
        if device is not None:
            network.to(device)
        return cls(network, UnifiedProcessor.from_pretrained(path), read_task_options(path), read_task_sources(path))

    @classmethod
    def default(cls) -> Model:
        """The built-in default model, trained on the synthetic world (see `unified/default_model/README.md`)."""
        global _default
        with _default_lock:
            if _default is None:
                if not (DEFAULT_MODEL_DIR / "config.json").is_file():
                    raise InputError("default model", str(DEFAULT_MODEL_DIR),
                                     "is not in this installation; pass a trained model to Model.from_pretrained")
                _default = cls.from_pretrained(DEFAULT_MODEL_DIR)
            return _default

    def save_pretrained(self, path: str | Path, **kwargs: Any) -> None:
        sources = {**self.task_sources, **task_sources(self.task_options)}
        write_servable(path, self.network, self.processor, self.task_options, sources, **kwargs)

    # ------------------------------------------------------------------ inference
    def _rows(self, task: Any, fields: dict[str, Any], source_fps: float | None = None,
              source_rate: int | None = None) -> tuple[list[dict[str, Any]], bool]:
        """Keyword arguments -> rows (one per item of the batched arguments) and whether the input was a batch."""
        given = {k: v for k, v in fields.items() if v is not None}
        check_fields(task, given)
        media = [m for m in MODALITIES if m in given]
        if "video" in given or source_fps is not None:
            given["video"] = with_rate(given.get("video"), source_fps)
        if "audio" in given or source_rate is not None:
            given["audio"] = with_audio_rate(given.get("audio"), source_rate, self.processor.config.sampling_rate)
        task.media_of({m: given[m] for m in media})  # raises InputError listing what the task accepts / requires
        sizes = {k: len(v) for k, v in given.items() if k in media and isinstance(v, (list, tuple))}
        if len(set(sizes.values())) > 1:
            raise InputError("media", sizes, "batched media must all have the same length")
        batched = bool(sizes)
        n = next(iter(sizes.values())) if sizes else 1
        rows = [{} for _ in range(n)]
        for key, value in given.items():
            values = [value[i] for i in range(n)] if key in media and batched else per_item(task, key, value, n,
                                                                                             batched)
            for row, item in zip(rows, values):
                row[key] = item
        return [task.complete(row, self.processor) for row in rows], batched  # sizes, durations: derived

    def generate(self, task: str, *, image: Any = None, video: Any = None, audio: Any = None,
                 question: str | None = None, text: str | None = None, source_fps: float | None = None,
                 source_rate: int | None = None, batch_size: int = 16, max_new_tokens: int | None = None,
                 return_score: bool = False, allow_untrained: bool = False, **fields: Any) -> Any:
        """Answer `task` for the given inputs; see the module docstring for inputs and return types.

        `source_fps` is the frame rate of a video given as frames in memory (a [T, H, W, 3] uint8 array or
        tensor; a list of videos is a batch): required for those, refused for files. `source_rate` is the same for
        audio given as samples in memory (a 1-D float array or tensor); without it they are taken to be at the
        processor's rate (16 kHz), with a warning. Keyword arguments the task does not take (a typo, a target
        field) raise `InputError` naming them. `max_new_tokens` caps a free-text answer; None takes the task's
        (`task_options: {task: {max_new_tokens: n}}` in training, saved with the model; 32 if unset).
        `return_score=True` returns `Scored(answer, score)` for each answer (see the module docstring). A task the
        model was not trained on is refused unless `allow_untrained=True`."""
        check_arguments(batch_size=batch_size, max_new_tokens=max_new_tokens, return_score=return_score,
                        allow_untrained=allow_untrained)
        self.check_trained(task, allow_untrained)
        task_obj = build_tasks([task], {task: self.task_options.get(task, {})}, self.processor.tokenizer.layout)[task]
        rows, batched = self._rows(task_obj, {"image": image, "video": video, "audio": audio, "question": question,
                                              "text": text, **fields}, source_fps, source_rate)
        for row in rows:
            task_obj.check_row(row, with_target=False)
        if task_obj.answer_mode == "embed" and not any(m in rows[0] for m in MODALITIES):  # the pair side alone

            answers = list(embed_rows(task_obj, self.network, self.processor, rows, batch_size=batch_size,
                                      text_side=True))
            details = [{"score": None}] * len(answers)
        else:
            details = []
            answers = predict(task_obj, self.network, self.processor, rows, batch_size=batch_size,
                              max_new_tokens=max_new_tokens, details=details if return_score else None)
        if return_score:
            answers = [Scored(answer, d["score"]) for answer, d in zip(answers, details)]
        return answers if batched else answers[0]

    generate = _ClassOrInstance(generate)

    def loglikelihood(self, task: str, answers: Sequence[str], *, image: Any = None, video: Any = None,
                      audio: Any = None, question: str | None = None, text: str | None = None,
                      source_fps: float | None = None, source_rate: int | None = None,
                      allow_untrained: bool = False, **fields: Any) -> list[Likelihood]:
        """How likely each of `answers` is as `task`'s answer to one input (media and fields as `generate` takes
        them, one item, not a batch): `Likelihood(logprob, tokens, greedy)` per answer, the sum of the log-
        probabilities of its tokens as the decoder writes it (eos included: the answer ends there), their count,
        and whether greedy decoding would write exactly it. `logprob / tokens` is the score ranked multiple
        choice compares (`generate(..., return_score=True)`). An "embed" task has no written answer: InputError.

            >>> model.loglikelihood("vqa", ["a red circle", "a blue square"], video="clip.mp4",
            ...                     question="what moves?")
            [Likelihood(logprob=-3.1, tokens=4, greedy=True), Likelihood(logprob=-9.8, tokens=4, greedy=False)]
        """
        check_arguments(allow_untrained=allow_untrained)
        if isinstance(answers, str) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
            raise InputError("answers", answers, "expected a non-empty list of non-empty strings")
        self.check_trained(task, allow_untrained)
        task_obj = build_tasks([task], {task: self.task_options.get(task, {})}, self.processor.tokenizer.layout)[task]
        if task_obj.answer_mode == "embed":
            raise InputError("task", task, "answers with an embedding, not with written text: nothing to score")
        rows, batched = self._rows(task_obj, {"image": image, "video": video, "audio": audio, "question": question,
                                              "text": text, **fields}, source_fps, source_rate)
        if batched:
            raise InputError("media", f"a list of {len(rows)}", "loglikelihood scores answers to one input; "
                             "call it once per input")
        task_obj.check_row(rows[0], with_target=False)
        scored = answer_likelihoods(task_obj, self.network, self.processor, rows[0], list(answers))
        return [Likelihood(*s) for s in scored]

    loglikelihood = _ClassOrInstance(loglikelihood)

    def evaluate(self, data: Mapping[str, Sequence[Mapping[str, Any]]] | str | Path, *,
                 allow_untrained: bool = False, **kwargs: Any):
        """`unified.task_zoo.evaluation.evaluate` on this model; `data` is {task: rows} or a data directory
        (read by `evaluation_data`, which takes `tasks`, `skip_bad_rows` and `allow_outside_paths`). A task the
        model was not trained on is refused unless `allow_untrained=True`."""
        if isinstance(data, (str, Path)):
            data, _ = self.evaluation_data(data, kwargs.pop("tasks", None), kwargs.pop("skip_bad_rows", False),
                                           allow_outside_paths=kwargs.pop("allow_outside_paths", False))
        for name in data:
            self.check_trained(name, allow_untrained)
        check_arguments(**{k: kwargs[k] for k in ("batch_size", "max_rows") if k in kwargs})
        kwargs.setdefault("task_options", self.task_options)
        return evaluate(self.network, self.processor, data, **kwargs)

    evaluate = _ClassOrInstance(evaluate)

    def evaluation_data(self, directory: str | Path, tasks: Sequence[str] | None = None,
                        skip_bad_rows: bool = False, *, allow_outside_paths: bool = False
                        ) -> tuple[dict[str, list], list]:
        """({task: rows}, reports) of a data directory or of tar shards (`unified data shard`), rows checked by the
        tasks as this model was trained. Without `tasks`, the tasks the model was trained on (its
        `task_options.json` lists them); files of other tasks are left out with a warning naming them.
        `allow_outside_paths`: relative media paths may leave the directory (held-out rows sharing the training
        directory's clips)."""
        folder = Path(directory)
        if tasks is None and self.task_options and folder.is_dir():
            # the tasks the directory holds: files named after a registered task, or a shard index's tasks
            held = set(load_shards(folder)) if is_shard_dir(folder) else {p.stem for p in folder.iterdir()
                                                                          if p.suffix in SUFFIXES}
            files = held & set(list_tasks())
            tasks = [t for t in self.task_options if t in files]
            others = sorted(files - set(self.task_options))
            if others:
                warnings.warn(f"not evaluated: {others} in {directory}; this model was trained on "
                              f"{sorted(self.task_options)} (pass tasks=[...] to evaluate others)", stacklevel=2)
            if not tasks:
                raise InputError("data directory", str(directory), f"holds no file of the tasks this model "
                                 f"was trained on {sorted(self.task_options)}")
        return load_data_dir(directory, tasks, skip_bad_rows=skip_bad_rows, task_options=self.task_options,
                             allow_outside_paths=allow_outside_paths)


# ---------------------------------------------------------------------------------------------- keyword arguments
def check_fields(task: Any, given: Mapping[str, Any]) -> None:
    """Raise `InputError` for a keyword argument `task` would not use: a typo, a field of another task, or one of
    its target fields (what it answers). A contrastive task's pair side (retrieval's `text`) is an input."""
    inputs = task.input_fields
    for key in given:
        if key in inputs or key in MODALITIES:
            continue
        if key in task.target_fields:
            raise InputError(f"{task.name} {key}", given[key], "is what this task answers (a target field), not an "
                             f"input; its inputs are {sorted(inputs)} and media {sorted(task.accepts)}")
        close = difflib.get_close_matches(key, [*inputs, *MODALITIES, "source_fps"], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        raise InputError(f"{task.name} keyword", key, f"not an input of this task{hint} It takes media "
                         f"{sorted(task.accepts)} and fields {sorted(inputs)}")


def per_item(task: Any, key: str, value: Any, n: int, batched: bool) -> list[Any]:
    """One keyword argument's value for each of `n` items: a list of n values (a list of n lists for list-valued
    fields such as `options`) is one per item; anything else is shared. A list of another length raises."""
    listy = key in task.sequence_fields  # options, labels, inputs: the value itself is a list
    if not isinstance(value, (list, tuple)) or (listy and not all(isinstance(v, (list, tuple)) for v in value)):
        return [value] * n
    if not batched:
        what = f"a list of {len(value)} lists" if listy else f"a list of {len(value)}"
        raise InputError(key, value, f"{what} for one input; give the media as a list of {len(value)} to batch")
    if len(value) != n:
        raise InputError(key, f"{len(value)} item(s)", f"the batch has {n} media item(s); give one {key} per item "
                         "or a single value shared by all")
    return list(value)


def check_arguments(**given: Any) -> None:
    """Model.generate / evaluate's own arguments, checked before any work: `InputError` naming the bad one."""
    for name, value in given.items():
        rule = ARGUMENT_RULES[name]
        if not rule[0](value):
            raise InputError(name, value, rule[1])


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


ARGUMENT_RULES = {  # name -> (test, what is expected)
    "batch_size": (_count, "expected an int >= 1"),
    "max_new_tokens": (lambda v: v is None or _count(v), "expected an int >= 1, or None (the task's)"),
    "max_rows": (lambda v: v is None or _count(v), "expected an int >= 1, or None (every row)"),
    "return_score": (lambda v: isinstance(v, bool), "expected True or False"),
    "allow_untrained": (lambda v: isinstance(v, bool), "expected True or False"),
}


def with_audio_rate(audio: Any, source_rate: int | None, default_rate: int) -> Any:
    """Audio given as samples in memory (1-D float arrays or tensors) wrapped with their rate
    (`unified.media.audio.Samples`); files and bytes as given. Samples without a rate are taken to be at
    `default_rate` (the processor's), with a warning naming the assumption."""
    def missing():
        warnings.warn(f"audio samples given without source_rate= are taken to be at {default_rate} Hz (the "
                      "processor's rate); give their rate to be sure", stacklevel=5)
        return default_rate

    return _with_rate(audio, source_rate, "source_rate", "audio given as samples in memory", Samples, missing)


def with_rate(video: Any, source_fps: float | None) -> Any:
    """Videos given as frames in memory ([T, H, W, 3] uint8 arrays or tensors) wrapped with their rate
    (`unified.media.video.Frames`); files and bytes as given. Frames without a rate raise: taking them as 1 fps
    would misplace every moment in time."""
    def missing():
        raise InputError("video", "frames in memory", "give source_fps= (their frame rate); a file's rate is read "
                         "from the file")

    return _with_rate(video, source_fps, "source_fps", "a video given as frames in memory", Frames, missing)


def _with_rate(media: Any, rate: Any, name: str, what: str, wrap: Any, missing: Any) -> Any:
    # arrays (one, or a list: a batch) wrapped with their rate; a rate for files only is refused, since a file
    # states its own; arrays without one get what `missing` says (a default, or an error)
    items = list(media) if isinstance(media, (list, tuple)) else [media]
    arrays = [isinstance(m, (np.ndarray, torch.Tensor)) for m in items]
    if rate is not None and not any(arrays):
        raise InputError(name, rate, f"only for {what}; a file or bytes carry their own rate")
    if any(arrays) and rate is None:
        rate = missing()
    out = [wrap(m, rate) if is_array else m for m, is_array in zip(items, arrays)]
    return out if isinstance(media, (list, tuple)) else out[0]

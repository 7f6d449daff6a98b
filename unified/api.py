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
other keyword arguments are the task's row fields (`question`, `text`, `phrase`, `options`, `labels`, `inputs`,
`num_values`...) and are shared by every item unless given as a list of the same length.
What comes back depends on the task: str (caption, vqa, text2text, classify), the chosen option (multiple choice),
a `Box` (grounding), `(start, end)` seconds (temporal_grounding), floats (regress), a unit vector (retrieval).
"""

from __future__ import annotations

import json

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from unified.errors import InputError
from unified.task_zoo.base import MODALITIES

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
TASK_OPTIONS = "task_options.json"  # per-task settings saved with a model, e.g. {"video_mcqa": {"mode": "rank"}}
_default: Model | None = None
_default_lock = threading.Lock()



def write_task_options(directory: str | Path, task_options: Mapping[str, Any] | None) -> None:
    """The per-task settings a model answers with (e.g. multiple choice by ranking), next to its weights."""
    if task_options:
        (Path(directory) / TASK_OPTIONS).write_text(json.dumps(dict(task_options), indent=2))

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

    def __init__(self, network: Any, processor: Any, task_options: Mapping[str, Mapping[str, Any]] | None = None):
        self.network, self.processor = network.eval(), processor
        self.task_options = {k: dict(v) for k, v in (task_options or {}).items()}

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None) -> Model:
        """A directory written by `save_pretrained` (or by training): config + safetensors + vocabulary + processor."""
        from unified.model import UnifiedModel
        from unified.model.adapters import load_saved_adapters
        from unified.processing import UnifiedProcessor

        path = Path(path)
        if not (path / "config.json").is_file():
            raise InputError("model", str(path), "not a saved model: no config.json there")
        network = UnifiedModel.from_pretrained(path, dtype=dtype or torch.float32)
        load_saved_adapters(network, path)  # per-task LoRA adapters, chosen by task in generate/evaluate
        if device is not None:
            network.to(device)
        options = path / TASK_OPTIONS
        task_options = json.loads(options.read_text()) if options.is_file() else None
        return cls(network, UnifiedProcessor.from_pretrained(path), task_options)

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
        from unified.model.adapters import save_model

        save_model(self.network, path, **kwargs)
        write_task_options(path, self.task_options)
        self.processor.save_pretrained(path)

    # ------------------------------------------------------------------ inference
    def _rows(self, task: Any, fields: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        """Keyword arguments -> rows (one per item of the batched arguments) and whether the input was a batch."""
        given = {k: v for k, v in fields.items() if v is not None}
        media = [m for m in MODALITIES if m in given]
        task.media_of({m: given[m] for m in media})  # raises InputError listing what the task accepts / requires
        sizes = {len(v) for k, v in given.items() if k in media and isinstance(v, (list, tuple))}
        if len(sizes) > 1:
            raise InputError("media", sorted(sizes), "batched media must all have the same length")
        batched = bool(sizes)
        n = sizes.pop() if sizes else 1
        rows = []
        for i in range(n):
            row = {}
            for key, value in given.items():
                listy = key in ("options", "labels", "inputs")  # list-valued fields: a list of lists is per item
                per_item = key in media or (isinstance(value, list) and len(value) == n and (
                    not listy or all(isinstance(v, (list, tuple)) for v in value)))
                row[key] = value[i] if batched and per_item else value
            rows.append(self._complete(task, row))
        return rows, batched

    def _complete(self, task: Any, row: dict[str, Any]) -> dict[str, Any]:
        """Fill the fields a task's parser needs that the user should not have to give (sizes, durations)."""
        from unified.media import load_image

        if task.name == "grounding" and "image_size" not in row:
            source = row.get("image")
            if source is None:
                video = self.processor._video(row["video"])
                h, w = video.frames.shape[1:3]
            else:
                h, w = load_image(source).shape[:2]
            row["image_size"] = [w, h]
        if task.name == "temporal_grounding" and "duration" not in row:
            row["duration"] = float(self.processor._video(row["video"]).duration)
        return row

    def generate(self, task: str, *, image: Any = None, video: Any = None, audio: Any = None, question: str | None = None,
                 text: str | None = None, batch_size: int = 16, max_new_tokens: int = 32, **fields: Any) -> Any:
        """Answer `task` for the given inputs; see the module docstring for inputs and return types."""
        from unified.task_zoo import get_task
        from unified.task_zoo.decoding import predict

        task_obj = get_task(task, **self.task_options.get(task, {}))
        rows, batched = self._rows(task_obj, {"image": image, "video": video, "audio": audio, "question": question,
                                              "text": text, **fields})
        for row in rows:
            task_obj.check_row(row, with_target=False)
        if task_obj.grammar == "embedding" and not any(m in rows[0] for m in MODALITIES):
            from unified.task_zoo.decoding import embed_rows

            answers = list(embed_rows(task_obj, self.network, self.processor, rows, batch_size=batch_size,
                                      text_side=True))
        else:
            answers = predict(task_obj, self.network, self.processor, rows, batch_size=batch_size,
                              max_new_tokens=max_new_tokens)
        return answers if batched else answers[0]

    generate = _ClassOrInstance(generate)

    def evaluate(self, data: Mapping[str, Sequence[Mapping[str, Any]]] | str | Path, **kwargs: Any):
        """`unified.task_zoo.evaluation.evaluate` on this model; `data` is {task: rows} or a data directory."""
        from unified.task_zoo.evaluation import evaluate

        if isinstance(data, (str, Path)):
            from unified.data import load_data_dir

            data, reports = load_data_dir(data, kwargs.pop("tasks", None),
                                          skip_bad_rows=kwargs.pop("skip_bad_rows", False))
        kwargs.setdefault("task_options", self.task_options)
        return evaluate(self.network, self.processor, data, **kwargs)

    evaluate = _ClassOrInstance(evaluate)

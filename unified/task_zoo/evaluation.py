"""`evaluate(model, processor, data)`: per-task metrics, one integral score, and the modality ablation.

    >>> result = evaluate(model, processor, {"vqa": rows, "grounding": rows2}, ablate=True)
    >>> result.metrics["grounding"]["accuracy_at_iou"], result.integral
    (0.84, 0.71)
    >>> print(result.table())

The integral score is the weighted mean over tasks of each task's main metric normalised to [0, 1]
(`Task.normalised`: accuracies and METEOR as they are, MAE as 1 - MAE / value range), the way a benchmark that mixes
QA accuracy and caption METEOR is aggregated.

The ablation (Apollo's test of what a task really uses) evaluates the same rows four ways:
    full        the inputs as given
    one_frame   each video cut to its middle frame (the audio kept)
    no_audio    audio replaced by silence of the same length
    no_media    one black frame for each video and image, silence for audio
A temporal question should fall towards chance with one frame; an audio question without audio.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from unified.errors import InputError
from unified.media import Video, load_audio, load_image
from unified.task_zoo.registry import build_tasks

ABLATIONS = ("full", "one_frame", "no_audio", "no_media")


@dataclass
class EvalResult:
    metrics: dict[str, dict[str, float]]  # task -> metric -> value
    scores: dict[str, float]  # task -> main metric normalised to [0, 1]
    integral: float
    weights: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)  # e.g. label_distribution for multiple choice
    ablation: dict[str, dict[str, float]] | None = None  # mode -> task -> normalised score (and "integral")
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """A plain-text table: task, rows, each metric, normalised score (and the ablation columns)."""
        lines = []
        modes = [m for m in ABLATIONS if self.ablation and m in self.ablation]
        head = f"{'task':<20} {'rows':>5}  {'score':>6}" + "".join(f" {m:>10}" for m in modes) + "  metrics"
        lines.append(head)
        for task, values in self.metrics.items():
            metrics = ", ".join(f"{k} {v:.3f}" for k, v in values.items())
            ablated = "".join(f" {self.ablation[m][task]:>10.3f}" for m in modes)
            lines.append(f"{task:<20} {self.counts.get(task, 0):>5}  {self.scores[task]:>6.3f}{ablated}  {metrics}")
        ablated = "".join(f" {self.ablation[m]['integral']:>10.3f}" for m in modes)
        lines.append(f"{'integral':<20} {sum(self.counts.values()):>5}  {self.integral:>6.3f}{ablated}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- ablation
def _silence(source: Any, sampling_rate: int) -> torch.Tensor:
    return torch.zeros_like(load_audio(source, sampling_rate=sampling_rate))


def ablate_row(row: Mapping[str, Any], mode: str, processor: Any, task: str | None = None) -> dict[str, Any]:
    """The row with its media reduced as `mode` says (see the module docstring); videos are sampled under `task`'s
    media budget, so "one frame" is the middle of the frames the task sees."""
    if mode not in ABLATIONS:
        raise InputError("ablation", mode, f"expected one of {ABLATIONS}")
    row = dict(row)
    if mode == "full":
        return row

    def each(value: Any, fn) -> Any:
        return [fn(v) for v in value] if isinstance(value, list) else fn(value)

    if row.get("video") is not None and mode in ("one_frame", "no_media"):
        def cut(source: Any) -> Video:
            video = processor.video(source, task)
            mid = video.num_frames // 2
            frames = video.frames[mid:mid + 1]
            if mode == "no_media":
                frames = torch.zeros_like(frames)
            return Video(frames, video.timestamps[mid:mid + 1], video.duration, video.source_fps,
                         video.coded_size)

        row["video"] = each(row["video"], cut)
    if row.get("image") is not None and mode == "no_media":
        row["image"] = each(row["image"], lambda s: torch.zeros_like(load_image(s)).numpy())
    if row.get("audio") is not None and mode in ("no_audio", "no_media"):
        rate = processor.config.sampling_rate
        row["audio"] = each(row["audio"], lambda s: _silence(s, rate).numpy())
    return row


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate_task(task: Any, model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], *,
                  batch_size: int = 16, max_new_tokens: int | None = None, progress: Any = None
                  ) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, details) of one task on its rows (`Task.evaluate`)."""
    return task.evaluate(model, processor, rows, batch_size=batch_size, max_new_tokens=max_new_tokens,
                         progress=progress)


def evaluate(model: Any, processor: Any, data: Mapping[str, Sequence[Mapping[str, Any]]], *,
             tasks: Sequence[str] | None = None, weights: Mapping[str, float] | None = None,
             task_options: Mapping[str, Mapping[str, Any]] | None = None, batch_size: int = 16,
             max_new_tokens: int | None = None, max_rows: int | None = None, ablate: bool = False, seed: int = 0,
             progress: bool = True) -> EvalResult:
    """Evaluate `model` on `data` ({task name: rows}); see the module docstring.

    `tasks` picks a subset (default: every task in `data`); `weights` weighs tasks in the integral score
    (default 1 each); `max_rows` evaluates a fixed random sample of each task's rows (seeded).
    """
    names = list(tasks) if tasks is not None else list(data)
    missing = [n for n in names if n not in data]
    if missing:
        raise InputError("tasks", missing, f"no rows for them; data has {sorted(data)}")
    weights = {n: float((weights or {}).get(n, 1.0)) for n in names}
    chosen = {}
    for name in names:
        rows = list(data[name])
        if not rows:
            raise InputError(f"{name} rows", [], "expected at least one row to evaluate")
        if max_rows is not None and len(rows) > max_rows:
            rows = random.Random(seed).sample(rows, max_rows)
        chosen[name] = rows
    was_training = model.training
    model.eval()
    modes = ABLATIONS if ablate else ("full",)
    total = sum(len(r) for r in chosen.values()) * len(modes)
    bar = tqdm(total=total, desc="evaluate", unit="row", disable=not progress)
    per_mode: dict[str, tuple] = {}
    layout = getattr(processor.tokenizer, "layout", None)
    options = {n: o for n, o in (task_options or {}).items() if n in chosen}  # a model's options cover all it knows
    tasks = build_tasks(chosen, options, layout)
    try:
        for mode in modes:
            metrics, details, scores = {}, {}, {}
            for name, rows in chosen.items():
                task = tasks[name]
                rows = rows if mode == "full" else [ablate_row(r, mode, processor, name) for r in rows]
                bar.set_postfix_str(f"{mode}: {name}")
                metrics[name], extra = evaluate_task(task, model, processor, rows, batch_size=batch_size,
                                                     max_new_tokens=max_new_tokens, progress=bar)
                if extra:
                    details[name] = extra
                scores[name] = task.normalised(metrics[name], rows)
            per_mode[mode] = (metrics, details, scores)
    finally:
        bar.close()
        model.train(was_training)

    def integral(scores: Mapping[str, float]) -> float:
        return sum(weights[n] * scores[n] for n in names) / max(sum(weights.values()), 1e-12)

    metrics, details, scores = per_mode["full"]
    ablation = None
    if ablate:
        ablation = {mode: {**s, "integral": integral(s)} for mode, (_, _, s) in per_mode.items()}
    return EvalResult(metrics=metrics, scores=scores, integral=integral(scores), weights=weights, details=details,
                      ablation=ablation, counts={n: len(r) for n, r in chosen.items()})

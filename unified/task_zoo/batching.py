"""Rows of one task -> a model batch: the one place training and evaluation turn rows into tensors (the losses
built on it are in `unified.training.loss`).

    >>> batch = task_batch(get_task("vqa"), rows, processor, rng=random.Random(0))

A media file that cannot be decoded raises `MediaDecodeError` naming the row it came from (`row["_source"]`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from unified.errors import InputError, MediaDecodeError


def process_row(processor: Any, task: Any, example: Any, row: Mapping[str, Any]) -> dict[str, Any]:
    """One task's `Example` through the processor, under the task's media budget; a decode error names the row."""
    try:
        return processor.process({**example.as_processor_input(), "task": task.name})
    except MediaDecodeError as exc:
        source = row.get("_source")
        if source is None:
            raise
        raise MediaDecodeError(f"{source} {exc.what}", exc.value, exc.reason) from exc


def task_batch(task: Any, rows: Sequence[Mapping[str, Any]], processor: Any, *, rng: random.Random | None = None,
               with_target: bool = True) -> dict[str, torch.Tensor]:
    """Rows -> processor batch (prompts sampled with `rng`; `rng=None` is evaluation: first prompt, no shuffling)."""
    if not rows:
        raise InputError(f"{task.name} rows", [], "expected at least one row")
    items = []
    for row in rows:
        example = task.example(row, rng=rng, with_target=with_target)
        items.append(process_row(processor, task, example, row))
    return processor.collate(items)


def text_batch(task: Any, rows: Sequence[Mapping[str, Any]], processor: Any) -> dict[str, torch.Tensor]:
    """The pair side of a contrastive task's rows (`Task.pair_example`)."""
    return processor.collate([process_row(processor, task, task.pair_example(row), row) for row in rows])


def contrastive_batch(task: Any, rows: Sequence[Mapping[str, Any]], processor: Any,
                      rng: random.Random | None = None) -> dict[str, torch.Tensor]:
    """A contrastive task's rows and their pairs in one batch (one forward, as DDP wants): rows 0..N-1 the
    examples, N..2N-1 their pairs (`Task.pair_example`)."""
    items = [process_row(processor, task, task.example(row, rng=rng), row) for row in rows]
    items += [process_row(processor, task, task.pair_example(row), row) for row in rows]
    return processor.collate(items)


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

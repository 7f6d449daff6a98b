"""Rows of one task -> a model batch -> a loss. The one place training and evaluation turn rows into tensors.

    >>> batch = task_batch(get_task("vqa"), rows, processor, rng=random.Random(0))
    >>> loss = task_loss(get_task("vqa"), model, processor, rows, rng=random.Random(0))

Every task trains through the LM head on its target text, except contrastive tasks (`Task.contrastive`), which
pull each row's embedding towards its pair's (`Task.pair_example`) and away from the other pairs in the batch
(InfoNCE).
A media file that cannot be decoded raises `MediaDecodeError` naming the row it came from (`row["_source"]`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from unified.errors import InputError, MediaDecodeError
from unified.heads.embedding import info_nce
from unified.model.adapters import select_adapter


def _process(processor: Any, example: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return processor.process(example)
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
        example = task.to_example(row, rng=rng, with_target=with_target)
        items.append(_process(processor, example.as_processor_input(), row))
    return processor.collate(items)


def text_batch(task: Any, rows: Sequence[Mapping[str, Any]], processor: Any) -> dict[str, torch.Tensor]:
    """The pair side of a contrastive task's rows (`Task.pair_example`)."""
    return processor.collate([processor.process(task.pair_example(row).as_processor_input()) for row in rows])


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def task_loss(task: Any, model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], *,
              rng: random.Random | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """The task's training loss on `rows` (a scalar)."""
    device = device if device is not None else next(model.parameters()).device
    select_adapter(model, task.name)  # per-task LoRA adapters, when the model has them
    if task.contrastive:
        # Both sides in one batch (one forward, as DDP wants): rows 0..N-1 the examples, N..2N-1 their pairs.
        items = [_process(processor, task.to_example(row, rng=rng).as_processor_input(), row) for row in rows]
        items += [processor.process(task.pair_example(row).as_processor_input()) for row in rows]
        embeddings = model(**to_device(processor.collate(items), device), return_embeddings=True)  # (2N, E)
        core = getattr(model, "module", model)  # DDP/accelerate wrap the model; the temperature lives on it
        return info_nce(embeddings[: len(rows)], embeddings[len(rows):], core.embed_head.temperature)
    batch = to_device(task_batch(task, rows, processor, rng=rng), device)
    return model(**batch).loss


def mixed_loss(tasks: Mapping[str, Any], named_rows: Sequence[tuple[str, Mapping[str, Any]]], model: Any,
               processor: Any, *, rng: random.Random | None = None, device: torch.device | str | None = None,
               loss_weights: Mapping[str, float] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """One batch holding rows of several tasks -> (loss, {task: its own loss}).

    Generative rows go through ONE forward pass: each target token's cross-entropy is weighted by its task's loss
    weight and the sum is divided by the number of target tokens (the same token mean as a one-task batch).
    Contrastive rows take their own InfoNCE pass per task; the parts are combined by row count.
    """
    import torch.nn.functional as F

    device = device if device is not None else next(model.parameters()).device
    weights = {name: float((loss_weights or {}).get(name, 1.0)) for name, _ in named_rows}
    generative = [(n, r) for n, r in named_rows if not tasks[n].contrastive]
    parts: dict[str, float] = {}
    total, rows_done = None, 0
    if generative:
        items = [_process(processor, tasks[n].to_example(r, rng=rng).as_processor_input(), r) for n, r in generative]
        batch = to_device(processor.collate(items), device)
        labels = batch["labels"]  # (B, Lt), -100 on padding
        logits = model(**batch).logits  # (B, Lt, V)
        token_loss = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
        real = labels != -100
        row_weight = torch.tensor([weights[n] for n, _ in generative], device=token_loss.device)
        total = (token_loss * row_weight[:, None]).sum() / real.sum().clamp_min(1)
        for name in dict.fromkeys(n for n, _ in generative):
            mine = torch.tensor([n == name for n, _ in generative], device=real.device)[:, None] & real
            parts[name] = float(token_loss[mine].mean().detach())
        total, rows_done = total * len(generative), len(generative)
    for name in dict.fromkeys(n for n, _ in named_rows if tasks[n].contrastive):
        rows = [r for n, r in named_rows if n == name]
        loss = task_loss(tasks[name], model, processor, rows, rng=rng, device=device)
        parts[name] = float(loss.detach())
        weighted = loss * weights[name] * len(rows)
        total = weighted if total is None else total + weighted
        rows_done += len(rows)
    return total / rows_done, parts

"""The training losses, in one place.

    loss = task_loss(task, model, processor, rows, rng=random.Random(0))          # one task's batch
    loss, parts = mixed_loss(tasks, [(name, row), ...], model, processor)          # rows of several tasks
    loss, parts = batch_loss(cfg, tasks, sampler, stream, model, processor, ...)   # what the loop calls per batch

Every task trains through the LM head on its target text (token-mean cross-entropy), except contrastive tasks
(`Task.contrastive`), which pull each row's embedding towards its pair's (`Task.pair_example`) and away from the
other pairs in the batch (symmetric InfoNCE, `unified.heads.info_nce`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from unified.heads.embedding import info_nce
from unified.model.adapters import select_adapter
from unified.model.ordinal import token_cross_entropy
from unified.task_zoo.batching import process_row, task_batch, to_device

if TYPE_CHECKING:
    from unified.training.config import TrainConfig


def task_loss(task: Any, model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], *,
              rng: random.Random | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """The task's training loss on `rows` (a scalar)."""
    device = device if device is not None else next(model.parameters()).device
    select_adapter(model, task.name)  # per-task LoRA adapters, when the model has them
    if task.contrastive:
        # Both sides in one batch (one forward, as DDP wants): rows 0..N-1 the examples, N..2N-1 their pairs.
        items = [process_row(processor, task, task.to_example(row, rng=rng), row) for row in rows]
        items += [process_row(processor, task, task.pair_example(row), row) for row in rows]
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
    device = device if device is not None else next(model.parameters()).device
    weights = {name: float((loss_weights or {}).get(name, 1.0)) for name, _ in named_rows}
    generative = [(n, r) for n, r in named_rows if not tasks[n].contrastive]
    parts: dict[str, float] = {}
    total, rows_done = None, 0
    if generative:
        items = [process_row(processor, tasks[n], tasks[n].to_example(r, rng=rng), r) for n, r in generative]
        batch = to_device(processor.collate(items), device)
        labels = batch["labels"]  # (B, Lt), -100 on padding
        logits = model(**batch).logits  # (B, Lt, V)
        text = getattr(model, "module", model).config.text  # the model's own loss: HL-Gauss when configured
        token_loss = token_cross_entropy(logits, labels, text.ordinal_ranges, text.ordinal_loss_sigma,
                                         reduction="none")  # (B, Lt)
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


def batch_loss(cfg: TrainConfig, tasks, sampler, stream, model, processor, step: int, rng: random.Random,
               accelerator, seen: list[str], only: list[str] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """One batch's loss and {task: its loss}: one task per batch, or (`mixture.mixed_batches`) each row's task drawn
    from the mixture, contrastive tasks still a whole batch. `only`: the stage's tasks (None: all)."""
    rank, world = accelerator.process_index, accelerator.num_processes
    whole = [name for name, task in tasks.items() if task.contrastive]  # InfoNCE needs a whole batch
    drawn = sampler.batch_tasks(step, cfg.optim.batch_size, mixed=cfg.mixture.mixed_batches, only=only,
                                whole=whole)
    if len(set(drawn)) == 1:
        name = drawn[0]
        rows = stream.batch(name, cfg.optim.batch_size, rank, world)
        seen.extend(row.get("_source", "") for row in rows)
        loss = task_loss(tasks[name], model, processor, rows, rng=rng, device=accelerator.device)
        loss = loss * float(cfg.mixture.loss_weights.get(name, 1.0))
        return loss, {name: float(loss.detach())}
    named_rows = []
    for name in dict.fromkeys(drawn):  # each task's rows in one take, so ranks still split them
        rows = stream.batch(name, drawn.count(name), rank, world)
        seen.extend(row.get("_source", "") for row in rows)
        named_rows += [(name, row) for row in rows]
    return mixed_loss(tasks, named_rows, model, processor, rng=rng, device=accelerator.device,
                      loss_weights=cfg.mixture.loss_weights)

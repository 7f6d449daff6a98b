"""The training losses, in one place.

    loss = task_loss(task, model, processor, rows, rng=random.Random(0))          # one task's batch
    loss, parts = mixed_loss(tasks, [(name, row), ...], model, processor)          # rows of several tasks
    loss, parts = batch_loss(cfg, tasks, prepared, model, device)                   # a planned batch (the loop)

Every task trains through the LM head on its target text (token-mean cross-entropy), except tasks with their own
loss (`Task.own_loss`: contrastive tasks' InfoNCE, a plug-in's BCE...), which build their batch
(`Task.loss_batch`) and compute it (`Task.loss`); this module never asks which task it has.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from unified.model.adapters import select_adapter
from unified.task_zoo.batching import to_device
from unified.training.batches import Prepared, prepare

if TYPE_CHECKING:
    from unified.training.config import TrainConfig


def task_loss(task: Any, model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], *,
              rng: random.Random | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """The task's training loss on `rows` (a scalar)."""
    device = device if device is not None else next(model.parameters()).device
    select_adapter(model, task.name)  # per-task LoRA adapters, when the model has them
    return task.loss(model, to_device(task.loss_batch(rows, processor, rng), device))


def mixed_loss(tasks: Mapping[str, Any], named_rows: Sequence[tuple[str, Mapping[str, Any]]], model: Any,
               processor: Any, *, rng: random.Random | None = None, device: torch.device | str | None = None,
               loss_weights: Mapping[str, float] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """One batch holding rows of several tasks -> (loss, {task: its own loss}); see `prepared_mixed_loss`."""
    device = device if device is not None else next(model.parameters()).device
    return prepared_mixed_loss(tasks, prepare(tasks, processor, named_rows, rng), model, device, loss_weights)


def prepared_mixed_loss(tasks: Mapping[str, Any], prepared: Prepared, model: Any, device: torch.device | str,
                        loss_weights: Mapping[str, float] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """A mixed `Prepared` batch's loss. Generative rows went through ONE forward pass: each target token's
    cross-entropy is weighted by its task's loss weight and the sum is divided by the number of target tokens (the
    same token mean as a one-task batch). The rows of a task with its own loss take their own pass per task
    (`Task.loss`); the parts are combined by row count."""
    weights = {name: float((loss_weights or {}).get(name, 1.0)) for name in [*prepared.names, *prepared.own]}
    parts: dict[str, float] = {}
    total, rows_done = None, 0
    if prepared.batch is not None:
        names = prepared.names
        batch = to_device(prepared.batch, device)
        labels = batch["labels"]  # (B, Lt), -100 on padding
        # the model's own loss (HL-Gauss when configured) per target token, its cross-entropy computed once
        token_loss = model(**batch, loss_reduction="none").loss  # (B, Lt), 0 on padding
        real = labels != -100
        kinds = list(dict.fromkeys(names))
        token_task = _token_tasks(prepared, kinds, labels.shape).to(token_loss.device)  # (B, Lt) index into kinds
        token_weight = torch.tensor([weights[n] for n in kinds], device=token_loss.device)[token_task]
        total = (token_loss * token_weight).sum() / real.sum().clamp_min(1)
        parts.update(zip(kinds, _task_means(token_loss.detach(), real, token_task, len(kinds))))
        total, rows_done = total * len(names), len(names)
    for name, batch in prepared.own.items():
        select_adapter(model, name)
        loss = tasks[name].loss(model, to_device(batch, device))
        rows = prepared.own_rows[name]
        parts[name] = float(loss.detach())
        weighted = loss * weights[name] * rows
        total = weighted if total is None else total + weighted
        rows_done += rows
    return total / rows_done, parts


def _task_means(token_loss: torch.Tensor, real: torch.Tensor, token_task: torch.Tensor, n: int) -> list[float]:
    """Each task's mean loss over its real target tokens, summed on the device and read in one transfer (a
    `float()` per task waited for the device once per task). Plain sums over a (tasks, tokens) mask, not
    `index_add_`, whose atomic adds on a GPU round differently run to run (the dynamic mixture reads these)."""
    mine = (token_task.flatten()[None, :] == torch.arange(n, device=token_task.device)[:, None]) & real.flatten()
    sums = (token_loss.flatten()[None, :] * mine).sum(dim=1)  # (n,)
    return (sums / mine.sum(dim=1)).tolist()


def _token_tasks(prepared: Prepared, kinds: list[str], shape: torch.Size) -> torch.Tensor:
    """(B, Lt) long: the task (index into `kinds`) of each target position: its row's, or in a packed batch its
    segment's (`decoder_segment_ids` k is the row's k-th packed example)."""
    index = [kinds.index(n) for n in prepared.names]
    if prepared.packs is None:
        return torch.tensor(index)[:, None].expand(shape)
    segments = prepared.batch["decoder_segment_ids"]  # (B, Lt), 0 = padding
    out = torch.zeros(shape, dtype=torch.long)
    for b, members in enumerate(prepared.packs):
        for k, i in enumerate(members):
            out[b][segments[b] == k + 1] = index[i]
    return out


def batch_loss(cfg: TrainConfig, tasks: Mapping[str, Any], prepared: Prepared, model: Any,
               device: torch.device | str) -> tuple[torch.Tensor, dict[str, float]]:
    """One planned batch's loss and {task: its loss}: a one-task batch through the task's own loss (its LoRA
    adapter selected), a mixed batch through `prepared_mixed_loss`."""
    name = prepared.single
    if name is None:
        return prepared_mixed_loss(tasks, prepared, model, device, cfg.mixture.loss_weights)
    select_adapter(model, name)
    batch = prepared.own[name] if tasks[name].own_loss else prepared.batch
    loss = tasks[name].loss(model, to_device(batch, device))
    loss = loss * float(cfg.mixture.loss_weights.get(name, 1.0))
    return loss, {name: float(loss.detach())}

"""Which task the next batch comes from: the task-mixture strategies, with a state that checkpoints exactly.

    proportional   p_t ~ n_t (dataset size)
    temperature    p_t ~ n_t ** (1 / T)      (T = 1 proportional, T -> inf uniform)
    uniform        p_t = 1 / K
    weights        p_t ~ w_t                  (explicit, as UniT)
    annealed       proportional at step 0 -> uniform at `anneal_steps`, linearly
    dynamic        p_t ~ softmax(recent loss_t / T): tasks whose loss is highest are sampled more (CA-MTL's idea)

    >>> sampler = TaskSampler({"vqa": 900, "caption": 100}, strategy="temperature", temperature=2.0, seed=0)
    >>> sampler.probabilities(step=0)
    {'vqa': 0.75, 'caption': 0.25}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from unified.errors import ConfigError


class TaskSampler:
    def __init__(self, sizes: Mapping[str, int], strategy: str = "proportional", *, temperature: float = 2.0,
                 weights: Mapping[str, float] | None = None, anneal_steps: int = 1000, seed: int = 0):
        if not sizes:
            raise ConfigError("tasks", [], "the mixture needs at least one task with rows")
        self.tasks = sorted(sizes)
        self.sizes = np.array([float(sizes[t]) for t in self.tasks])
        self.strategy, self.temperature, self.anneal_steps = strategy, float(temperature), int(anneal_steps)
        if strategy == "weights":
            missing = [t for t in self.tasks if t not in (weights or {})]
            if missing:
                raise ConfigError("mixture.weights", dict(weights or {}), f"no weight for {missing}")
            self.weights = np.array([float(weights[t]) for t in self.tasks])
        self.losses = dict.fromkeys(self.tasks)  # running mean of each task's loss ("dynamic")
        self.counts = dict.fromkeys(self.tasks, 0)
        self.rng = np.random.default_rng(seed)

    def probabilities(self, step: int) -> dict[str, float]:
        k = len(self.tasks)
        if self.strategy == "proportional":
            p = self.sizes
        elif self.strategy == "temperature":
            p = self.sizes ** (1.0 / self.temperature)
        elif self.strategy == "uniform":
            p = np.ones(k)
        elif self.strategy == "weights":
            p = self.weights
        elif self.strategy == "annealed":
            a = min(1.0, step / max(1, self.anneal_steps))
            p = (1 - a) * self.sizes / self.sizes.sum() + a / k
        elif self.strategy == "dynamic":
            known = [v for v in self.losses.values() if v is not None]
            fill = max(known) if known else 1.0  # unseen tasks count as the hardest
            loss = np.array([fill if self.losses[t] is None else self.losses[t] for t in self.tasks])
            p = np.exp((loss - loss.max()) / self.temperature)
        else:
            raise ConfigError("mixture.strategy", self.strategy, "unknown strategy")
        p = np.asarray(p, dtype=np.float64) / np.sum(p)
        return {t: float(v) for t, v in zip(self.tasks, p)}

    def sample(self, step: int, only: Sequence[str] | None = None) -> str:
        """One task drawn by the strategy's probabilities; with `only`, among those tasks (renormalised)."""
        p = self.probabilities(step)
        names = self.tasks if only is None else [t for t in self.tasks if t in set(only)]
        if not names:
            raise ConfigError("tasks", list(only or []), f"none of them is in the mixture {self.tasks}")
        weights = np.array([p[t] for t in names])
        if weights.sum() <= 0:  # e.g. a subset the strategy gives no weight: draw it uniformly
            weights = np.ones(len(names))
        task = names[int(self.rng.choice(len(names), p=weights / weights.sum()))]
        self.counts[task] += 1
        return task

    def batch_tasks(self, step: int, batch_size: int, *, mixed: bool = False, only: Sequence[str] | None = None,
                    whole: Sequence[str] = ()) -> list[str]:
        """The task of each of a batch's rows. One task for the whole batch; or (`mixed`) each row's task drawn on
        its own, except that a task in `whole` (contrastive ones, which need a batch of in-batch negatives) still
        takes a whole batch when drawn: the first draw decides, the other rows come from the remaining tasks."""
        first = self.sample(step, only)
        if not mixed or first in whole:
            return [first] * batch_size
        rest = [t for t in (self.tasks if only is None else only) if t not in set(whole)]
        return [first] + [self.sample(step, rest) for _ in range(batch_size - 1)]

    def observe(self, task: str, loss: float, momentum: float = 0.9) -> None:
        """Feed a task's (held-out or training) loss to the dynamic strategy."""
        if not math.isfinite(loss):
            return
        old = self.losses[task]
        self.losses[task] = loss if old is None else momentum * old + (1 - momentum) * loss

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "losses": dict(self.losses), "counts": dict(self.counts)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.losses.update(state["losses"])
        self.counts.update(state["counts"])

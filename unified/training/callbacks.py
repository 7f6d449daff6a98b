"""Callbacks: what a run does beside training, at named points of the loop, without editing the loop.

    class PrintEvery100(Callback):
        name = "print100"

        def on_step_end(self, run, step, losses):
            if step % 100 == 0:
                print(step, losses)

    train(cfg, callbacks=[PrintEvery100()])

The loop calls, on every callback in order:

    on_start(run)                     once, after the run is built (or resumed) and before its first step
    on_step_end(run, step, losses)    after each optimizer step that was taken: losses [(task, loss), ...]
    serving(run, model)               a context manager around evaluation and every servable write (best/,
                                      final/): the weights to serve (an EMA swaps its average in here)
    on_evaluate(run, step, result)    after each held-out evaluation (inside `serving`)
    on_finish(run, summary)           once, after final/ and the summary are written
    state_dict() / load_state_dict()  saved in every checkpoint's trainer.pt under "callbacks"[name], read back
                                      on resume, so a callback with state resumes exactly

Built in, and always present in this order: `Trackers` (accelerate's trackers: per-task losses, the learning rate,
held-out scores), `KeepBest` (the best held-out integral so far kept in OUTPUT/best) and `LossPlot` (OUTPUT/loss.png).
`optim.ema` adds `unified.training.ema.EMA` in front of them. Main-process-only work checks `run.main`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from unified.training.checkpoint import save_checkpoint
from unified.training.report import flat_config, plot_losses


class Callback:
    """A hook into the training loop; every method has a default that does nothing (see the module docstring)."""

    name = "callback"  # the key of its state in a checkpoint: unique within a run

    def on_start(self, run: Any) -> None:
        """The run is built (or resumed) and about to take its first step."""

    def on_step_end(self, run: Any, step: int, losses: Sequence[tuple[str, float]]) -> None:
        """Optimizer step `step` was taken; `losses` holds (task, loss) per micro-batch."""

    @contextlib.contextmanager
    def serving(self, run: Any, model: Any) -> Iterator[None]:
        """Around evaluation and every servable write: leave `model` holding the weights to serve."""
        yield

    def on_evaluate(self, run: Any, step: int, result: Any) -> None:
        """A held-out evaluation (`unified.task_zoo.evaluation.EvalResult`) at `step`, main process only."""

    def on_finish(self, run: Any, summary: dict[str, Any]) -> None:
        """The run is over: `summary` is what summary.json holds."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of this callback (tensors and plain values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned, when a run resumes."""


class Trackers(Callback):
    """accelerate's trackers (`log_with`): per-task losses and the learning rate each step, held-out scores."""

    name = "trackers"

    def on_start(self, run: Any) -> None:
        if run.accelerator.log_with:
            run.accelerator.init_trackers("logs", config=flat_config(run.config_dict))  # OUTPUT/logs/

    def on_step_end(self, run: Any, step: int, losses: Sequence[tuple[str, float]]) -> None:
        if run.accelerator.log_with:
            lr = run.scheduler.get_last_lr()[0]
            for name, value in losses:
                run.accelerator.log({f"loss/{name}": value, "lr": lr}, step=step)

    def on_evaluate(self, run: Any, step: int, result: Any) -> None:
        if run.accelerator.log_with:
            run.accelerator.log({"eval/integral": result.integral,
                                 **{f"eval/{n}": v for n, v in result.scores.items()}}, step=step)


class KeepBest(Callback):
    """The model with the best held-out integral so far, written to OUTPUT/best (early stopping: serve best/)."""

    name = "best"

    def __init__(self) -> None:
        self.best = -1.0

    def on_evaluate(self, run: Any, step: int, result: Any) -> None:
        if result.integral > self.best:
            self.best = result.integral
            save_checkpoint(run.out, step, run.servable(), run.processor, {}, name="best", task_options=run.served)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])


class LossPlot(Callback):
    """OUTPUT/loss.png: each task's training loss (smoothed) against the step."""

    name = "loss_plot"

    def on_finish(self, run: Any, summary: dict[str, Any]) -> None:
        if run.main:
            plot_losses(run.history, run.out / "loss.png")


class Callbacks:
    """The run's callbacks, called in order; their states keyed by name in a checkpoint."""

    def __init__(self, callbacks: Sequence[Callback]):
        names = [c.name for c in callbacks]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"two callbacks share the name(s) {duplicated}: each needs its own `name`")
        self.items = list(callbacks)

    def __iter__(self) -> Iterator[Callback]:
        return iter(self.items)

    def get(self, kind: type) -> Any:
        """The first callback of type `kind`, or None."""
        return next((c for c in self.items if isinstance(c, kind)), None)

    def on_start(self, run: Any) -> None:
        for c in self.items:
            c.on_start(run)

    def on_step_end(self, run: Any, step: int, losses: Sequence[tuple[str, float]]) -> None:
        for c in self.items:
            c.on_step_end(run, step, losses)

    @contextlib.contextmanager
    def serving(self, run: Any, model: Any) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for c in self.items:
                stack.enter_context(c.serving(run, model))
            yield

    def on_evaluate(self, run: Any, step: int, result: Any) -> None:
        for c in self.items:
            c.on_evaluate(run, step, result)

    def on_finish(self, run: Any, summary: dict[str, Any]) -> None:
        for c in self.items:
            c.on_finish(run, summary)

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {c.name: c.state_dict() for c in self.items}

    def load_state_dict(self, states: dict[str, dict[str, Any]]) -> None:
        for c in self.items:
            if c.name in states:
                c.load_state_dict(states[c.name])

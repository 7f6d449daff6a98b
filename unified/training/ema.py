"""An exponential moving average of the weights (`optim.ema: decay`), kept beside training and served.

After optimizer step t (t = 1, 2, ...) every floating-point parameter's average moves towards the weights:

    d_t   = min(decay, (1 + t) / (10 + t))        # short runs are not dominated by the initial weights
    avg_t = d_t * avg_{t-1} + (1 - d_t) * w_t      # avg_0 = the weights at step 0 (float32)

Evaluation, OUTPUT/best and OUTPUT/final use the average (`serving` swaps it in, then the training weights back);
checkpoints keep the training weights and the average in trainer.pt, so a resumed run continues both exactly.
One float32 copy of the model's parameters is held on their device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from unified.training.callbacks import Callback


class EMA(Callback):
    """The moving average of `run.core`'s parameters; see the module docstring.

        >>> train(cfg)                      # with optim.ema: 0.999 in the config, or
        >>> train(cfg, callbacks=[EMA(0.999)])
    """

    name = "ema"

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay {decay!r}: expected a number in (0, 1)")
        self.decay, self.updates = decay, 0
        self.average: dict[str, torch.Tensor] = {}

    def _parameters(self, run: Any) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in run.core.named_parameters() if p.is_floating_point()}

    def on_start(self, run: Any) -> None:
        params = self._parameters(run)
        if not self.average:  # a fresh run (a resumed one brought its average in load_state_dict)
            self.average = {n: p.detach().float().clone() for n, p in params.items()}
        missing = sorted(set(params) - set(self.average))
        if missing:
            raise ValueError(f"the EMA state in this checkpoint lacks parameters of the model ({missing[:3]}...)")
        self.average = {n: t.to(params[n].device) for n, t in self.average.items()}

    @torch.no_grad()
    def on_step_end(self, run: Any, step: int, losses: Sequence[tuple[str, float]]) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, param in self._parameters(run).items():
            self.average[name].lerp_(param.detach().float(), 1.0 - d)  # avg + (1 - d) * (w - avg)

    @contextlib.contextmanager
    def serving(self, run: Any, model: Any) -> Iterator[None]:
        params = dict(model.named_parameters())
        kept = {n: params[n].detach().clone() for n in self.average if n in params}
        with torch.no_grad():
            for name, value in kept.items():
                params[name].copy_(self.average[name].to(value.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in kept.items():
                    params[name].copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "average": {n: t.cpu() for n, t in self.average.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.average = {n: t.float() for n, t in state["average"].items()}

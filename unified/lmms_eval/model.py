"""`UnifiedLMM`: lmms-eval's `lmms` class over `unified.harness` (what a request becomes: media, the answering task,
the scores). Importing it needs lmms-eval; lmms-eval imports it only when `--model unified` is asked for.

model_args:
    pretrained       a saved model directory (default: the built-in default model)
    task             the task that answers every request (default: the import rule, `unified.harness`)
    device           "cpu", "cuda", "cuda:0"... (default: cuda when available)
    allow_untrained  answer with a task the model was not trained on (default: False)
lmms-eval's `--batch_size N` asks up to N generate_until requests of one task together.
Another key is refused (TypeError naming it), as a typo would otherwise be ignored.
"""

from __future__ import annotations

from typing import Any

import torch
from lmms_eval.api.model import lmms

from unified import harness
from unified.api import DEFAULT_MODEL_DIR, Model
from unified.errors import InputError


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise InputError(f"model_args {name}", value, "expected true or false")


class UnifiedLMM(lmms):
    """A `unified` model answering lmms-eval's generate_until and loglikelihood requests (`unified.harness`).

        lmms-eval --model unified --model_args pretrained=runs/shapes/best,task=video_mcqa --tasks my_task
    """

    is_simple = True

    def __init__(self, pretrained: str | None = None, task: str | None = None, device: str | None = None,
                 allow_untrained: Any = False, batch_size: Any = 1, max_batch_size: Any = None) -> None:
        super().__init__()
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = Model.from_pretrained(pretrained or DEFAULT_MODEL_DIR, device=device)
        self.task = task or None
        self.allow_untrained = _flag("allow_untrained", allow_untrained)
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise InputError("batch_size", batch_size, "expected an int >= 1 (no 'auto')")
        self.batch_size_per_gpu = int(batch_size)  # generate_until requests asked together (media as a batch)

    def generate_until(self, requests: list[Any]) -> list[str]:
        return harness.generate_until(self.model, [r.args for r in requests], self.task_dict, task=self.task,
                                      allow_untrained=self.allow_untrained, batch_size=self.batch_size_per_gpu)

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        return harness.loglikelihood(self.model, [r.args for r in requests], self.task_dict, task=self.task,
                                     allow_untrained=self.allow_untrained)

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        raise NotImplementedError("this model answers one turn per request; multi-round tasks are not supported")

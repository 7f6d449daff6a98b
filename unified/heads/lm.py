"""The language-modelling head: the model's tied output projection, named "lm" so tasks can pick it by name.

The model owns the weight (shared with the token embedding); this head only turns decoder states into logits with
that weight and, given labels, the token cross-entropy. Labels are already aligned with the decoder states (decoder
inputs are the labels shifted right), so there is no shift here; -100 marks positions without a target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unified.heads.registry import register_head


@dataclass
class LMOutput:
    logits: torch.Tensor  # (B, Lt, V)
    loss: torch.Tensor | None = None


@register_head("lm")
class LMHead(nn.Module):
    """Logits from hidden states and a given (tied) weight: logits = scale * hidden @ weight.T (+ bias).

    `scale` is d_model ** -0.5 for T5-style tied embeddings, 1.0 otherwise. The head has no parameters of its own.

    Example:
        >>> head = LMHead()
        >>> out = head(torch.randn(2, 3, 8), torch.randn(11, 8), labels=torch.tensor([[1, 2, -100], [3, -100, -100]]))
        >>> out.logits.shape, out.loss.dim()
        (torch.Size([2, 3, 11]), 0)
    """

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        labels: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> LMOutput:
        logits = F.linear(hidden * self.scale if self.scale != 1.0 else hidden, weight, bias)  # (B, Lt, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        return LMOutput(logits=logits, loss=loss)

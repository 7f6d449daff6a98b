"""Regression over pooled encoder states, with an MSE loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unified.errors import InputError
from unified.heads.pooling import check_pooling, pool
from unified.heads.registry import register_head


@dataclass
class RegressionOutput:
    predictions: torch.Tensor  # (B, num_outputs)
    loss: torch.Tensor | None = None


@register_head("regress")
class RegressionHead(nn.Module):
    """Pool -> Linear -> GELU -> Linear to num_outputs; MSE against targets (B, num_outputs), or (B,) when 1 output.

    Example:
        >>> head = RegressionHead(hidden_size=8, num_outputs=2)
        >>> head(torch.randn(4, 5, 8), targets=torch.zeros(4, 2)).predictions.shape
        torch.Size([4, 2])
    """

    def __init__(self, hidden_size: int, num_outputs: int = 1, pooling: str = "mean"):
        super().__init__()
        self.pooling, self.num_outputs = check_pooling(pooling), num_outputs
        self.net = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, num_outputs))

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor | None = None, targets: torch.Tensor | None = None
    ) -> RegressionOutput:
        pred = self.net(pool(hidden, mask, self.pooling))  # (B, num_outputs)
        loss = None
        if targets is not None:
            if targets.dim() == 1 and self.num_outputs == 1:
                targets = targets[:, None]
            if targets.shape != pred.shape:
                raise InputError("targets", tuple(targets.shape), f"expected {tuple(pred.shape)}")
            loss = F.mse_loss(pred.float(), targets.float())
        return RegressionOutput(predictions=pred, loss=loss)

"""Classification over pooled encoder states: single-label (cross-entropy) or multi-label (BCE, e.g. video tags)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unified.errors import InputError
from unified.heads.pooling import check_pooling, pool
from unified.heads.registry import register_head


@dataclass
class ClassificationOutput:
    logits: torch.Tensor  # (B, num_labels)
    loss: torch.Tensor | None = None


@register_head("classify")
class ClassificationHead(nn.Module):
    """Pool (masked mean or first token) -> Linear -> tanh -> dropout -> Linear to num_labels (BART's head).

    labels: long (B,) for single-label cross-entropy, or float (B, num_labels) in {0, 1} with `multi_label=True`
    for a binary cross-entropy per label.

    Example:
        >>> head = ClassificationHead(hidden_size=8, num_labels=3)
        >>> out = head(torch.randn(2, 5, 8), torch.ones(2, 5), labels=torch.tensor([0, 2]))
        >>> out.logits.shape, out.loss.dim()
        (torch.Size([2, 3]), 0)
    """

    def __init__(
        self,
        hidden_size: int,
        num_labels: int,
        pooling: str = "mean",
        dropout: float = 0.0,
        multi_label: bool = False,
    ):
        super().__init__()
        self.pooling, self.num_labels, self.multi_label = check_pooling(pooling), num_labels, multi_label
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> ClassificationOutput:
        pooled = pool(hidden, mask, self.pooling)  # (B, D)
        logits = self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(pooled)))))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.multi_label:
                if labels.shape != logits.shape:
                    raise InputError("labels", tuple(labels.shape), f"expected (B, num_labels) = {tuple(logits.shape)}")
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
            else:
                if labels.shape != logits.shape[:1]:
                    raise InputError("labels", tuple(labels.shape), f"expected class ids (B,) = ({logits.shape[0]},)")
                loss = F.cross_entropy(logits.float(), labels.long())
        return ClassificationOutput(logits=logits, loss=loss)

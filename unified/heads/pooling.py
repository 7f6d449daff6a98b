"""Pooling encoder states (B, L, D) into one vector per example (B, D), ignoring padding."""

from __future__ import annotations

import torch

from unified.errors import ConfigError

POOLINGS = ("mean", "first")


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ConfigError("pooling", pooling, f"expected one of {', '.join(POOLINGS)}")
    return pooling


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the real positions: hidden (B, L, D), mask (B, L) (1 = real) -> (B, D); an all-padding row gives 0.

    Example:
        >>> masked_mean(torch.tensor([[[1.0], [3.0], [100.0]]]), torch.tensor([[1, 1, 0]]))
        tensor([[2.]])
    """
    if mask is None:
        return hidden.mean(dim=1)
    m = mask.to(hidden.dtype)[..., None]  # (B, L, 1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """(B, L, D) -> (B, D) by "mean" (masked) or "first" (the first position, e.g. a [CLS]-like prompt token)."""
    return masked_mean(hidden, mask) if pooling == "mean" else hidden[:, 0]

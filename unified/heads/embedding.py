"""Embeddings for retrieval / similarity: projection + L2 norm, trained with a symmetric InfoNCE loss."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unified.errors import ConfigError, InputError
from unified.heads.pooling import check_pooling, pool


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP): a[i] and b[i] are positives, every other b[j] (resp. a[j]) a negative.

    a, b (N, E), usually L2-normalised -> scalar: (CE(a b^T / t, arange) + CE(b a^T / t, arange)) / 2.

    Example:
        >>> x = F.normalize(torch.eye(3), dim=-1)
        >>> info_nce(x, x, temperature=0.01).item() < 1e-6
        True
    """
    if a.dim() != 2 or a.shape != b.shape:
        raise InputError("info_nce inputs", (tuple(a.shape), tuple(b.shape)), "expected two (N, E) tensors")
    logits = (a.float() @ b.float().T) / temperature  # (N, N)
    target = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@dataclass
class EmbeddingOutput:
    embeddings: torch.Tensor  # (B, embed_dim), unit L2 norm
    loss: torch.Tensor | None = None


class EmbeddingHead(nn.Module):
    """Pool -> Linear(hidden_size, embed_dim) -> L2 normalise; InfoNCE against paired embeddings when given.

    With `learn_temperature=True` the temperature is a parameter (stored as log(1 / t), as CLIP's logit scale,
    clamped so 1 / t <= 100).

    Example:
        >>> head = EmbeddingHead(hidden_size=8, embed_dim=4)
        >>> out = head(torch.randn(3, 5, 8), targets=F.normalize(torch.randn(3, 4), dim=-1))
        >>> out.embeddings.norm(dim=-1).allclose(torch.ones(3)), out.loss.dim()
        (True, 0)
    """

    def __init__(
        self,
        hidden_size: int,
        embed_dim: int,
        pooling: str = "mean",
        temperature: float = 0.07,
        learn_temperature: bool = False,
    ):
        super().__init__()
        if temperature <= 0:
            raise ConfigError("temperature", temperature, "must be > 0")
        self.pooling = check_pooling(pooling)
        self.proj = nn.Linear(hidden_size, embed_dim)
        self.init_log_scale = math.log(1.0 / temperature)  # what `_init_weights` sets it to again
        log_scale = torch.tensor([self.init_log_scale])  # (1,): FSDP shards no 0-d parameter
        if learn_temperature:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    @property
    def temperature(self) -> torch.Tensor:
        return 1.0 / self.log_scale.clamp(max=math.log(100.0)).exp().reshape(())

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor | None = None, targets: torch.Tensor | None = None
    ) -> EmbeddingOutput:
        emb = F.normalize(self.proj(pool(hidden, mask, self.pooling)), dim=-1)  # (B, E)
        loss = None if targets is None else info_nce(emb, targets, self.temperature)
        return EmbeddingOutput(embeddings=emb, loss=loss)

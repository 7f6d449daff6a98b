"""Numbers in the prompt as numbers: each value token's embedding plus a learnt function of the value it stands for.

A ``<val_k>`` token's embedding is a row of its own, so on its own nothing tells the model that 0.51 is near 0.52:
the smooth starting rows (`unified.model.ordinal`) say it at step 0, and training on a few hundred rows is free to
forget it. `ValueFeature` adds, at every value token of the encoder's input,

    embed(<val_k>) + W phi(k)          W: (d_model, F) learnt, starting at 0 (the model is unchanged at step 0)
    phi(k) = [v, c, sin(2^j pi v), cos(2^j pi v), sin(2^j pi c), cos(2^j pi c) for j < J]      F = 2 + 4 J

with ``c = -1 + (2k + 1) / n`` the bin's centre in Gato's companded domain and ``v = F^-1(c) / M`` the value it
decodes to, as a fraction of the domain's end (M = 256). With the `regress` task's range scaling, ``v`` is linear
in the user's own number (-1 and 1 are the ends of its range), so a linear function of a feature is one step of W
away; ``c`` resolves the small values of unscaled rows, which the mu-law packs near 0, and is the linear one under
`regress`'s ``spacing: uniform``.

phi is a continuous function of the bin's value, so two values' features differ by at most ``|phi'| * |dv|``: nearby
values get nearby embeddings whatever the table rows learn. It reads the bin, not the exact number: a bin is at most
1 % of the value wide (`unified.tokenizers.values`), 0.5 % of a scaled range at its ends and finer inside.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from unified.tokenizers.values import _LOG_BASE, MU_LAW_M, MU_LAW_MU


def value_features(bins: torch.Tensor, n: int, octaves: int) -> torch.Tensor:
    """(...,) bin indices of n value bins -> (..., 2 + 4 * octaves) float32 features phi (module docstring)."""
    c = -1.0 + (2.0 * bins.double() + 1.0) / n  # (...,) the bin centre, companded, in (-1, 1)
    v = torch.sign(c) * torch.expm1(c.abs() * _LOG_BASE) / MU_LAW_MU / MU_LAW_M  # (...,) decoded value / M
    scales = math.pi * 2.0 ** torch.arange(octaves, dtype=torch.float64, device=bins.device)  # (J,)
    waves = [f(x[..., None] * scales) for x in (v, c) for f in (torch.sin, torch.cos)]  # 4 x (..., J)
    return torch.cat([v[..., None], c[..., None], *waves], dim=-1).float()


class ValueFeature(nn.Module):
    """Adds W phi(bin) to the embeddings of the value tokens ids [start, stop) (the layout's ``<val_0>`` onward)."""

    def __init__(self, start: int, stop: int, d_model: int, octaves: int = 6):
        super().__init__()
        self.start, self.stop, self.octaves = int(start), int(stop), int(octaves)
        self.weight = nn.Parameter(torch.zeros(d_model, 2 + 4 * self.octaves))  # W (D, F); zeroed by _init_weights

    def forward(self, input_ids: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        # input_ids (B, L), embeds (B, L, D) -> (B, L, D)
        inside = (input_ids >= self.start) & (input_ids < self.stop)  # (B, L)
        if not bool(inside.any()):
            return embeds
        bins = (input_ids - self.start).clamp(0, self.stop - self.start - 1)  # (B, L)
        phi = value_features(bins, self.stop - self.start, self.octaves).to(embeds.dtype)  # (B, L, F)
        return embeds + (phi @ self.weight.t()) * inside[..., None].to(embeds.dtype)

    def extra_repr(self) -> str:
        return f"ids=[{self.start}, {self.stop}), octaves={self.octaves}"

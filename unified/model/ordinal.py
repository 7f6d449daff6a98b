"""Smooth starting embeddings for numbered tokens (locations, values, times): neighbouring bins start close.

A box is four of 1,000 location tokens, and a randomly initialised embedding makes ``<loc_500>`` as far from
``<loc_501>`` as from ``<loc_7>``: every bin must then be learnt from its own examples (a 2,000-clip grounding set
shows each location bin about 8 times). Started from random Fourier features of the bin's position instead,

    row(k) = sqrt(1 - noise) * sqrt(2) * cos(omega * k / (n - 1) + phase) + sqrt(noise) * N(0, 1)
             omega ~ N(0, 1 / width²) and phase ~ U(0, 2 pi), one pair per dimension,

two rows' expected dot product over d_model is d_model * ((1 - noise) * exp(-(dk / (n - 1))² / (2 width²)) + noise
[k = k']), so the tied output layer scores nearby bins alike and what is learnt for one bin carries to its
neighbours (Rahimi & Recht's random features for a Gaussian kernel). Each row keeps unit variance per dimension,
as the rest of the embedding (`TextConfig.embed_init_std` = 1).
"""

from __future__ import annotations

import math

import torch


def ordinal_rows(n: int, dim: int, width: float = 0.02, noise: float = 0.25, std: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, dim) rows whose dot products follow a Gaussian kernel of the bin distance (as a fraction of the range).

    Example:
        >>> rows = ordinal_rows(1000, 512, width=0.02, noise=0.0, generator=torch.Generator().manual_seed(0))
        >>> near = torch.cosine_similarity(rows[500], rows[505], dim=0).item()   # 0.005 of the range apart
        >>> far = torch.cosine_similarity(rows[500], rows[700], dim=0).item()    # 0.2 apart
        >>> near > 0.9, abs(far) < 0.2
        (True, True)
    """
    if n < 1 or dim < 1:
        raise ValueError(f"ordinal_rows needs n >= 1 and dim >= 1, got {n}, {dim}")
    position = torch.arange(n, dtype=torch.float64) / max(1, n - 1)  # (n,) in [0, 1]
    omega = torch.randn(dim, generator=generator, dtype=torch.float64) / width  # (dim,)
    phase = torch.rand(dim, generator=generator, dtype=torch.float64) * 2 * math.pi
    smooth = math.sqrt(2.0) * torch.cos(position[:, None] * omega[None, :] + phase[None, :])  # (n, dim)
    rows = math.sqrt(1.0 - noise) * smooth + math.sqrt(noise) * torch.randn(n, dim, generator=generator,
                                                                             dtype=torch.float64)
    return (std * rows).float()

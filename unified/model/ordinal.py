"""Numbered tokens (locations, values, times) as ordered bins: smooth starting embeddings (`ordinal_rows`), so
neighbouring bins start close, and an ordinal-aware loss (`token_cross_entropy` with `sigma` > 0), so a neighbouring
bin is less wrong than a far one.

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


# ---------------------------------------------------------------------------------------------- the loss
def hl_gauss_targets(bins: torch.Tensor, n: int, sigma: float) -> torch.Tensor:
    """(M, n) target distributions over n ordered bins for the true bins `bins` (M,): the mass of a Gaussian of
    standard deviation `sigma` bins centred on each true bin's centre that falls in each bin, renormalised over the
    n bins ("HL-Gauss", Farebrother et al. 2024, "Stop Regressing"; they recommend sigma = 0.75 bin widths).
    Bin i covers [i, i + 1); the true bin k is centred at k + 0.5."""
    edges = torch.arange(n + 1, dtype=torch.float64, device=bins.device)  # (n + 1,)
    centre = bins.to(torch.float64)[:, None] + 0.5  # (M, 1)
    cdf = 0.5 * (1 + torch.erf((edges[None, :] - centre) / (sigma * math.sqrt(2.0))))  # (M, n + 1)
    mass = cdf[:, 1:] - cdf[:, :-1]  # (M, n)
    return (mass / mass.sum(-1, keepdim=True)).float()


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ranges: list | None = None,
                        sigma: float = 0.0, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of (B, L, V) `logits` against (B, L) `labels` (-100 ignored). With `sigma` > 0, a label inside
    one of the ordered `ranges` ([[start, stop], ...]: the location, value and time bins) is scored against
    `hl_gauss_targets` over its range instead of a one-hot; every other token as usual. `reduction`: "mean" over
    real tokens, or "none" ((B, L), 0 where ignored). sigma = 0 is exactly `F.cross_entropy`."""
    import torch.nn.functional as F

    if sigma <= 0 or not ranges:
        # over (B L, V) rows, the vocabulary contiguous: the (B, V, L) view of a transpose took 2.6-3.1x as long on
        # the CPU (1.9-2.4x with the backward) at 16 x 32 targets of a 32k vocabulary, and rounded 7x further from
        # a float64 reference (8.5e-6 against 1.2e-6)
        out = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                              reduction="none").view(labels.shape)
    else:
        log_probs = logits.float().log_softmax(-1)  # (B, L, V)
        real = labels != -100
        out = -log_probs.gather(-1, labels.clamp_min(0)[..., None])[..., 0] * real  # (B, L) one-hot part
        for start, stop in ranges:
            inside = (labels >= start) & (labels < stop)  # (B, L)
            if inside.any():
                targets = hl_gauss_targets(labels[inside] - start, stop - start, sigma)  # (M, n)
                out = out.masked_scatter(inside, -(targets * log_probs[inside][:, start:stop]).sum(-1))
    if reduction == "none":
        return out
    return out.sum() / (labels != -100).sum().clamp_min(1)

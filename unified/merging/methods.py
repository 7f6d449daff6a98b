"""Merge methods on plain tensors: one function per method, each taking the models' versions of ONE weight.

    >>> a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    >>> slerp(a, b, 0.5)                       # two orthogonal unit vectors: (a + b) / sqrt(2)
    tensor([0.7071, 0.7071])

`linear` and `slerp` need only the models; `ties`, `dare` and `svd_delta` work on task vectors (a model minus
the common ancestor `base` the models were fine-tuned from). Every function computes in float32 and returns float32;
`unified.merging.checkpoints` casts back to the stored dtype. Sources: mergekit (linear, slerp, ties, dare),
TIES-Merging (Yadav et al. 2023: trim, elect sign, disjoint mean), DARE (Yu et al. 2023: drop at rate p, rescale
the kept entries by 1 / (1 - p)), and the competition winners' recipe for `svd_delta` (the newer checkpoint's delta
from the base truncated to rank r, SLERPed with the older checkpoint).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from unified.errors import InputError

__all__ = ["METHODS", "NEEDS_BASE", "dare", "linear", "slerp", "svd_delta", "ties", "truncate_rank"]

METHODS = ("linear", "slerp", "ties", "dare", "svd-delta")
NEEDS_BASE = ("ties", "dare", "svd-delta")  # task vectors are taken from the base
TWO_MODELS = ("slerp", "svd-delta")  # an interpolation between exactly two models
_COLINEAR = 1 - 1e-6  # |cos| above this: SLERP's sin(omega) ~ 0, so linear interpolation (the same limit)


def _weights(n: int, weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise InputError("weights", list(weights), f"expected one weight per model ({n})")
    return [float(w) for w in weights]


def linear(tensors: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """sum_i w_i x_i / sum_i w_i (equal weights by default): a weighted average of the models."""
    w = _weights(len(tensors), weights)
    total = sum(w)
    if total == 0:
        raise InputError("weights", w, "sum to 0: a weighted average needs a non-zero total")
    return sum(wi * x.float() for wi, x in zip(w, tensors)) / total


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation from `a` (t = 0) to `b` (t = 1) along the arc between their directions, the whole
    tensor taken as one vector: sin((1-t) w) / sin(w) a + sin(t w) / sin(w) b, w the angle between a and b.
    Nearly parallel tensors (or a zero one) fall back to linear interpolation, SLERP's own limit."""
    a32, b32 = a.float(), b.float()
    na, nb = a32.norm(), b32.norm()
    if na == 0 or nb == 0:
        return (1 - t) * a32 + t * b32
    cos = torch.clamp((a32.flatten() @ b32.flatten()) / (na * nb), -1.0, 1.0)
    if cos.abs() > _COLINEAR:
        return (1 - t) * a32 + t * b32
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    return torch.sin((1 - t) * omega) / sin * a32 + torch.sin(t * omega) / sin * b32


def _trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    # TIES's first step: keep the `density` share of entries with the largest magnitude, zero the rest
    k = round(density * delta.numel())
    if k >= delta.numel():
        return delta
    if k == 0:
        return torch.zeros_like(delta)
    threshold = delta.abs().flatten().kthvalue(delta.numel() - k).values
    return torch.where(delta.abs() > threshold, delta, torch.zeros_like(delta))


def ties(tensors: Sequence[torch.Tensor], base: torch.Tensor, weights: Sequence[float] | None = None,
         density: float = 1.0) -> torch.Tensor:
    """TIES-Merging: task vectors d_i = x_i - base, each trimmed to its `density` largest entries; per entry the
    sign of sum_i w_i d_i is elected, and the weighted mean of the d_i that agree with it (zeros excluded) is
    added to the base. With w_i = 1 (the default) it is the paper's disjoint mean."""
    w = _weights(len(tensors), weights or [1.0] * len(tensors))
    b32 = base.float()
    deltas = torch.stack([_trim(x.float() - b32, density) * wi for x, wi in zip(tensors, w)])  # (N, ...)
    sign = torch.sign(deltas.sum(0))  # (...) the elected sign
    agree = (torch.sign(deltas) == sign) & (deltas != 0)  # (N, ...)
    scale = torch.tensor(w).view(-1, *[1] * b32.dim()).expand_as(deltas)
    total = (deltas * agree).sum(0)
    weight = (scale * agree).sum(0)
    return b32 + torch.where(weight != 0, total / weight.clamp_min(1e-12), torch.zeros_like(total))


def dare(tensors: Sequence[torch.Tensor], base: torch.Tensor, weights: Sequence[float] | None = None,
         density: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """DARE (drop and rescale) then a weighted sum: each task vector x_i - base keeps each entry with
    probability `density` (drop rate p = 1 - density) and the kept entries are scaled by 1 / density, so its
    expectation is the task vector itself; base + sum_i w_i d_i (w_i = 1 by default, as in DARE's paper)."""
    w = _weights(len(tensors), weights or [1.0] * len(tensors))
    b32 = base.float()
    out = b32.clone()
    for x, wi in zip(tensors, w):
        keep = torch.rand(b32.shape, generator=generator) < density
        out += wi * torch.where(keep, (x.float() - b32) / density, torch.zeros_like(b32))
    return out


def truncate_rank(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """The best rank-`rank` approximation of a 2-D tensor (truncated SVD, Eckart-Young)."""
    u, s, vh = torch.linalg.svd(matrix.float(), full_matrices=False)  # (m, k), (k,), (k, n)
    r = min(rank, s.numel())
    return (u[:, :r] * s[:r]) @ vh[:r]


def svd_delta(older: torch.Tensor, newer: torch.Tensor, base: torch.Tensor, rank: int, t: float) -> torch.Tensor:
    """SLERP(older, base + rank-r SVD of (newer - base), t) for a matrix; a tensor that is not 2-D (a bias, a norm's
    scale) takes its whole delta, having no low-rank form."""
    delta = newer.float() - base.float()
    if delta.dim() == 2:
        delta = truncate_rank(delta, rank)
    return slerp(older, base.float() + delta, t)

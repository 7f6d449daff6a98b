"""Multiple choice by likelihood: score each option's answer tokens under the decoder
(`unified.task_zoo.decoding.rank_options` picks the best)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unified.errors import InputError


def score_options(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Length-normalised log-likelihood of each row's label tokens: (N, Lt, V), (N, Lt) with -100 -> (N,).

    score[n] = sum_t log_softmax(logits[n, t])[labels[n, t]] / #(labels[n] != -100). A row without any label
    token raises InputError (its score would be 0 / 0).

    Example:
        >>> score_options(torch.zeros(1, 2, 4), torch.tensor([[1, -100]]))  # uniform over 4 tokens
        tensor([-1.3863])
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise InputError("labels", tuple(labels.shape), f"expected (N, Lt) matching logits {tuple(logits.shape)}")
    valid = labels != -100  # (N, Lt)
    n_tokens = valid.sum(dim=1)
    if bool((n_tokens == 0).any()):
        raise InputError("labels", n_tokens.tolist(), "every option needs at least one label token")
    logp = F.log_softmax(logits.float(), dim=-1)  # (N, Lt, V)
    picked = logp.gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1)  # (N, Lt)
    return (picked * valid).sum(dim=1) / n_tokens

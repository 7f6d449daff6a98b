"""Multiple choice by likelihood: score each option's answer tokens under the decoder, pick the best.

The batch holds every (example, option) pair, B * n_options rows with the example's options consecutive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unified.errors import InputError
from unified.heads.registry import register_head


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


@dataclass
class MultipleChoiceOutput:
    scores: torch.Tensor  # (B, n_options)
    prediction: torch.Tensor  # (B,) index of the best option
    loss: torch.Tensor | None = None


@register_head("mc_score")
class MultipleChoiceScorer(nn.Module):
    """Reshape per-option scores [B * n_options] to [B, n_options] and pick the argmax.

    Given `answer` (B,), the loss is the cross-entropy over the options' scores (a ranking loss on the
    length-normalised log-likelihoods).

    Example:
        >>> scorer = MultipleChoiceScorer()
        >>> logits = torch.zeros(4, 1, 3); logits[1, 0, 2] = 5.0  # example 0, option 1 likes token 2
        >>> scorer(logits, torch.full((4, 1), 2), num_options=2).prediction.tolist()
        [1, 0]
    """

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        num_options: int,
        answer: torch.Tensor | None = None,
    ) -> MultipleChoiceOutput:
        N = logits.shape[0]
        if num_options < 1 or N % num_options:
            raise InputError("num_options", num_options, f"must divide the number of rows {N}")
        scores = score_options(logits, labels).view(N // num_options, num_options)  # (B, n_options)
        loss = None if answer is None else F.cross_entropy(scores, answer.long())
        return MultipleChoiceOutput(scores=scores, prediction=scores.argmax(dim=-1), loss=loss)

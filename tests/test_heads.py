"""What sits beside the LM head: hand-computed option likelihoods, InfoNCE, the embedding head, masked pooling."""

import math

import pytest
import torch
import torch.nn.functional as F

from unified.errors import InputError
from unified.heads import EmbeddingHead, info_nce, masked_mean, score_options


def test_score_options_hand_computed_three_token_vocab():
    # option 0: tokens [2, 0] under logits rows [ln1, ln2, ln3] and [0, 0, 0]; option 1: token [1] then padding
    logits = torch.zeros(2, 2, 3)
    logits[0, 0] = torch.tensor([1.0, 2.0, 3.0]).log()  # p = [1/6, 2/6, 3/6]
    logits[1, 0] = torch.tensor([0.0, 0.0, math.log(2.0)])  # p = [1/4, 1/4, 2/4]
    labels = torch.tensor([[2, 0], [1, -100]])
    expected = torch.tensor([(math.log(3 / 6) + math.log(1 / 3)) / 2, math.log(1 / 4)])
    torch.testing.assert_close(score_options(logits, labels), expected)
    with pytest.raises(InputError, match="at least one"):
        score_options(logits, torch.full((2, 2), -100))


def test_info_nce_hand_computed_2x2_and_limit():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = F.normalize(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), dim=-1)
    t = 0.5
    s = a @ b.T / t  # [[1/sqrt2, 0], [1/sqrt2, 1]] / t
    # cross-entropy by hand: -log softmax of the diagonal, rows of s and of s^T
    ce_rows = -(torch.log_softmax(s, 1).diagonal()).mean()
    ce_cols = -(torch.log_softmax(s.T, 1).diagonal()).mean()
    r = 1 / math.sqrt(2) / t
    by_hand_row0 = -math.log(math.exp(r) / (math.exp(r) + 1))
    assert ce_rows.item() == pytest.approx((by_hand_row0 + -math.log(math.exp(2) / (math.exp(r) + math.exp(2)))) / 2)
    torch.testing.assert_close(info_nce(a, b, t), (ce_rows + ce_cols) / 2)
    x = F.normalize(torch.randn(8, 16), dim=-1)
    assert info_nce(x, x, temperature=0.01).item() < 1e-3  # identical pairs, low temperature -> ~0
    assert info_nce(x, x, temperature=1.0).item() > 0.5


def test_embedding_head_norm_and_learnable_temperature():
    torch.manual_seed(0)
    head = EmbeddingHead(hidden_size=8, embed_dim=4, temperature=0.1, learn_temperature=True)
    assert head.temperature.item() == pytest.approx(0.1)
    out = head(torch.randn(3, 5, 8), torch.ones(3, 5), targets=F.normalize(torch.randn(3, 4), dim=-1))
    torch.testing.assert_close(out.embeddings.norm(dim=-1), torch.ones(3))
    out.loss.backward()
    assert head.log_scale.grad is not None
    fixed = EmbeddingHead(8, 4)
    assert not any(p is fixed.log_scale for p in fixed.parameters())


def test_masked_mean_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [1e6, -1e6]]])
    assert masked_mean(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]
    torch.manual_seed(0)
    head = EmbeddingHead(hidden_size=2, embed_dim=3)
    short = head(hidden[:, :2], torch.ones(1, 2)).embeddings
    padded = head(hidden, torch.tensor([[1, 1, 0]])).embeddings
    torch.testing.assert_close(short, padded)

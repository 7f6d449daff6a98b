"""Task heads: registry, hand-computed likelihoods and losses, masked pooling."""

import math

import pytest
import torch
import torch.nn.functional as F

from unified.errors import ConfigError, InputError
from unified.heads import (
    HEADS,
    ClassificationHead,
    EmbeddingHead,
    LMHead,
    MultipleChoiceScorer,
    RegressionHead,
    get_head,
    info_nce,
    masked_mean,
    register_head,
    score_options,
)


def test_registry_names_unknown_and_duplicates():
    assert set(HEADS) == {"lm", "classify", "regress", "embed", "mc_score"}
    assert get_head("classify") is ClassificationHead and get_head("mc_score") is MultipleChoiceScorer
    with pytest.raises(InputError, match="classify, embed, lm, mc_score, regress"):
        get_head("segment")
    with pytest.raises(InputError, match="already registered"):
        register_head("lm")(type("Other", (), {}))
    assert HEADS["lm"] is LMHead


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


def test_multiple_choice_scorer_reshapes_and_picks_argmax():
    logits = torch.zeros(6, 1, 3)  # B = 2, 3 options each, 1 answer token
    logits[2, 0, 1] = 4.0  # example 0 prefers option 2
    logits[3, 0, 1] = 4.0  # example 1 prefers option 0
    labels = torch.ones(6, 1, dtype=torch.long)
    out = MultipleChoiceScorer()(logits, labels, num_options=3, answer=torch.tensor([2, 1]))
    assert out.scores.shape == (2, 3) and out.prediction.tolist() == [2, 0]
    p_hi, p_lo = math.log(math.exp(4) / (math.exp(4) + 2)), math.log(1 / 3)
    torch.testing.assert_close(out.scores[0], torch.tensor([p_lo, p_lo, p_hi]))
    expected_loss = (F.cross_entropy(out.scores[:1], torch.tensor([2])) + F.cross_entropy(out.scores[1:], torch.tensor([1]))) / 2
    torch.testing.assert_close(out.loss, expected_loss)
    with pytest.raises(InputError, match="num_options"):
        MultipleChoiceScorer()(logits, labels, num_options=4)


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
    head = ClassificationHead(hidden_size=2, num_labels=3)
    short = head(hidden[:, :2], torch.ones(1, 2)).logits
    padded = head(hidden, torch.tensor([[1, 1, 0]])).logits
    torch.testing.assert_close(short, padded)


def test_classification_losses():
    torch.manual_seed(0)
    head = ClassificationHead(hidden_size=4, num_labels=3, pooling="first")
    hidden = torch.randn(2, 5, 4)
    out = head(hidden, labels=torch.tensor([1, 2]))
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, torch.tensor([1, 2])))
    torch.testing.assert_close(out.logits, head(hidden[:, :1]).logits)  # "first" only reads position 0
    multi = ClassificationHead(4, 3, multi_label=True)
    tags = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    m = multi(hidden, labels=tags)
    p = torch.sigmoid(m.logits)
    torch.testing.assert_close(m.loss, -(tags * p.log() + (1 - tags) * (1 - p).log()).mean())
    with pytest.raises(ConfigError, match="pooling"):
        ClassificationHead(4, 3, pooling="max")


def test_regression_mse():
    torch.manual_seed(0)
    head = RegressionHead(hidden_size=4, num_outputs=1)
    out = head(torch.randn(3, 2, 4), targets=torch.tensor([0.5, -1.0, 2.0]))
    assert out.predictions.shape == (3, 1)
    torch.testing.assert_close(out.loss, ((out.predictions[:, 0] - torch.tensor([0.5, -1.0, 2.0])) ** 2).mean())
    with pytest.raises(InputError, match="targets"):
        RegressionHead(4, 2)(torch.randn(3, 2, 4), targets=torch.zeros(3))


def test_lm_head_tied_logits_and_loss():
    torch.manual_seed(0)
    weight = torch.randn(5, 4)
    hidden = torch.randn(1, 2, 4)
    out = LMHead()(hidden, weight, labels=torch.tensor([[3, -100]]))
    torch.testing.assert_close(out.logits, hidden @ weight.T)
    torch.testing.assert_close(out.loss, -torch.log_softmax(out.logits[0, 0], -1)[3])
    scaled = LMHead(scale=0.5)(hidden, weight)
    torch.testing.assert_close(scaled.logits, 0.5 * hidden @ weight.T)
    assert scaled.loss is None

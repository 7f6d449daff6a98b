"""Metrics against hand-computed values and against pycocoevalcap's own scorers on the same pairs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from unified.errors import ConfigError, InputError
from unified.task_zoo.metrics import (
    CaptionScorer,
    box_iou,
    get_metric,
    rank_candidates,
    recall_at_k,
    register_metric,
    temporal_iou,
    tokenize,
)
from unified.tokenizers import Box

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR's jar needs a Java runtime")

PREDICTIONS = ["a red circle moves left", "two shapes appear", "a blue square moves up quickly", ""]
REFERENCES = [["a red circle moves to the left", "the red circle goes left"], ["two shapes appear one by one"],
              ["a blue square moves up", "the square rises"], ["a green triangle"]]


def test_box_and_span_iou_by_hand():
    assert box_iou([0, 0, 10, 10], [5, 5, 15, 15]) == pytest.approx(25 / 175)
    assert box_iou(Box(0, 0, 10, 10), None) == 0.0
    assert get_metric("accuracy_at_iou")([Box(0, 0, 10, 10), None], [Box(0, 0, 10, 12), Box(0, 0, 1, 1)]) == 0.5
    assert temporal_iou((1.0, 3.0), (2.0, 4.0)) == pytest.approx(1 / 3)
    assert get_metric("mean_temporal_iou")([(0.0, 1.0), None], [(0.0, 2.0), (1.0, 2.0)]) == pytest.approx(0.25)


def test_numbers_by_hand():
    assert get_metric("mae")([1.0, 2.0, 4.0], [1.0, 3.0, 1.0]) == pytest.approx(4 / 3)
    assert get_metric("rmse")([1.0, 2.0, 4.0], [1.0, 3.0, 1.0]) == pytest.approx(np.sqrt(10 / 3))
    # ranks with ties: x -> [1, 2.5, 2.5, 4], y -> [1, 2, 3, 4]; Pearson of the ranks
    rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4])
    expected = ((rx - rx.mean()) * (ry - ry.mean())).sum() / np.sqrt(((rx - rx.mean()) ** 2).sum()
                                                                       * ((ry - ry.mean()) ** 2).sum())
    assert get_metric("spearman")([1.0, 5.0, 5.0, 9.0], [10.0, 20.0, 30.0, 40.0]) == pytest.approx(expected)
    assert get_metric("spearman")([3.0, 2.0, 1.0], [1.0, 2.0, 3.0]) == pytest.approx(-1.0)


def test_recall_at_k_on_a_similarity_matrix():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.7, 0.1], [0.2, 0.9, 0.3]])
    assert rank_candidates(sim) == [[0, 1, 2], [0, 1, 2], [1, 2, 0]]
    assert recall_at_k(sim, [0, 1, 2], 1) == pytest.approx(1 / 3)
    assert recall_at_k(sim, [0, 1, 2], 2) == pytest.approx(1.0)
    assert get_metric("recall_at_1")(rank_candidates(sim), [0, {1, 0}, 2]) == pytest.approx(2 / 3)


def test_accuracy_and_label_distribution():
    assert get_metric("accuracy")(["The Red one.", "blue"], ["the red one", "green"]) == 0.5
    dist = get_metric("label_distribution")(["W", "W", "X", "W"], ["W", "X", "X", "Y"])
    assert dist == {"W": {"predicted": 0.75, "true": 0.25}, "X": {"predicted": 0.25, "true": 0.5},
                    "Y": {"predicted": 0.0, "true": 0.25}}


def test_errors():
    with pytest.raises(InputError, match="unknown"):
        get_metric("f1_magic")
    with pytest.raises(InputError, match="as many"):
        get_metric("mae")([1.0], [1.0, 2.0])
    with pytest.raises(InputError, match="nothing"):
        get_metric("accuracy")([], [])
    with pytest.raises(ConfigError, match="already registered"):
        register_metric("accuracy")(lambda p, t: 0.0)


@needs_java
def test_caption_metrics_equal_pycocoevalcap_on_the_same_pairs():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    res = {i: [tokenize(p) or "xxemptyxx"] for i, p in enumerate(PREDICTIONS)}
    gts = {i: [tokenize(r) for r in refs] for i, refs in enumerate(REFERENCES)}
    meteor = Meteor()
    try:
        official = meteor.compute_score(gts, res)[0]
    finally:
        meteor.meteor_p.kill()
    with CaptionScorer() as scorer:
        ours = scorer.score(PREDICTIONS, REFERENCES)
        pid = scorer.meteor_scorer().meteor_p.pid
        again = scorer.score(PREDICTIONS[:2], REFERENCES[:2])
        assert scorer.meteor_scorer().meteor_p.pid == pid  # one JVM for every call
    assert ours["meteor"] == pytest.approx(official)
    assert ours["bleu4"] == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0][3])
    assert ours["cider"] == pytest.approx(Cider().compute_score(gts, res)[0])
    assert ours["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0])
    assert 0 < again["meteor"] <= 1
    assert tokenize("A Red, circle!") == "a red circle"


def test_missing_java_says_what_to_install(monkeypatch):
    from unified.task_zoo import metrics

    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    with pytest.raises(metrics.MetricsUnavailable, match="Java"):
        CaptionScorer()
    CaptionScorer(metrics=("bleu4",))  # the pure-Python metrics need no Java


def test_retrieval_counts_identical_texts_as_one_candidate(monkeypatch):
    """Four clips, two of which share the caption "a red circle moves left.". An oracle embedding (each clip and
    each text mapped to a one-hot of its caption) must score recall@1 = 1: the shared caption is one candidate and
    right for both clips. Listing it twice would tie the two and count only the first clip (3/4)."""
    from unified.task_zoo import decoding, get_task

    captions = ["a red circle moves left.", "a blue square moves up.", "a red circle moves left.", "a green dot."]
    rows = [{"video": f"clip{i}.mp4", "text": t, "group": f"clip{i}"} for i, t in enumerate(captions)]
    code = {t: i for i, t in enumerate(dict.fromkeys(captions))}

    def oracle(task, model, processor, rows, *, batch_size=16, text_side=False):
        return torch.nn.functional.one_hot(torch.tensor([code[r["text"]] for r in rows]), len(code)).float()

    monkeypatch.setattr(decoding, "embed_rows", oracle)
    scores = decoding.pair_metrics(get_task("retrieval"), None, None, rows, batch_size=4)
    assert scores == {"recall_at_1": 1.0, "recall_at_5": 1.0}

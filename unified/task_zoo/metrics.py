"""Task metrics: a registry of `metric(predictions, truths) -> float`, and `CaptionScorer` for the COCO caption
metrics through pycocoevalcap (the official METEOR jar, one JVM per scorer).

    >>> get_metric("accuracy_at_iou")([Box(0, 0, 10, 10)], [Box(0, 0, 10, 12)])
    1.0
    >>> with CaptionScorer() as scorer:                 # one JVM for every call inside
    ...     scorer.score(["a red circle moves left"], [["a red circle moves to the left"]])
    {'meteor': 0.6..., 'cider': ..., 'bleu4': ..., 'rouge_l': ...}

Conventions: predictions and truths are lists of equal, non-zero length; an unparsable prediction (None) scores 0.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from unified.errors import ConfigError, InputError, UnifiedError

METRICS: dict[str, Callable[..., Any]] = {}
CAPTION_METRICS = ("meteor", "cider", "bleu4", "rouge_l")


def register_metric(name: str) -> Callable[[Callable], Callable]:
    def add(fn: Callable) -> Callable:
        if name in METRICS:
            raise ConfigError("metric name", name, "already registered; pick another name")
        METRICS[name] = fn
        return fn

    return add


def get_metric(name: str) -> Callable[..., Any]:
    if name not in METRICS:
        raise InputError("metric", name, f"unknown; known: {sorted(METRICS)}")
    return METRICS[name]


def list_metrics() -> list[str]:
    return sorted(METRICS)


def _pairs(predictions: Sequence[Any], truths: Sequence[Any]) -> None:
    if len(predictions) != len(truths):
        raise InputError("predictions", f"{len(predictions)} items", f"expected as many as truths ({len(truths)})")
    if not predictions:
        raise InputError("predictions", [], "nothing to score")


def normalise(text: Any) -> str:
    """Lower case, collapsed whitespace, no trailing full stop: "The Red one. " == "the red one"."""
    return " ".join(str(text).lower().split()).rstrip(".").strip()


# ------------------------------------------------------------------------------------------ exact match
@register_metric("accuracy")
def accuracy(predictions: Sequence[Any], truths: Sequence[Any]) -> float:
    _pairs(predictions, truths)
    return sum(normalise(p) == normalise(t) for p, t in zip(predictions, truths)) / len(truths)


# ------------------------------------------------------------------------------------------ tag sets
def _tag_lists(predictions: Sequence[Any], truths: Sequence[Any]) -> list[tuple[list[str], set[str]]]:
    """(ranked predicted tags without repeats, true tag set) per row; tags compared as `normalise` writes them."""
    _pairs(predictions, truths)
    out = []
    for predicted, true in zip(predictions, truths):
        ranked = list(dict.fromkeys(normalise(t) for t in (predicted or []) if normalise(t)))
        out.append((ranked, {normalise(t) for t in true if normalise(t)}))
    return out


@register_metric("tags_map")
def tags_map(predictions: Sequence[Any], truths: Sequence[Any]) -> float:
    """Mean over rows of the average precision of the ranked predicted tags: (1 / |true|) * the sum, over the ranks
    k holding a true tag, of precision at k (a true tag never predicted adds 0)."""
    scores = []
    for ranked, true in _tag_lists(predictions, truths):
        hits, total = 0, 0.0
        for k, tag in enumerate(ranked, start=1):
            if tag in true:
                hits += 1
                total += hits / k
        scores.append(total / len(true) if true else float(not ranked))
    return sum(scores) / len(scores)


@register_metric("tags_f1")
def tags_f1(predictions: Sequence[Any], truths: Sequence[Any]) -> float:
    """Micro F1 over every (row, tag): 2 * right / (predicted + true)."""
    pairs = _tag_lists(predictions, truths)
    right = sum(len(set(ranked) & true) for ranked, true in pairs)
    given = sum(len(ranked) + len(true) for ranked, true in pairs)
    return 2 * right / given if given else 1.0


@register_metric("tags_p_at_1")
def tags_precision_at_1(predictions: Sequence[Any], truths: Sequence[Any]) -> float:
    """The fraction of rows whose first predicted tag is true (precision at k = 1)."""
    return sum(bool(ranked) and ranked[0] in true for ranked, true in _tag_lists(predictions, truths)) / len(truths)


@register_metric("frame_recall_at_1")
def frame_recall_at_1(picked: Sequence[int], own: Sequence[int]) -> float:
    """The fraction of clips whose best-matching missing frame is their own (`masked_frames`)."""
    _pairs(picked, own)
    return sum(int(p) == int(o) for p, o in zip(picked, own)) / len(own)


@register_metric("label_distribution")
def label_distribution(predicted: Sequence[str], true: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per label: the fraction of predictions picking it vs the fraction of truths that are it."""
    _pairs(predicted, true)
    labels = sorted(set(predicted) | set(true))
    n = len(true)
    return {label: {"predicted": sum(p == label for p in predicted) / n, "true": sum(t == label for t in true) / n}
            for label in labels}


# ------------------------------------------------------------------------------------------ boxes and spans
def box_iou(a: Any, b: Any) -> float:
    """IoU of two (x0, y0, x1, y1) boxes; 0 when either is None or empty."""
    if a is None or b is None:
        return 0.0
    ax0, ay0, ax1, ay1 = map(float, a)
    bx0, by0, bx1, by1 = map(float, b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def temporal_iou(a: Any, b: Any) -> float:
    """IoU of two (start, end) spans in seconds; 0 when either is None or empty."""
    if a is None or b is None:
        return 0.0
    (a0, a1), (b0, b1) = sorted(map(float, a)), sorted(map(float, b))
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    union = max(a1, b1) - min(a0, b0)
    return inter / union if union > 0 else float(a0 == b0)


@register_metric("mean_iou")
def mean_iou(predictions, truths) -> float:
    _pairs(predictions, truths)
    return float(np.mean([box_iou(p, t) for p, t in zip(predictions, truths)]))


@register_metric("accuracy_at_iou")
def accuracy_at_iou(predictions, truths, threshold: float = 0.5) -> float:
    _pairs(predictions, truths)
    return float(np.mean([box_iou(p, t) >= threshold for p, t in zip(predictions, truths)]))


@register_metric("mean_temporal_iou")
def mean_temporal_iou(predictions, truths) -> float:
    _pairs(predictions, truths)
    return float(np.mean([temporal_iou(p, t) for p, t in zip(predictions, truths)]))


@register_metric("temporal_accuracy_at_iou")
def temporal_accuracy_at_iou(predictions, truths, threshold: float = 0.5) -> float:
    _pairs(predictions, truths)
    return float(np.mean([temporal_iou(p, t) >= threshold for p, t in zip(predictions, truths)]))


# ------------------------------------------------------------------------------------------ numbers
def _floats(predictions, truths) -> tuple[np.ndarray, np.ndarray]:
    _pairs(predictions, truths)
    return np.asarray(predictions, dtype=np.float64), np.asarray(truths, dtype=np.float64)


@register_metric("mae")
def mae(predictions, truths) -> float:
    p, t = _floats(predictions, truths)
    return float(np.abs(p - t).mean())


@register_metric("rmse")
def rmse(predictions, truths) -> float:
    p, t = _floats(predictions, truths)
    return float(math.sqrt(((p - t) ** 2).mean()))


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


@register_metric("spearman")
def spearman(predictions, truths) -> float:
    """Spearman's rank correlation (Pearson on average ranks); 0 when either side is constant."""
    p, t = _floats(predictions, truths)
    rp, rt = _ranks(p), _ranks(t)
    rp, rt = rp - rp.mean(), rt - rt.mean()
    denom = math.sqrt((rp ** 2).sum() * (rt ** 2).sum())
    return float((rp * rt).sum() / denom) if denom > 0 else 0.0


# ------------------------------------------------------------------------------------------ retrieval
def rank_candidates(similarity: Any) -> list[list[int]]:
    """(Q, C) similarity (tensor or array) -> each query's candidate ids, best first."""
    sim = similarity.detach().cpu().numpy() if hasattr(similarity, "detach") else np.asarray(similarity)
    return np.argsort(-sim, axis=1, kind="stable").tolist()


def _recall(ranked: Sequence[Sequence[int]], truths: Sequence[Any], k: int) -> float:
    _pairs(ranked, truths)
    hits = 0
    for candidates, truth in zip(ranked, truths):
        wanted = set(truth) if isinstance(truth, (set, list, tuple, frozenset)) else {truth}
        hits += bool(wanted & set(list(candidates)[:k]))
    return hits / len(truths)


def recall_at_k(similarity: Any, truth_index: Sequence[Any], k: int) -> float:
    """Fraction of queries whose right candidate is among the k most similar."""
    return _recall(rank_candidates(similarity), truth_index, k)


for _k in (1, 5, 10):
    register_metric(f"recall_at_{_k}")(lambda ranked, truths, _k=_k: _recall(ranked, truths, _k))


# ------------------------------------------------------------------------------------------ captions
class MetricsUnavailable(UnifiedError):
    """The caption metrics' dependencies are missing (pycocoevalcap or Java)."""


_PUNCT = re.compile(r"[^\w\s']")


def tokenize(text: str) -> str:
    """Lower case, punctuation removed, single spaces (what the COCO PTB tokenizer does to plain captions)."""
    return " ".join(_PUNCT.sub(" ", str(text).lower()).split())


class CaptionScorer:
    """METEOR, CIDEr, BLEU-4 and ROUGE-L through pycocoevalcap. One METEOR JVM per scorer, started on first use and
    stopped by `close()` / leaving the `with` block. Tokenisation is `tokenize` (no second Java process)."""

    def __init__(self, metrics: Sequence[str] = CAPTION_METRICS):
        unknown = sorted(set(metrics) - set(CAPTION_METRICS))
        if unknown:
            raise InputError("caption metrics", unknown, f"expected some of {CAPTION_METRICS}")
        self.metrics = tuple(metrics)
        self._meteor = None
        try:
            import pycocoevalcap  # noqa: F401
        except ImportError:
            raise MetricsUnavailable("caption metrics need pycocoevalcap: pip install 'unified[metrics]'") from None
        if "meteor" in self.metrics and shutil.which("java") is None:
            raise MetricsUnavailable("METEOR runs the official jar and needs Java: install a Java runtime "
                                     "(e.g. apt install default-jre-headless) so that `java` is on PATH")

    def __enter__(self) -> CaptionScorer:  # noqa: PYI034  (typing.Self needs Python 3.11; we support 3.10)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._meteor is not None:
            meteor, self._meteor = self._meteor, None
            with meteor.lock:
                meteor.meteor_p.stdin.close()
                meteor.meteor_p.kill()
                meteor.meteor_p.wait()

    def meteor_scorer(self):
        if self._meteor is None:
            from pycocoevalcap.meteor.meteor import Meteor

            self._meteor = Meteor()
        return self._meteor

    def score(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
        _pairs(predictions, references)
        # METEOR's jar rejects an empty hypothesis: an empty prediction becomes a word no reference contains.
        res = {i: [tokenize(p) or "xxemptyxx"] for i, p in enumerate(predictions)}
        gts = {i: [tokenize(r) for r in refs] or [""] for i, refs in enumerate(references)}
        out = {}
        if "meteor" in self.metrics:
            out["meteor"] = float(self.meteor_scorer().compute_score(gts, res)[0])  # the jar's corpus score
        if "cider" in self.metrics:
            from pycocoevalcap.cider.cider import Cider

            out["cider"] = float(Cider().compute_score(gts, res)[0])
        if "bleu4" in self.metrics:
            from pycocoevalcap.bleu.bleu import Bleu

            out["bleu4"] = float(Bleu(4).compute_score(gts, res, verbose=0)[0][3])
        if "rouge_l" in self.metrics:
            from pycocoevalcap.rouge.rouge import Rouge

            out["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
        return out


def _caption_metric(name: str) -> Callable[[Sequence[str], Sequence[Sequence[str]]], float]:
    def metric(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
        with CaptionScorer(metrics=(name,)) as scorer:
            return scorer.score(predictions, references)[name]

    metric.__name__ = name
    return metric


for _name in CAPTION_METRICS:
    register_metric(_name)(_caption_metric(_name))

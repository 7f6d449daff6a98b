"""Task heads, picked by name: `get_head("classify")(hidden_size=512, num_labels=7)`.

    HEADS = {"lm": LMHead, "classify": ClassificationHead, "regress": RegressionHead,
             "embed": EmbeddingHead, "mc_score": MultipleChoiceScorer}

Each head returns a small dataclass whose `loss` is set when targets are given. The built-ins are imported here
explicitly so the registry is complete once `unified.heads` is imported; registering a taken name raises.
"""

from unified.heads.classification import ClassificationHead, ClassificationOutput
from unified.heads.embedding import EmbeddingHead, EmbeddingOutput, info_nce
from unified.heads.lm import LMHead, LMOutput
from unified.heads.multiple_choice import MultipleChoiceOutput, MultipleChoiceScorer, score_options
from unified.heads.pooling import masked_mean
from unified.heads.registry import HEADS, get_head, list_heads, register_head
from unified.heads.regression import RegressionHead, RegressionOutput

__all__ = [
    "HEADS",
    "ClassificationHead",
    "ClassificationOutput",
    "EmbeddingHead",
    "EmbeddingOutput",
    "LMHead",
    "LMOutput",
    "MultipleChoiceOutput",
    "MultipleChoiceScorer",
    "RegressionHead",
    "RegressionOutput",
    "get_head",
    "info_nce",
    "list_heads",
    "masked_mean",
    "register_head",
    "score_options",
]

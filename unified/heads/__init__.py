"""What sits on top of the shared encoder-decoder besides its tied LM head.

Every task answers through the LM head over the one vocabulary: classification writes a label under the "options"
grammar, regression writes value tokens, grounding location tokens (the OFA / Gato / Florence-2 design: one head,
many grammars). What is left here is what that head cannot do:

    EmbeddingHead     pooled states -> projection -> L2 norm; `info_nce` trains it (contrastive tasks)
    score_options     length-normalised log-likelihood of each option's tokens (multiple choice in "rank" mode)
    masked_mean       pooling that ignores padding
"""

from unified.heads.embedding import EmbeddingHead, EmbeddingOutput, info_nce
from unified.heads.multiple_choice import score_options
from unified.heads.pooling import masked_mean

__all__ = ["EmbeddingHead", "EmbeddingOutput", "info_nce", "masked_mean", "score_options"]

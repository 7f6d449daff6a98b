"""The shared vocabulary: text (SentencePiece), media placeholders, location, value, integer and time tokens.

`UnifiedTokenizer` maps text with inline tokens to one id space; the modules below turn boxes, points, numbers
and times into those inline token strings and back, so they compose with ``UnifiedTokenizer.encode``:

    vocabulary.py   UnifiedTokenizer                    layout.py   VocabLayout (range sizes)
    text.py         SentencePiece training and loading  grammar.py  how tokens are written and parsed
    boxes.py        Box, boxes and points <loc_i>       values.py   mu-law values <val_i>, integers <int_i>
    times.py        times and spans <time_i>

Example:
    >>> tok = UnifiedTokenizer.train(corpus, text_vocab_size=8000)
    >>> ids = tok.encode("the dog " + tok.box_to_tokens((10, 20, 300, 400), image_size=(640, 480)))
    >>> tok.tokens_to_box(tok.decode(ids), image_size=(640, 480))
"""

from unified.tokenizers.boxes import Box, box_to_tokens, point_to_tokens, tokens_to_box, tokens_to_point
from unified.tokenizers.grammar import MEDIA_TOKENS, SPECIAL_TOKENS, format_token
from unified.tokenizers.layout import VocabLayout
from unified.tokenizers.text import TextModel, train_text_tokenizer
from unified.tokenizers.times import span_to_tokens, time_to_token, token_to_time, tokens_to_span
from unified.tokenizers.values import (
    MU_LAW_M,
    MU_LAW_MU,
    bin_to_value,
    int_to_tokens,
    inverse_mu_law,
    mu_law,
    tokens_to_ints,
    tokens_to_values,
    value_error_bound,
    value_to_bin,
    values_to_tokens,
)
from unified.tokenizers.vocabulary import UnifiedTokenizer

__all__ = [
    "MEDIA_TOKENS",
    "MU_LAW_M",
    "MU_LAW_MU",
    "SPECIAL_TOKENS",
    "Box",
    "TextModel",
    "UnifiedTokenizer",
    "VocabLayout",
    "bin_to_value",
    "box_to_tokens",
    "format_token",
    "int_to_tokens",
    "inverse_mu_law",
    "mu_law",
    "point_to_tokens",
    "span_to_tokens",
    "time_to_token",
    "token_to_time",
    "tokens_to_box",
    "tokens_to_ints",
    "tokens_to_point",
    "tokens_to_span",
    "tokens_to_values",
    "train_text_tokenizer",
    "value_error_bound",
    "value_to_bin",
    "values_to_tokens",
]

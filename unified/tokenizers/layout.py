"""`VocabLayout`: the sizes of the non-text ranges of the shared vocabulary.

The id space, in this order (T = text pieces, from the SentencePiece model; N, V, I, K from the layout)::

    specials   0..3                 <pad> </s> <unk> <s>
    text       4 .. 4+T-1           SentencePiece pieces (its own control pieces excluded)
    media      3 ids                <image> <video> <audio>
    loc        N ids                <loc_0>..<loc_{N-1}>      box and point coordinates (OFA, Florence-2)
    val        V ids                <val_0>..<val_{V-1}>      mu-law binned continuous values (Gato)
    int        I ids                <int_0>..<int_{I-1}>      discrete values (Gato's shifted integers)
    time       K ids                <time_0>..<time_{K-1}>    relative positions in a clip (Vid2Seq)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from unified.errors import ConfigError


@dataclass(frozen=True)
class VocabLayout:
    """Sizes of the location, value, integer and time ranges; validated on construction.

    Example:
        >>> VocabLayout(num_loc_bins=100).num_loc_bins
        100
        >>> VocabLayout(num_time_bins=0)
        Traceback (most recent call last):
        unified.errors.ConfigError: config field 'num_time_bins'=0: expected an int >= 2
    """

    num_loc_bins: int = 1000  # OFA / Florence-2: 1000 bins per coordinate
    num_value_bins: int = 1024  # Gato: 1024 uniform bins over the mu-law companded range [-1, 1]
    num_int_tokens: int = 256  # discrete values 0..255, e.g. a byte or a class index
    num_time_bins: int = 100  # Vid2Seq: 100 relative time bins per clip

    def __post_init__(self) -> None:
        # Locations and times are dequantised as bin / (n - 1), so they need two bins; the others need one.
        for field, minimum in (("num_loc_bins", 2), ("num_value_bins", 1), ("num_int_tokens", 1),
                               ("num_time_bins", 2)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(field, value, f"expected an int >= {minimum}")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VocabLayout:
        """Build from a mapping (as saved in ``unified_tokenizer.json``); unknown keys raise `ConfigError`."""
        if not isinstance(data, Mapping):
            raise ConfigError("layout", data, "expected a mapping of field names to sizes")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(str(key), data[key], f"unknown layout field; known: {sorted(known)}")
        return cls(**data)

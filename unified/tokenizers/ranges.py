"""What both vocabularies share (`UnifiedTokenizer`, `BackboneTokenizer`): the appended ranges of media
placeholders and numbered tokens, looked up in `self.id_ranges`, and the modality helpers that write and read
them with this vocabulary's `VocabLayout` sizes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from unified.errors import InputError
from unified.tokenizers import boxes as _boxes
from unified.tokenizers import times as _times
from unified.tokenizers import values as _values
from unified.tokenizers.grammar import TOKEN_RE, parse_index
from unified.tokenizers.layout import VocabLayout


class NumberedRanges:
    """Mixin: needs `id_ranges` ({"media", "loc", "val", "int", "time", ...: range}, "time" last), `layout`
    (a `VocabLayout`), `_fixed` ({special or media token string: id}) and `decode`."""

    id_ranges: dict[str, range]
    layout: VocabLayout
    _fixed: dict[str, int]

    @property
    def vocab_size(self) -> int:
        return self.id_ranges["time"].stop

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def media_ids(self) -> range:
        return self.id_ranges["media"]

    @property
    def image_token_id(self) -> int:
        return self.media_ids[0]

    @property
    def video_token_id(self) -> int:
        return self.media_ids[1]

    @property
    def audio_token_id(self) -> int:
        return self.media_ids[2]

    @property
    def loc_ids(self) -> range:
        return self.id_ranges["loc"]

    @property
    def val_ids(self) -> range:
        return self.id_ranges["val"]

    @property
    def int_ids(self) -> range:
        return self.id_ranges["int"]

    @property
    def time_ids(self) -> range:
        return self.id_ranges["time"]

    @property
    def first_non_text_id(self) -> int:
        """Every id from here up is a media placeholder, a numbered token or an unused row: what free text may not
        write (`unified.model.generation.TextOnlyLogitsProcessor`)."""
        return min(self.media_ids.start, getattr(self, "text_stop", self.media_ids.start))

    @property
    def ordinal_ranges(self) -> list[list[int]]:
        """[[start, stop], ...] of the numbered ranges whose order means distance (loc, val, time), for
        `TextConfig.ordinal_ranges`."""
        return [[ids.start, ids.stop] for ids in (self.loc_ids, self.val_ids, self.time_ids)]

    # ------------------------------------------------------------------ modality helpers with this layout's sizes
    def box_to_tokens(self, box: Any, image_size: Sequence[float]) -> str:
        return _boxes.box_to_tokens(box, image_size, num_bins=self.layout.num_loc_bins)

    def tokens_to_box(self, text: str, image_size: Sequence[float]) -> _boxes.Box:
        return _boxes.tokens_to_box(text, image_size, num_bins=self.layout.num_loc_bins)

    def point_to_tokens(self, point: Sequence[float], image_size: Sequence[float]) -> str:
        return _boxes.point_to_tokens(point, image_size, num_bins=self.layout.num_loc_bins)

    def tokens_to_point(self, text: str, image_size: Sequence[float]) -> tuple[float, float]:
        return _boxes.tokens_to_point(text, image_size, num_bins=self.layout.num_loc_bins)

    def values_to_tokens(self, values: float | Sequence[float], *, scale: float = 1.0) -> str:
        return _values.values_to_tokens(values, num_bins=self.layout.num_value_bins, scale=scale)

    def tokens_to_values(self, text: str, *, scale: float = 1.0) -> list[float]:
        return _values.tokens_to_values(text, num_bins=self.layout.num_value_bins, scale=scale)

    def int_to_tokens(self, n: int | Sequence[int]) -> str:
        return _values.int_to_tokens(n, num_tokens=self.layout.num_int_tokens)

    def tokens_to_ints(self, text: str) -> list[int]:
        return _values.tokens_to_ints(text, num_tokens=self.layout.num_int_tokens)

    def time_to_token(self, seconds: float, duration: float) -> str:
        return _times.time_to_token(seconds, duration, num_bins=self.layout.num_time_bins)

    def token_to_time(self, token_or_text: str, duration: float) -> float:
        return _times.token_to_time(token_or_text, duration, num_bins=self.layout.num_time_bins)

    def span_to_tokens(self, start: float, end: float, duration: float) -> str:
        return _times.span_to_tokens(start, end, duration, num_bins=self.layout.num_time_bins)

    def tokens_to_span(self, text: str, duration: float) -> tuple[float, float]:
        return _times.tokens_to_span(text, duration, num_bins=self.layout.num_time_bins)

    def decode_batch(self, batch: Iterable[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        if hasattr(batch, "tolist"):
            batch = batch.tolist()
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in batch]

    def batch_decode(self, sequences: Iterable[Sequence[int]], skip_special_tokens: bool = True,
                     **kwargs: Any) -> list[str]:
        """transformers' name for `decode_batch` (a (B, L) tensor or lists of ids -> B strings). Other transformers
        options (`clean_up_tokenization_spaces`) do not apply to this vocabulary and raise rather than be ignored."""
        if kwargs:
            raise InputError("batch_decode options", sorted(kwargs), "not supported; this vocabulary takes "
                             "skip_special_tokens only")
        return self.decode_batch(sequences, skip_special_tokens=skip_special_tokens)

    def _inline_id(self, token: str) -> int | None:
        """The id of a special, media or numbered token string (``"</s>"``, ``"<video>"``, ``"<loc_12>"``); None for
        any other string."""
        if token in self._fixed:
            return self._fixed[token]
        match = TOKEN_RE.fullmatch(token)
        return self._numbered_id(match) if match is not None else None

    def _numbered_id(self, match) -> int:
        # Numbered tokens are checked against this layout, so <loc_999> is an error when num_loc_bins=500.
        kind = match.group(1)
        ids = self.id_ranges[kind]
        return ids[parse_index(match.group(0), kind, match.group(2), len(ids))]

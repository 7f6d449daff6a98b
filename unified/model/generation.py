"""Constrained decoding: logits processors that let the decoder write only what a task's grammar allows
(location tokens for a box, time tokens for a span, value tokens for numbers, one of the option labels).

    >>> allowed = list(tok.loc_ids) + [tok.eos_token_id]
    >>> model.generate(**batch, logits_processor=constrained_processors(allowed), max_new_tokens=5)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from unified.errors import InputError


class AllowedTokensLogitsProcessor(LogitsProcessor):
    """Set every score outside `allowed_ids` to -inf (per example when given a list of id lists).

    `sequences` (optional): allowed token sequences, e.g. option labels that take several tokens; at each step only
    tokens that continue one of the sequences matching what was written so far are allowed, then eos.
    """

    def __init__(self, allowed_ids: Iterable[int] | None = None, *, sequences: Sequence[Sequence[int]] | None = None,
                 eos_token_id: int | None = None, prompt_length: int = 1):
        if allowed_ids is None and not sequences:
            raise InputError("allowed_ids", allowed_ids, "give allowed ids or allowed sequences")
        self.allowed = sorted(set(allowed_ids)) if allowed_ids is not None else None
        self.sequences = [list(s) for s in sequences] if sequences else None
        self.eos, self.prompt_length = eos_token_id, prompt_length

    def _step_allowed(self, written: list[int]) -> list[int]:
        nxt = {seq[len(written)] for seq in self.sequences
               if len(seq) > len(written) and seq[: len(written)] == written}
        if any(seq == written for seq in self.sequences) and self.eos is not None:
            nxt.add(self.eos)
        return sorted(nxt) or ([self.eos] if self.eos is not None else [])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        keep = torch.zeros_like(scores, dtype=torch.bool)  # (B, V)
        if self.sequences is None:
            keep[:, self.allowed] = True
        else:
            for b, row in enumerate(input_ids.tolist()):
                keep[b, self._step_allowed(row[self.prompt_length:])] = True
        return scores.masked_fill(~keep, float("-inf"))


class BinsLogitsProcessor(LogitsProcessor):
    """Numbered tokens only (`ids`: a box's location tokens, a span's time tokens), optionally limited to the bins
    `bins` (indices into `ids`, a value range), and ordered: for each pair (later, earlier) in `increasing`, the
    later token's bin must exceed the earlier one's (a box's x2 > x1 and y2 > y1, a span's end > start). The earlier
    token then leaves room: its bin stays below the highest allowed one."""

    def __init__(self, ids: range, *, bins: range | None = None, increasing: Sequence[tuple[int, int]] = (),
                 prompt_length: int = 1):
        self.ids, self.prompt_length = ids, prompt_length
        self.bins = bins if bins is not None else range(len(ids))
        if not len(self.bins) or self.bins.step != 1:
            raise InputError("allowed bins", self.bins, "expected a non-empty range of consecutive bins")
        if increasing and len(self.bins) < 2:
            raise InputError("allowed bins", self.bins, "an ordered answer needs at least two bins")
        self.increasing = [tuple(pair) for pair in increasing]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        keep = torch.zeros_like(scores, dtype=torch.bool)  # (B, V)
        for b, row in enumerate(input_ids.tolist()):
            written = [t - self.ids.start for t in row[self.prompt_length:]]
            step = len(written)
            low, high = self.bins.start, self.bins.stop  # allowed bins [low, high)
            for later, earlier in self.increasing:
                if later == step and earlier < step:
                    low = max(low, written[earlier] + 1)
                if earlier == step:
                    high = min(high, self.bins.stop - 1)
            keep[b, self.ids.start + low:self.ids.start + max(low + 1, high)] = True
        return scores.masked_fill(~keep, float("-inf"))


class TextOnlyLogitsProcessor(LogitsProcessor):
    """Free text: no media placeholder, numbered token (location, value, integer, time) or unused row may be written;
    `first_non_text` is the first such id (every id from there up is closed), `closed` a few more (pad)."""

    def __init__(self, first_non_text: int, closed: Iterable[int] = ()):
        self.first_non_text, self.closed = first_non_text, sorted({int(i) for i in closed})

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        scores[:, self.first_non_text:] = float("-inf")
        if self.closed:
            scores[:, self.closed] = float("-inf")
        return scores


def constrained_processors(allowed_ids: Iterable[int] | None = None, **kwargs) -> LogitsProcessorList:
    """A `LogitsProcessorList` with one `AllowedTokensLogitsProcessor`, ready for `generate(logits_processor=...)`."""
    return LogitsProcessorList([AllowedTokensLogitsProcessor(allowed_ids, **kwargs)])

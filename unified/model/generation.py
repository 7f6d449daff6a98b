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


def constrained_processors(allowed_ids: Iterable[int] | None = None, **kwargs) -> LogitsProcessorList:
    """A `LogitsProcessorList` with one `AllowedTokensLogitsProcessor`, ready for `generate(logits_processor=...)`."""
    return LogitsProcessorList([AllowedTokensLogitsProcessor(allowed_ids, **kwargs)])

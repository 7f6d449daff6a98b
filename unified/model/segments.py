"""Segment ids as attention masks: several examples packed in one row never see each other.

A packed batch carries `segment_ids` (B, L) and `decoder_segment_ids` (B, Lt): segment k >= 1 is the row's k-th
example, 0 is padding. `segment_mask` turns a pair of them into a block-diagonal boolean mask (encoder
self-attention, decoder self-attention with the causal mask on top, and cross-attention), and
`shift_right_segments` restarts each example's decoder input at the start token. Rotary positions are relative,
so an example's attention does not depend on where in the row it sits. How rows are packed is the training data's
business (`unified.training.packing`).
"""

from __future__ import annotations

import torch


def segment_mask(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """bool (B, 1, Lq, Lk): position i may attend to j when both belong to the same example (segment ids >= 1)."""
    return (query[:, None, :, None] == key[:, None, None, :]) & (key > 0)[:, None, None, :]


def segment_positions(segments: torch.Tensor) -> torch.Tensor:
    """(B, L) long: each position's index within its own example (0 at every example's first position), for
    backbones whose positions are learned and absolute (BART)."""
    index = torch.arange(segments.shape[1], device=segments.device).expand_as(segments)
    first = torch.ones_like(segments, dtype=torch.bool)
    first[:, 1:] = segments[:, 1:] != segments[:, :-1]
    start = torch.where(first, index, torch.zeros_like(index)).cummax(dim=1).values  # (B, L)
    return index - start


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask as the additive float mask transformers' attention takes ready-made (4-D masks are used as
    given): 0 where allowed, the dtype's lowest value elsewhere."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def causal_segment_mask(segments: torch.Tensor) -> torch.Tensor:
    """bool (B, 1, Lt, Lt): a decoder position sees its own example's positions up to itself."""
    n = segments.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=segments.device).tril()
    return segment_mask(segments, segments) & causal


def shift_right_segments(labels: torch.Tensor, segments: torch.Tensor, start: int, pad: int) -> torch.Tensor:
    """Decoder inputs of packed targets (B, Lt): each example's targets shifted right behind its own start token."""
    shifted = labels.new_full(labels.shape, start)
    shifted[:, 1:] = labels[:, :-1]
    first = torch.ones_like(segments, dtype=torch.bool)
    first[:, 1:] = segments[:, 1:] != segments[:, :-1]  # an example's first target position
    shifted = shifted.masked_fill(first, start)
    return shifted.masked_fill(shifted == -100, pad)

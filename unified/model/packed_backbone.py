"""How each pretrained encoder-decoder family takes packed examples (several rows in one sequence, `segment_ids`);
every family of `unified.model.backbone.FAMILIES` packs (each tested: per-token log-probabilities as alone).

    T5 / mT5 / umT5  relative position buckets: a block-diagonal 4-D mask is enough
    BART             learned absolute positions, restarted per example (`PositionHooks`), plus the 4-D mask
    T5Gemma (2)      RoPE: `position_ids` restarted per example; sliding-window layers: one mask per layer type, a dict
                     {"full_attention": ..., "sliding_attention": ...} that their encoder and decoder use as given,
                     the window laid inside each example's block as the family draws it

Every mask is additive (0 allowed, the dtype's lowest value elsewhere): transformers uses a 4-D mask as given, and
eager and SDPA attention both take that form. An example sits in one contiguous stretch of its row, so a window of
distances in the row is the same window within the example.

Axis legend: B batch, L encoder length, Lt decoder length.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unified.errors import InputError
from unified.model.segments import additive_mask, causal_segment_mask, segment_mask, segment_positions

ROPE = ("t5gemma", "t5gemma2")  # rotary positions, sliding-window layers


def _window(kind: str, n: int, window: int, causal: bool, device) -> torch.Tensor:
    """bool (n, n): query i may see key j within the family's sliding window (distance i - j in the sequence)."""
    index = torch.arange(n, device=device)
    dist = index[:, None] - index[None, :]  # (n, n)
    if causal:  # transformers' sliding causal mask: the last `window` positions, itself included
        return (dist >= 0) & (dist < window)
    if kind == "t5gemma2":  # its own bidirectional window: (w + 1) // 2 behind (itself included), w // 2 ahead
        return ((dist >= 0) & (dist < (window + 1) // 2)) | ((dist < 0) & (-dist < window // 2 + 1))
    return dist.abs() <= window  # T5Gemma: transformers' bidirectional window, both ends included


def _per_layer_type(kind: str, config, allowed: torch.Tensor, causal: bool, dtype: torch.dtype):
    """The additive mask, or for a family with sliding-window layers a dict of one per layer type."""
    if kind not in ROPE:
        return additive_mask(allowed, dtype)
    masks, window = {}, getattr(config, "sliding_window", None)
    # both keys always: T5Gemma 2's decoder reads both to merge them with its cross-attention mask
    for name in {"full_attention", "sliding_attention", *(getattr(config, "layer_types", None) or ())}:
        if name == "full_attention" or (name == "sliding_attention" and window is None):
            masks[name] = additive_mask(allowed, dtype)
        elif name == "sliding_attention":
            masks[name] = additive_mask(allowed & _window(kind, allowed.shape[-1], int(window), causal,
                                                          allowed.device), dtype)
        else:
            raise InputError("segment_ids", name, f"a {kind} layer type packing does not know; turn data.pack off")
    return masks


def _module_config(module: nn.Module):
    # T5Gemma 2's encoder holds its text stack (and its sizes) in `.text_model`
    return getattr(module, "text_model", module).config


def decoder_start(lm: nn.Module) -> tuple[int, int]:
    """(start, pad): the token ids the family's own shift of labels into decoder inputs uses (T5Gemma's are its
    decoder config's bos and pad; T5's and BART's the top-level decoder_start and pad)."""
    config = lm.config
    if config.model_type in ROPE:
        return int(config.decoder.bos_token_id), int(config.decoder.pad_token_id)
    start = config.decoder_start_token_id
    return int(config.pad_token_id if start is None else start), int(config.pad_token_id)


def packed_encoder_inputs(lm: nn.Module, segments: torch.Tensor, dtype: torch.dtype) -> dict[str, Any]:
    """Keyword arguments for the backbone's encoder on a packed row: `attention_mask` (block-diagonal), and
    `position_ids` (B, L) restarted per example for a RoPE family. `segments` (B, L): 0 = padding."""
    kind = lm.config.model_type
    config = _module_config(lm.get_encoder())
    out: dict[str, Any] = {"attention_mask": _per_layer_type(kind, config, segment_mask(segments, segments), False,
                                                             dtype)}
    if kind in ROPE:
        out["position_ids"] = segment_positions(segments)
    return out


def packed_decoder_inputs(lm: nn.Module, segments: torch.Tensor, encoder_segments: torch.Tensor,
                          dtype: torch.dtype) -> dict[str, Any]:
    """Keyword arguments for the backbone's seq2seq forward on packed targets (B, Lt): `decoder_attention_mask`
    (causal within each example), `attention_mask` (each example's targets see its own encoder positions) and, for
    a RoPE family, `decoder_position_ids` restarted per example."""
    kind = lm.config.model_type
    config = _module_config(lm.get_decoder())
    cross = additive_mask(segment_mask(segments, encoder_segments), dtype)  # (B, 1, Lt, L)
    out: dict[str, Any] = {
        "decoder_attention_mask": _per_layer_type(kind, config, causal_segment_mask(segments), True, dtype),
        "attention_mask": {"full_attention": cross} if kind in ROPE else cross}  # cross-attention: full, never slid
    if kind in ROPE:
        out["decoder_position_ids"] = segment_positions(segments)
    return out

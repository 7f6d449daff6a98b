"""Packing: several short examples in one encoder sequence and one decoder sequence, rows never seeing each other.

    items = [processor.process(example) for example in examples]
    packed = pack_items(items)              # fewer items; each holds `segment_ids` / `decoder_segment_ids`
    batch = processor.collate(packed)       # + segment_ids (B, L), decoder_segment_ids (B, Lt): 0 = padding
    model(**batch).loss                     # the same token-mean loss as the unpacked batch

Segment k of a packed row is its k-th example (k >= 1). The model turns segment ids into block-diagonal masks
(`unified.model.segments.segment_mask`): an encoder position attends only to its own example's positions (media
latents spliced in take their placeholder's segment), a decoder position only to its own example's earlier targets
and its own example's encoder positions, and each example's decoder input starts again from the start token
(`unified.model.segments.shift_right_segments`). Rotary positions are relative, so an example's attention does not
depend on where in the pack it sits: a packed row's per-token losses equal each example's alone (tested to 1e-5).

`pack_items` is first-fit decreasing under the batch's own bounds: a pack is never longer (prompt tokens, target
tokens) than the longest example, nor holds more visual or audio items than the example with most, so padding
shrinks and no dimension of the batch grows (except the spliced encoder length, by at most the latents of one
item per extra example). Packing needs the model's own backbone with `fusion.mode: concat`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unified.errors import InputError


def pack_items(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Processed examples (`UnifiedProcessor.process`, with targets) -> packed items, in first-fit-decreasing
    order; each packed item has `segment_ids` (L,), `decoder_segment_ids` (Lt,), `segments` (how many) and
    `members` (the indices of the items it holds, in segment order)."""
    if not items or any("labels" not in it for it in items):
        raise InputError("pack", "examples without targets", "packing is for training: every example needs a target")
    cap_text = max(len(it["input_ids"]) for it in items)
    cap_target = max(len(it["labels"]) for it in items)
    cap_vis = max(len(it["pixel_values"]) for it in items)
    cap_aud = max(len(it["audio_features"]) for it in items)
    bins: list[list[int]] = []
    used: list[list[int]] = []  # per bin: text, target, visual items, audio items
    order = sorted(range(len(items)), key=lambda i: (-len(items[i]["input_ids"]), -len(items[i]["labels"]), i))
    for i in order:
        need = [len(items[i]["input_ids"]), len(items[i]["labels"]), len(items[i]["pixel_values"]),
                len(items[i]["audio_features"])]
        for b, have in enumerate(used):
            if all(h + n <= c for h, n, c in zip(have, need, (cap_text, cap_target, cap_vis, cap_aud))):
                bins[b].append(i)
                used[b] = [h + n for h, n in zip(have, need)]
                break
        else:
            bins.append([i])
            used.append(need)
    return [_concat([items[i] for i in members], members) for members in bins]


def _concat(items: Sequence[dict[str, Any]], members: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "members": list(members),  # which of the given items, segment k+1 being members[k]
        "input_ids": torch.cat([it["input_ids"] for it in items]),
        "labels": torch.cat([it["labels"] for it in items]),
        "segment_ids": torch.cat([torch.full((len(it["input_ids"]),), k + 1) for k, it in enumerate(items)]),
        "decoder_segment_ids": torch.cat([torch.full((len(it["labels"]),), k + 1) for k, it in enumerate(items)]),
        "segments": len(items),
    }
    for key in ("pixel_values", "frame_times", "frame_time_ids", "audio_features"):
        out[key] = [x for it in items for x in it[key]]  # media in prompt order, example after example
    return out

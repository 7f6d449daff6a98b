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
item per extra example). Packing needs the model's own backbone with `fusion.mode` `concat` or `xattn`.

Token-budget packing (`data.pack_length`, `data.pack_target_length`) packs to fixed lengths instead: the planner
draws rows into a buffer, measures each (`measure_row`: its prompt drawn with `row_rng`, tokenised, no media
decoded), packs the buffer under `PackLimits` (`pack_to_budget`) and hands the `optim.batch_size` fullest packs to
the workers as the plan's `packs`; the rows left over wait in the buffer for the next plan. A worker draws each
row's prompt with the same `row_rng`, so its tokens are those that were measured.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from unified.errors import InputError

Need = tuple[int, int, int, int]  # (prompt tokens, target tokens, visual items, audio items) of one row


@dataclass(frozen=True)
class PackLimits:
    """What one pack may hold: prompt tokens (the encoder length before media are spliced in), target tokens
    (the decoder length), visual items (images and videos) and audio items."""

    length: int
    target_length: int
    visual: int
    audio: int

    def as_tuple(self) -> Need:
        return (self.length, self.target_length, self.visual, self.audio)


def first_fit_decreasing(needs: Sequence[Need], limits: Need) -> list[list[int]]:
    """Rows' needs -> packs (lists of row indices, each in the order its rows were placed): rows by decreasing
    (prompt, target) length, each into the first pack it fits. A row over the limits alone is a pack of its own."""
    packs: list[list[int]] = []
    used: list[list[int]] = []  # per pack: prompt, target, visual, audio
    for i in sorted(range(len(needs)), key=lambda i: (-needs[i][0], -needs[i][1], i)):
        for b, have in enumerate(used):
            if all(h + n <= c for h, n, c in zip(have, needs[i], limits)):
                packs[b].append(i)
                used[b] = [h + n for h, n in zip(have, needs[i])]
                break
        else:
            packs.append([i])
            used.append(list(needs[i]))
    return packs


def pack_to_budget(needs: Sequence[Need], limits: Need) -> list[list[int]]:
    """Rows' needs -> packs under `limits` (lists of row indices, in the order their rows were placed), by the
    dot-product greedy for vector bin packing: a pack opens with the largest row left (prompt and target fill
    summed) and then takes, while any fits, the row whose fill points most along the pack's free room. Prompt and
    target lengths do not grow together (a caption is a short prompt and a long target; multiple choice the
    reverse), and plain first-fit decreasing packs captions with captions and questions with questions: on the
    shapes-small mixture at 160 / 32 tokens it left 22 % of both lengths padding, this greedy 10 %
    (`benchmarks/padding.py`). A row over the limits alone is a pack of its own."""
    if not len(needs):
        return []
    size = np.asarray(needs, dtype=np.float64)  # (N, 4)
    cap = np.asarray(limits, dtype=np.float64)  # (4,)
    scale = size[:, :2] / cap[:2]  # (N, 2) prompt and target fill
    left = np.ones(len(needs), dtype=bool)
    packs = []
    for first in np.lexsort((np.arange(len(needs)), -scale.sum(1))):
        if not left[first]:
            continue
        left[first] = False
        pack, used = [int(first)], size[first].copy()
        while True:
            fits = left & np.all(size + used <= cap, axis=1)
            if not fits.any():
                break
            room = 1.0 - used[:2] / cap[:2]
            best = int(np.argmax(np.where(fits, scale @ room, -np.inf)))
            left[best] = False
            pack.append(best)
            used += size[best]
        packs.append(pack)
    return packs


# Rows drawn until the buffer holds this many batches' worth of prompt, target or media: the fullest packs become the
# batch, and the other rows wait to fill the next plan's packs.
PACK_BUFFER = 1.25


def lower_bound(needs: Sequence[Need], limits: Need) -> float:
    """At least how many packs these rows fill (their largest total over the limits, by dimension)."""
    return max(sum(n[k] for n in needs) / limits[k] for k in range(4)) if needs else 0.0


def fullest(packs: Sequence[Sequence[int]], needs: Sequence[Need], limits: PackLimits, count: int
            ) -> list[list[int]]:
    """The `count` fullest packs (by prompt and target fill summed; a row over the limits counts as full), in the
    order they were made."""
    def fill(b: int) -> float:
        prompt = sum(needs[i][0] for i in packs[b]) / limits.length
        return prompt + sum(needs[i][1] for i in packs[b]) / limits.target_length

    best = sorted(sorted(range(len(packs)), key=lambda b: (-fill(b), b))[:count])
    return [list(packs[b]) for b in best]


def row_rng(seed: int, step: int, micro: int, task: str, index: int) -> random.Random:
    """The prompt draw of one row in a token-budget plan: the planner measures the row with it and the worker
    processes it with it, so both see the same tokens whatever the rows around it."""
    return random.Random(f"{seed}:{step}:{micro}:{task}:{index}")


def measure_row(task: Any, row: Any, tokenizer: Any, rng: random.Random) -> Need:
    """A row's `Need` as the processor will see it (its prompt drawn from `rng`), without decoding its media."""
    example = task.to_example(row, rng=rng)
    ids = tokenizer.encode(example.text)
    visual = {tokenizer.image_token_id, tokenizer.video_token_id} - {None}
    n_visual = sum(1 for i in ids if i in visual)
    n_audio = sum(1 for i in ids if i == tokenizer.audio_token_id)
    return (len(ids), len(tokenizer.encode(example.target, add_eos=True)), n_visual, n_audio)


def item_need(item: dict[str, Any]) -> Need:
    return (len(item["input_ids"]), len(item["labels"]), len(item["pixel_values"]), len(item["audio_features"]))


def pack_items(items: Sequence[dict[str, Any]], packs: Sequence[Sequence[int]] | None = None
               ) -> list[dict[str, Any]]:
    """Processed examples (`UnifiedProcessor.process`, with targets) -> packed items, in first-fit-decreasing
    order under the items' own largest sizes, or as `packs` (lists of item indices) say; each packed item has
    `segment_ids` (L,), `decoder_segment_ids` (Lt,), `segments` (how many) and `members` (the indices of the items
    it holds, in segment order)."""
    if not items or any("labels" not in it for it in items):
        raise InputError("pack", "examples without targets", "packing is for training: every example needs a target")
    if packs is None:
        needs = [item_need(it) for it in items]
        packs = first_fit_decreasing(needs, tuple(max(n[k] for n in needs) for k in range(4)))
    return [_concat([items[i] for i in members], list(members)) for members in packs]


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

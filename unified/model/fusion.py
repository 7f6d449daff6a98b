"""Fusing media latents into the text stream: gated cross-attention (xattn) and splicing (concat).

Axis legend: B batch, L text length, L' spliced length, S media latents per example, D text width, Dm media width,
H heads, E head width, n_items placeholders per example (padded with -1).

Gated cross-attention (Flamingo). Each `GatedCrossAttentionBlock` computes

    x = x + attn(LN(x), media, media_mask) * tanh(attn_gate)
    x = x + ff(LN(x)) * tanh(ff_gate)

with both gates initialised at 0 (`gate_init`), so a fresh block is exactly the identity and the wrapped language model
starts where it was; every other weight has its normal initialisation, so the gates receive gradient from step 0.
Training from scratch there is no language model to protect: `fusion.gate_init: 0.5` opens the gates halfway.

Which latents a text token may see (`build_media_mask`):

- Flamingo's rule ("previous"): a text token attends only to the media item that immediately precedes it in the
  sequence (the last `<image>` at or before it); tokens before the first item see nothing and get exactly zero.
- Group extension: placeholders with no other token between them form ONE group, so in "<video><audio> question" the
  question sees both the video and the audio latents. `media_groups` numbers the groups: `token_group[b, i]` is the
  group of the latest placeholder at or before token i (-1 before the first one) and `item_group[b, j]` is the group of
  the j-th placeholder.
- "all": every text token sees every real media latent (bidirectional encoders, retrieval).

Concat fusion. `splice_media` replaces each placeholder token's embedding by its item's latents (for video: per-frame
latents interleaved with timestamp-token embeddings, assembled by the caller), giving a longer sequence, left-aligned
and right-padded. `splice_slots` does the same from the resampler's dense slots (B, N, T', K, D) and their frame
masks, on the device: it reads back only the spliced length (nothing when the caller gives one), where a list of
ragged items needs the host to cut them out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from unified.errors import InputError
from unified.model.layers import Attention, FeedForward

__all__ = [
    "GatedCrossAttentionBlock",
    "build_media_mask",
    "flatten_media",
    "media_groups",
    "placeholder_groups",
    "splice_media",
    "splice_slots",
]

MASK_MODES = ("previous", "all")


class GatedCrossAttentionBlock(nn.Module):
    """Flamingo's gated cross-attention-dense block, identity at initialisation.

    x (B, L, D), media (B, S, Dm), media_mask bool (B, L, S) (True = may attend) -> (B, L, D). The attention and the
    feed-forward are the text layers' own modules (`unified.model.layers.Attention`, `FeedForward` without a gate);
    a token with no media to see receives exactly 0 from the attention.

    Example:
        >>> block = GatedCrossAttentionBlock(dim=16, media_dim=8, num_heads=2, head_dim=4)
        >>> x = torch.randn(1, 3, 16)
        >>> torch.equal(block(x, torch.randn(1, 5, 8), torch.ones(1, 3, 5, dtype=torch.bool)), x)
        True
    """

    def __init__(self, dim: int, media_dim: int, num_heads: int, head_dim: int, ff_mult: int = 4,
                 gate_init: float = 0.0):
        super().__init__()
        self.gate_init = gate_init
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, head_dim, kv_dim=media_dim, is_cross=True)
        self.attn_gate = nn.Parameter(torch.full((1,), float(gate_init)))
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dim * ff_mult, gated=False, bias=True)
        self.ff_gate = nn.Parameter(torch.full((1,), float(gate_init)))

    def forward(self, x: torch.Tensor, media: torch.Tensor, media_mask: torch.Tensor,
                active: torch.Tensor | None = None) -> torch.Tensor:
        """`active` (B, L) bool: the positions the block acts on (packed examples: those whose example has media,
        as an example alone without media skips the block); the others pass unchanged. None: all."""
        B, L, _ = x.shape
        S = media.shape[1]
        if tuple(media_mask.shape) != (B, L, S):
            raise InputError("media_mask", tuple(media_mask.shape), f"expected (B, L, S) = {(B, L, S)}")
        y = x
        if S:  # (B, L, D); rows with no True position come back exactly 0
            y = y + self.attn(self.attn_norm(y), context=media, mask=media_mask.bool()[:, None]) * self.attn_gate.tanh()
        y = y + self.ff(self.ff_norm(y)) * self.ff_gate.tanh()
        return y if active is None else torch.where(active[..., None], y, x)


def _placeholder_mask(input_ids: torch.Tensor, placeholder_ids) -> torch.Tensor:
    ids = torch.as_tensor(list(placeholder_ids) if not torch.is_tensor(placeholder_ids) else placeholder_ids,
                          dtype=input_ids.dtype, device=input_ids.device)
    return torch.isin(input_ids, ids)


def placeholder_groups(
    input_ids: torch.Tensor, token_group: torch.Tensor, placeholder_ids, num_items: int | None = None
) -> torch.Tensor:
    """The group of each occurrence of `placeholder_ids`, in order: (B, n) long, padded with -1.

    With all placeholder ids this is `media_groups`' item_group; with only the visual ids (`<image>`, `<video>`) it
    gives the group of each visual slot, with only `<audio>` the group of each audio slot. `num_items` fixes n (e.g.
    the number of media slots M; occurrences beyond it are dropped) and avoids a device sync; by default n is the
    largest count in the batch.
    """
    is_ph = _placeholder_mask(input_ids, placeholder_ids)  # (B, L)
    B = input_ids.shape[0]
    if num_items is None:
        num_items = int(is_ph.sum(dim=1).max()) if is_ph.numel() else 0
    rank = is_ph.long().cumsum(dim=1) - 1  # (B, L): index of each placeholder among its row's placeholders
    # scatter without nonzero() (no sync): non-placeholders and overflow go to a spare last column, then dropped
    col = torch.where(is_ph, rank.clamp(max=num_items), num_items)
    val = torch.where(is_ph, token_group, -1)
    out = torch.full((B, num_items + 1), -1, dtype=torch.long, device=input_ids.device)
    return out.scatter(1, col, val.long())[:, :num_items]


def media_groups(
    input_ids: torch.Tensor, placeholder_ids, num_items: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group placeholders and tokens: (token_group (B, L) long, item_group (B, n_items) long, -1 padded).

    A run of adjacent placeholders is one group; each token belongs to the latest group at or before it.
    `num_items` fixes n_items (see `placeholder_groups`); by default it is the largest count in the batch.

    Example (p a placeholder, w a word):
        >>> p, w = 5, 1
        >>> tg, ig = media_groups(torch.tensor([[p, w, w, p, p, w]]), [p])
        >>> tg.tolist(), ig.tolist()
        ([[0, 0, 0, 1, 1, 1]], [[0, 1, 1]])
    """
    if input_ids.dim() != 2:
        raise InputError("input_ids", tuple(input_ids.shape), "expected (B, L)")
    is_ph = _placeholder_mask(input_ids, placeholder_ids)  # (B, L)
    prev = F.pad(is_ph[:, :-1], (1, 0), value=False)  # (B, L): was the previous token a placeholder?
    starts = is_ph & ~prev  # first placeholder of each run
    token_group = starts.long().cumsum(dim=1) - 1  # (B, L), -1 before the first run
    return token_group, placeholder_groups(input_ids, token_group, placeholder_ids, num_items)


def build_media_mask(token_group: torch.Tensor, latent_group: torch.Tensor, mode: str = "previous") -> torch.Tensor:
    """Which latents each token may attend to: bool (B, L, S).

    "previous": token i sees latent s iff they are in the same group (the group immediately before i);
    "all": every token sees every real latent. latent_group -1 (padding) is never seen.

    Example:
        >>> build_media_mask(torch.tensor([[-1, 0, 1]]), torch.tensor([[0, 1, -1]])).int().tolist()
        [[[0, 0, 0], [1, 0, 0], [0, 1, 0]]]
    """
    real = (latent_group >= 0)[:, None, :]  # (B, 1, S)
    if mode == "previous":
        return (token_group[:, :, None] == latent_group[:, None, :]) & real
    if mode == "all":
        return real.expand(-1, token_group.shape[1], -1)
    raise InputError("mode", mode, f"expected one of {', '.join(MASK_MODES)}")


def flatten_media(
    latents: torch.Tensor, latent_mask: torch.Tensor, item_group: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resampler output per slot -> one media sequence per example for cross-attention.

    latents (B, M, T', K, D), latent_mask (B, M, T'), item_group (B, M) (the group of each slot, -1 = no placeholder)
    -> (media (B, M T' K, D), latent_group (B, M T' K) long with -1 on padding). Concatenate the results of the visual
    and the audio slots along S to cross-attend to both.
    """
    B, M, T, K, _ = latents.shape
    if tuple(latent_mask.shape) != (B, M, T) or item_group.shape[0] != B or item_group.shape[1] < M:
        raise InputError("latent_mask/item_group", (tuple(latent_mask.shape), tuple(item_group.shape)),
                         f"expected (B, M, T') = {(B, M, T)} and (B, >= M)")
    group = item_group[:, :M, None].expand(B, M, T)  # (B, M, T')
    group = torch.where(latent_mask.bool(), group, torch.full_like(group, -1))
    latent_group = rearrange(group[..., None].expand(B, M, T, K), "b m t k -> b (m t k)")
    return rearrange(latents, "b m t k d -> b (m t k) d"), latent_group


def splice_media(
    embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    input_ids: torch.Tensor,
    placeholder_ids,
    item_latents: Sequence[Sequence[torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concat fusion: replace each placeholder token by its item's latents.

    embeds (B, L, D), attention_mask (B, L), input_ids (B, L), item_latents[b][j] (n_bj, D) for the j-th real
    placeholder of example b (an empty (0, D) item just removes its placeholder) -> (new_embeds (B, L', D),
    new_mask (B, L'), same dtype as attention_mask). Padding tokens are dropped and each example's new sequence is
    left-aligned and right-padded with zeros (mask 0) to L' = the longest; a left-padded input comes out right-padded.

    Example:
        >>> e = torch.arange(3.0)[None, :, None]  # tokens w0 <image> w2, D = 1
        >>> new, m = splice_media(e, torch.ones(1, 3), torch.tensor([[7, 9, 7]]), [9], [[torch.full((2, 1), -1.0)]])
        >>> new[0, :, 0].tolist(), m.tolist()
        ([0.0, -1.0, -1.0, 2.0], [[1.0, 1.0, 1.0, 1.0]])
    """
    B, _, D = embeds.shape
    real = attention_mask.bool()
    is_ph = _placeholder_mask(input_ids, placeholder_ids) & real  # (B, L)
    counts = is_ph.sum(dim=1).tolist()
    if len(item_latents) != B:
        raise InputError("item_latents", len(item_latents), f"expected one list per example (B={B})")
    for b, items in enumerate(item_latents):
        if len(items) != counts[b]:
            raise InputError(f"item_latents[{b}]", len(items), f"example {b} has {counts[b]} placeholder tokens")
        for j, t in enumerate(items):
            if t.dim() != 2 or t.shape[1] != D:
                raise InputError(f"item_latents[{b}][{j}]", tuple(t.shape), f"expected (n, {D})")
    flat = [t for items in item_latents for t in items]  # batch-major, placeholder order = nonzero() order
    sizes = torch.tensor([t.shape[0] for t in flat], dtype=torch.long, device=embeds.device)

    token_len = real.long()  # (B, L): output slots taken by each input token
    ph_rows, ph_cols = is_ph.nonzero(as_tuple=True)
    token_len[ph_rows, ph_cols] = sizes
    new_len = token_len.sum(dim=1)  # (B,)
    start = token_len.cumsum(dim=1) - token_len  # (B, L): first output slot of each token
    Lp = int(new_len.max()) if B else 0

    out = embeds.new_zeros(B, Lp, D)
    keep = real & ~is_ph  # ordinary tokens move to their new slot
    rows, cols = keep.nonzero(as_tuple=True)
    out = out.index_put((rows, start[rows, cols]), embeds[rows, cols])
    if flat and int(sizes.sum()) > 0:
        owner = torch.repeat_interleave(torch.arange(len(flat), device=embeds.device), sizes)  # (total,)
        offset = torch.arange(owner.shape[0], device=embeds.device) - (sizes.cumsum(0) - sizes)[owner]
        dest = start[ph_rows, ph_cols][owner] + offset
        out = out.index_put((ph_rows[owner], dest), torch.cat(flat).to(embeds.dtype))
    new_mask = torch.arange(Lp, device=embeds.device)[None, :] < new_len[:, None]  # (B, L')
    return out, new_mask.to(attention_mask.dtype)


def splice_slots(embeds: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor, all_placeholder_ids,
                 kinds: Sequence[tuple[Sequence[int], Sequence[torch.Tensor], torch.Tensor]],
                 tracks: torch.Tensor | None = None, length: int | None = None):
    """Concat fusion from dense slots, without a host round trip per item: `splice_media`'s result, computed with
    scatters on the device.

    embeds (B, L, D), attention_mask (B, L), input_ids (B, L); `all_placeholder_ids`: every placeholder id (each
    real one is replaced, by nothing when it has no slot); `kinds`: (placeholder ids, parts, keep (B, N, T') bool)
    per kind of media, each part (B, N, T', K_i, D) and a frame's parts laid one after another (a per-frame
    timestamp embedding, then its latents): the n-th real placeholder of a kind in a row takes that kind's slot n,
    its kept frames in order. `tracks` (B, L, C) long: per-token values carried along (the spliced latents take
    their placeholder's). `length`: the spliced length L' if the caller knows one at least as long as the longest
    row (nothing is read back then); by default the longest row's, the one value read from the device.
    -> (embeds (B, L', D), attention_mask (B, L') in its dtype, tracks (B, L', C) with -1 on padding, or None).
    """
    B, L, D = embeds.shape
    device = embeds.device
    real = attention_mask.bool()
    placeholder = _placeholder_mask(input_ids, all_placeholder_ids) & real  # (B, L)
    token_len = (real & ~placeholder).long()  # (B, L): output slots each token takes; placeholders by their slot
    slots = []
    for ids, parts, keep in kinds:
        N, per_frame = keep.shape[1], sum(part.shape[3] for part in parts)  # latents a kept frame brings
        if N == 0:
            continue
        is_ph = _placeholder_mask(input_ids, ids) & real  # (B, L)
        rank = is_ph.long().cumsum(dim=1) - 1  # (B, L): the slot of each placeholder of this kind
        keep = keep.bool()
        own = is_ph & (rank < N)
        count = keep.long().sum(dim=-1) * per_frame  # (B, N): latents each slot brings
        token_len = token_len + torch.where(own, count.gather(1, rank.clamp(0, N - 1)), 0)
        # the token index of slot n's placeholder, -1 where none (scattered, no nonzero(): spare column N dropped)
        index = torch.arange(L, device=device).expand(B, L)
        where = torch.full((B, N + 1), -1, dtype=torch.long, device=device).scatter(
            1, torch.where(own, rank, N), torch.where(own, index, -1))[:, :N]  # (B, N)
        slots.append((parts, keep, where, per_frame))
    start = token_len.cumsum(dim=1) - token_len  # (B, L): each token's first output position
    new_len = token_len.sum(dim=1)  # (B,)
    if length is None:
        length = int(new_len.max()) if B else 0
    # a spare last position takes every write that has no place (padding, replaced placeholders, dropped frames)
    out = embeds.new_zeros(B, length + 1, D)
    carried = None if tracks is None else tracks.new_full((B, length + 1, tracks.shape[-1]), -1)

    def put(dest: torch.Tensor, values: torch.Tensor, track: torch.Tensor | None) -> None:
        # dest (B, n) output positions, values (B, n, D), track (B, n, C)
        out.scatter_(1, dest[..., None].expand(-1, -1, D), values.to(out.dtype))
        if carried is not None:
            carried.scatter_(1, dest[..., None].expand(-1, -1, carried.shape[-1]), track)

    put(torch.where(real & ~placeholder, start, length), embeds, tracks)
    for parts, keep, where, per_frame in slots:
        first = start.gather(1, where.clamp_min(0))  # (B, N): the placeholder's first output position
        frame = first[:, :, None] + (keep.long().cumsum(dim=-1) - keep.long()) * per_frame  # (B, N, T')
        ok = (where >= 0)[:, :, None, None] & keep[..., None]  # (B, N, T', 1)
        own = None
        if tracks is not None:  # (B, N, C): the placeholder's values
            own = tracks.gather(1, where.clamp_min(0)[..., None].expand(-1, -1, tracks.shape[-1]))
        offset = 0
        for part in parts:
            _, N, T, K, _ = part.shape
            to = frame[..., None] + offset + torch.arange(K, device=device)  # (B, N, T', K)
            track = None if own is None else own[:, :, None, :].expand(-1, -1, T * K, -1).reshape(B, N * T * K, -1)
            put(torch.where(ok, to, length).reshape(B, N * T * K), part.reshape(B, N * T * K, D), track)
            offset += K
    new_mask = (torch.arange(length, device=device)[None, :] < new_len[:, None]).to(attention_mask.dtype)
    return out[:, :length], new_mask, None if carried is None else carried[:, :length]

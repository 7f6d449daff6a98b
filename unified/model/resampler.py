"""Turning many media tokens into few: Flamingo's Perceiver Resampler and PLLaVA's 3-D pooling.

Axis legend: N media items, T frames, P tokens per frame, K latents, S keys (media tokens + latents), D width,
H heads, E head width.

`PerceiverResampler` (Flamingo; cost linear in the number of media tokens, as in Perceiver): K learned latents
cross-attend to the concatenation [media tokens ; latents] (queries = latents, keys / values = both), each attention
followed by a feed-forward, `depth` times; LayerNorm on media and on latents before every attention.

- mode "global": a learned per-frame-index embedding is added to the media tokens, frames are flattened, and the item
  becomes K latents (Flamingo: 64) whatever its length. Output T' = 1.
- mode "per_frame": every frame is resampled on its own (batched as N * T) into K latents (8-32 work best, Apollo), so
  video tokens grow with time and timestamp tokens can be interleaved between frames. Output T' = T.

`Pool3d` (PLLaVA): adaptive 3-D average pooling (T, h, w, D) -> (out_frames, out_hw, out_hw, D), then Linear and
LayerNorm; no attention, cheaper, no per-frame learned state.

Masks: padding tokens / frames are never attended (a boolean key mask; the latents themselves are always valid keys,
so no softmax row is empty). An item (global) or frame (per_frame / pool3d window) with no valid token gets
`latent_mask` False and all-zero latents, and costs no attention work.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from unified.errors import ConfigError, InputError
from unified.model.layers import Attention, FeedForward

__all__ = ["PerceiverResampler", "Pool3d", "ResamplerLayer", "masked_adaptive_avg_pool3d"]

MODES = ("global", "per_frame")
FRAME_EMBED_STD = 0.02  # which frame a token came from ("global" mode): a small nudge at the start


class ResamplerLayer(nn.Module):
    """One perceiver step: the latents attend to [LN(media) ; LN(latents)] (padding keys masked out), then a
    feed-forward; both residual. The attention and feed-forward are the text layers' own modules
    (`unified.model.layers`). media (N, S_m, D), latents (N, K, D), media_mask bool (N, S_m) -> (N, K, D)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, ff_mult: int = 4):
        super().__init__()
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, head_dim, is_cross=True)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dim * ff_mult, gated=False, bias=True)

    def forward(self, media: torch.Tensor, latents: torch.Tensor, media_mask: torch.Tensor) -> torch.Tensor:
        n, k = latents.shape[:2]
        normed = self.norm_latents(latents)
        keys = torch.cat([self.norm_media(media), normed], dim=1)  # (N, S_m + K, D)
        keep = torch.cat([media_mask, media_mask.new_ones(n, k)], dim=1)  # (N, S): latents are always valid keys
        latents = latents + self.attn(normed, context=keys, mask=keep[:, None, None, :])
        return latents + self.ff(self.ff_norm(latents))


class PerceiverResampler(nn.Module):
    """Flamingo's Perceiver Resampler: x (N, T, P, D), token_mask (N, T, P) -> (latents (N, T', K, D), mask (N, T')).

    T' = 1 in mode "global" (T <= max_frames), T' = T in mode "per_frame".

    Example:
        >>> r = PerceiverResampler(dim=32, depth=2, num_latents=8, num_heads=2, head_dim=16)
        >>> lat, m = r(torch.randn(3, 4, 16, 32), torch.ones(3, 4, 16, dtype=torch.bool))
        >>> lat.shape, m.shape
        (torch.Size([3, 1, 8, 32]), torch.Size([3, 1]))
        >>> r = PerceiverResampler(32, 2, 8, 2, 16, mode="per_frame")
        >>> r(torch.randn(3, 4, 16, 32), torch.ones(3, 4, 16, dtype=torch.bool))[0].shape
        torch.Size([3, 4, 8, 32])
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_latents: int,
        num_heads: int,
        head_dim: int,
        ff_mult: int = 4,
        mode: str = "global",
        max_frames: int = 64,
    ):
        super().__init__()
        if mode not in MODES:
            raise ConfigError("resampler.mode", mode, f"expected one of {', '.join(MODES)}")
        for name, value in (("depth", depth), ("num_latents", num_latents), ("num_heads", num_heads),
                            ("head_dim", head_dim), ("ff_mult", ff_mult), ("max_frames", max_frames)):
            if int(value) < 1:
                raise ConfigError(f"resampler.{name}", value, "must be a positive integer")
        self.mode, self.max_frames, self.num_latents = mode, max_frames, num_latents
        self.latent_std = 1.0 / math.sqrt(dim)  # unit-norm latents on average; `_init_weights` draws them again
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * self.latent_std)
        # Only "global" flattens frames and so needs to know which frame a token came from; "per_frame" keeps frames
        # apart (timestamps go between them as tokens) and has no such table, so every parameter is used.
        self.frame_embed = (nn.Parameter(torch.randn(max_frames, dim) * FRAME_EMBED_STD) if mode == "global"
                            else None)
        self.layers = nn.ModuleList(ResamplerLayer(dim, num_heads, head_dim, ff_mult) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def _resample(self, media: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # media (n, S_m, D), mask (n, S_m) -> (n, K, D)
        media = media.masked_fill(~mask[..., None], 0.0)  # padding may hold anything (even NaN); 0 * NaN is NaN
        latents = self.latents.to(media.dtype).expand(media.shape[0], -1, -1)  # (n, K, D)
        for layer in self.layers:
            latents = layer(media, latents, mask)
        return self.norm(latents)

    def forward(
        self, x: torch.Tensor, token_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4:
            raise InputError("x", tuple(x.shape), "expected media features (N, T, P, D)")
        N, T, P, D = x.shape
        all_valid = token_mask is None  # known without a device sync
        if token_mask is None:
            token_mask = torch.ones(N, T, P, dtype=torch.bool, device=x.device)
        elif tuple(token_mask.shape) != (N, T, P):
            raise InputError("token_mask", tuple(token_mask.shape), f"expected (N, T, P) = {(N, T, P)}")
        token_mask = token_mask.bool()
        if self.mode == "global":
            if T > self.max_frames:
                raise InputError("x", tuple(x.shape), f"{T} frames > max_frames={self.max_frames}")
            x = x + self.frame_embed[:T, None, :].to(x.dtype)  # (N, T, P, D)
            media = rearrange(x, "n t p d -> n (t p) d")
            mask = rearrange(token_mask, "n t p -> n (t p)")
            latent_mask = mask.any(dim=-1, keepdim=True)  # (N, 1)
        else:
            media = rearrange(x, "n t p d -> (n t) p d")
            mask = rearrange(token_mask, "n t p -> (n t) p")
            latent_mask = token_mask.any(dim=-1)  # (N, T)
        valid = latent_mask.reshape(-1)  # (N T',)
        if all_valid or bool(valid.all()):
            out = self._resample(media, mask)
        else:  # empty items / frames: no work, zero latents
            out = media.new_zeros(valid.shape[0], self.num_latents, D)
            if bool(valid.any()):
                out = out.index_put((valid,), self._resample(media[valid], mask[valid]))
        return rearrange(out, "(n t) k d -> n t k d", n=N), latent_mask


def masked_adaptive_avg_pool3d(
    x: torch.Tensor, token_mask: torch.Tensor, out_frames: int, out_hw: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average over the valid tokens of each adaptive-pooling window.

    x (N, T, P, D) with P = h * w square, token_mask (N, T, P) -> (pooled (N, out_frames, out_hw**2, D),
    window_valid (N, out_frames, out_hw**2)). Each item's windows are adaptive_avg_pool3d's over its own frames (the
    leading frames with any valid token; the processor puts an item's frames first), so an item pools the same in a
    batch of longer clips as alone: fewer frames than `out_frames` are repeated, as adaptive pooling does.
    mean(x * m) / mean(m) over a window is the mean of its valid tokens; items with no frame give 0, invalid.
    """
    P = x.shape[2]
    h = math.isqrt(P)
    if h * h != P:
        raise InputError("x", tuple(x.shape), f"Pool3d needs a square patch grid, got P={P}")
    frames = token_mask.any(dim=-1).sum(dim=-1)  # (N,) each item's own frame count
    pooled = x.new_zeros(x.shape[0], out_frames, out_hw * out_hw, x.shape[-1])
    valid = torch.zeros(x.shape[0], out_frames, out_hw * out_hw, dtype=torch.bool, device=x.device)
    for length in frames.unique().tolist():
        if length == 0:
            continue
        rows = frames == length
        pooled[rows], valid[rows] = _pool_windows(x[rows, :length], token_mask[rows, :length], out_frames, out_hw, h)
    return pooled, valid


def _pool_windows(x, token_mask, out_frames: int, out_hw: int, h: int):
    m = token_mask.to(x.dtype)
    grid = (out_frames, out_hw, out_hw)
    num = F.adaptive_avg_pool3d(rearrange(x * m[..., None], "n t (h w) d -> n d t h w", h=h), grid)
    den = F.adaptive_avg_pool3d(rearrange(m, "n t (h w) -> n 1 t h w", h=h), grid)  # (N, 1, t', h', w')
    pooled = torch.where(den > 0, num / den.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(num))
    return rearrange(pooled, "n d t h w -> n t (h w) d"), rearrange(den > 0, "n 1 t h w -> n t (h w)")


class Pool3d(nn.Module):
    """PLLaVA's adaptive 3-D average pooling of frame features, then Linear and LayerNorm.

    x (N, T, P, D) with a square P = h * w, token_mask (N, T, P) -> (latents (N, out_frames, out_hw**2, D),
    latent_mask (N, out_frames)). Padded tokens are left out of every average; each item's windows lie over its own
    frames, so an item pools the same batched as alone (an image next to 8-frame clips too); T < out_frames repeats
    frames.

    Example:
        >>> pool = Pool3d(dim=32, out_frames=4, out_hw=2)
        >>> lat, m = pool(torch.randn(2, 8, 16, 32), torch.ones(2, 8, 16, dtype=torch.bool))
        >>> lat.shape, m.shape
        (torch.Size([2, 4, 4, 32]), torch.Size([2, 4]))
    """

    def __init__(self, dim: int, out_frames: int, out_hw: int):
        super().__init__()
        if out_frames < 1 or out_hw < 1:
            raise ConfigError("resampler.pool3d", (out_frames, out_hw), "out_frames and out_hw must be positive")
        self.out_frames, self.out_hw = out_frames, out_hw
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, x: torch.Tensor, token_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4:
            raise InputError("x", tuple(x.shape), "expected media features (N, T, P, D)")
        if token_mask is None:
            token_mask = torch.ones(x.shape[:3], dtype=torch.bool, device=x.device)
        elif token_mask.shape != x.shape[:3]:
            raise InputError("token_mask", tuple(token_mask.shape), f"expected (N, T, P) = {tuple(x.shape[:3])}")
        pooled, window_valid = masked_adaptive_avg_pool3d(x, token_mask.bool(), self.out_frames, self.out_hw)
        latent_mask = window_valid.any(dim=-1)  # (N, out_frames)
        out = self.norm(self.proj(pooled))  # (N, out_frames, out_hw**2, D)
        return out * latent_mask[..., None, None].to(out.dtype), latent_mask

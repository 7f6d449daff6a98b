"""`ClipVideoEncoder`: a video model that reads clips, not frames (VideoMAE), as the visual encoder.

Axis legend: B batch, M visual items, T frames, N clips, K frames per clip (`num_frames`), t tubelet length,
P patches per frame, D width.

VideoMAE embeds a clip of exactly `num_frames` frames as tubelets of `tubelet_size` frames x a patch, so its tokens
are (K / t) x P, time-major. Our visual contract is one token grid per frame, (B, M, T, P, D), with each frame's true
timestamp, so:

    frames (B, M, T, 3, H, W) -> chunks of K frames (the last filled by repeating its last real frame)
    -> VideoMAE per chunk -> (K / t, P, D) -> each tubelet's tokens given to each of its t frames -> (T, P, D)
    -> projection + the frame-time embedding, as for every visual encoder; padded frames zeroed

So a 16-frame VideoMAE with tubelets of 2 gives frames 2i and 2i + 1 the same tokens (plus their own time
embedding); clips longer than K frames are encoded in consecutive chunks, none dropped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from unified.errors import ConfigError, InputError
from unified.model.encoders import FrozenBackbone, TimeEmbedding
from unified.model.pretrained import build_config, build_module

MODEL_TYPES = ("videomae",)


class ClipVideoEncoder(FrozenBackbone):
    """VideoMAE as the frame encoder (see the module docstring); built from its config dict (`vision.backbone`)."""

    def __init__(self, backbone: dict, hidden_size: int, freeze: bool = True, num_time_frequencies: int = 16):
        super().__init__()

        if backbone.get("model_type") not in MODEL_TYPES:
            raise ConfigError("vision.backbone", backbone.get("model_type"), f"expected one of {MODEL_TYPES}")
        cfg = build_config(backbone, "vision.backbone")
        self.backbone, self.freeze = build_module(backbone, "vision.backbone"), freeze
        self.image_size, self.clip = int(cfg.image_size), int(cfg.num_frames)
        self.tubelet = int(cfg.tubelet_size)
        self.num_patches = (self.image_size // int(cfg.patch_size)) ** 2
        self.proj = nn.Linear(int(cfg.hidden_size), hidden_size)
        self.time_embed = TimeEmbedding(hidden_size, num_time_frequencies)
        self._set_frozen()

    FIELD = "vision.pretrained_path"
    pick = staticmethod(lambda model: getattr(model, "videomae", model))  # VideoMAE inside a task model

    def encode_clip(self, frames: torch.Tensor, real: int) -> torch.Tensor:
        """frames (T, 3, H, W) of one item, the first `real` of them real -> (T, P, D_videomae)."""
        T = frames.shape[0]
        frames = frames[: max(real, 1)]
        chunks = -(-frames.shape[0] // self.clip)
        fill = chunks * self.clip - frames.shape[0]
        frames = torch.cat([frames, frames[-1:].expand(fill, *frames.shape[1:])])  # (chunks K, 3, H, W)
        if frames.shape[-2:] != (self.image_size, self.image_size):
            frames = F.interpolate(frames, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False)
        clips = rearrange(frames, "(n k) c h w -> n k c h w", k=self.clip)
        param = next(self.backbone.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self.backbone(pixel_values=clips.to(param.dtype)).last_hidden_state  # (n, K / t * P, D)
        hidden = rearrange(hidden, "n (s p) d -> n s p d", p=self.num_patches)  # s = K / t tubelets
        hidden = hidden.repeat_interleave(self.tubelet, dim=1)  # (n, K, P, D): a tubelet's tokens for its frames
        hidden = rearrange(hidden, "n k p d -> (n k) p d")[:T]
        if hidden.shape[0] < T:  # padded frames past the real ones: zeros (masked out below anyway)
            hidden = torch.cat([hidden, hidden.new_zeros(T - hidden.shape[0], *hidden.shape[1:])])
        return hidden

    def forward(self, pixel_values: torch.Tensor, frame_times: torch.Tensor,
                pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
        if pixel_values.dim() != 6:
            raise InputError("pixel_values", tuple(pixel_values.shape), "expected (B, M, T, C, H, W)")
        B, M, T = pixel_values.shape[:3]
        if tuple(frame_times.shape) != (B, M, T):
            raise InputError("frame_times", tuple(frame_times.shape), f"expected (B, M, T) = {(B, M, T)}")
        mask = torch.ones(B, M, T, dtype=torch.bool, device=pixel_values.device) if pixel_mask is None \
            else pixel_mask.bool()
        items = rearrange(pixel_values, "b m t c h w -> (b m) t c h w")
        real = mask.reshape(B * M, T).sum(-1).tolist()  # frames are left-aligned: the first `real` are real
        hidden = torch.stack([self.encode_clip(clip, int(n)) for clip, n in zip(items, real)])  # (B M, T, P, D')
        feats = self.proj(hidden.to(self.proj.weight.dtype))
        feats = rearrange(feats, "(b m) t p d -> b m t p d", b=B, m=M)
        feats = feats + self.time_embed(frame_times)[:, :, :, None, :]
        return feats * mask[..., None, None].to(feats.dtype)

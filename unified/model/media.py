"""Media -> latents, and latents -> what the encoder consumes (a cross-attention memory or spliced embeddings).

Axis legend: B batch, M visual slots, A audio slots, T frames, P patches, F audio frames, T' latent frames,
K latents per latent frame, D d_model, S media latents per example.

Visual slots go through the patch stem (or a pretrained vision model) and the resampler (`global`, `per_frame` or
`pool3d`); audio slots through the conv stem (or Whisper's encoder) and a global resampler. Both are projected to
d_model, so gated cross-attention and splicing see one width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import nn

from unified.errors import InputError
from unified.model.audio_event import MODEL_TYPE as AUDIO_EVENT_TYPE
from unified.model.audio_event import AudioEventEncoder
from unified.model.configuration import UnifiedConfig
from unified.model.encoders import AudioEncoder, PretrainedAudioEncoder, PretrainedVisionEncoder, VideoEncoder
from unified.model.fusion import (
    build_media_mask,
    flatten_media,
    media_groups,
    placeholder_groups,
    splice_slots,
)
from unified.model.resampler import PerceiverResampler, Pool3d
from unified.model.video_clip import MODEL_TYPES as CLIP_MODEL_TYPES
from unified.model.video_clip import ClipVideoEncoder


@dataclass
class MediaLatents:
    visual: torch.Tensor | None = None  # (B, M, T', K, D)
    visual_mask: torch.Tensor | None = None  # (B, M, T') bool
    audio: torch.Tensor | None = None  # (B, A, 1, K, D)
    audio_mask: torch.Tensor | None = None  # (B, A, 1) bool


class MediaEncoder(nn.Module):
    """Encoders + resamplers + projections for every modality the config enables."""

    def __init__(self, config: UnifiedConfig):
        super().__init__()
        v, a, r, d = config.vision, config.audio, config.resampler, config.text.d_model
        if v.backbone and v.backbone.get("model_type") in CLIP_MODEL_TYPES:  # VideoMAE: clips, not frames
            self.vision = ClipVideoEncoder(v.backbone, v.hidden_size, freeze=v.freeze)
        elif v.backbone:  # SigLIP, CLIP, DINOv2, T5Gemma 2's SigLIP: frame by frame
            self.vision = PretrainedVisionEncoder(v.backbone, v.hidden_size, freeze=v.freeze)
        else:
            self.vision = VideoEncoder(v.patch_size, v.hidden_size, v.num_channels, v.stem_channels, v.stem_blocks,
                                       v.image_size)
        if r.mode == "pool3d":
            self.visual_resampler = Pool3d(v.hidden_size, r.pool_frames, r.pool_hw)
        else:
            latents = r.num_latents if r.mode == "global" else r.latents_per_frame
            self.visual_resampler = PerceiverResampler(v.hidden_size, r.depth, latents, r.num_heads, r.head_dim,
                                                       mode=r.mode, max_frames=v.max_frames)
        self.visual_proj = nn.Linear(v.hidden_size, d)
        if a.backbone and a.backbone.get("model_type") == AUDIO_EVENT_TYPE:  # AST: audio events, not speech
            self.audio = AudioEventEncoder(a.backbone, a.hidden_size, freeze=a.freeze)
        elif a.backbone:  # Whisper's encoder
            self.audio = PretrainedAudioEncoder(a.backbone, a.hidden_size, freeze=a.freeze)
        else:
            self.audio = AudioEncoder(a.n_mels, a.hidden_size)
        if a.resampler == "pool":  # num_latents windows in time, each the mean of its frames: the beep stays put
            self.audio_resampler = Pool3d(a.hidden_size, a.num_latents, 1)
        else:
            self.audio_resampler = PerceiverResampler(a.hidden_size, r.depth, a.num_latents, r.num_heads, r.head_dim)
        self.audio_proj = nn.Linear(a.hidden_size, d)
        self.max_frames = v.max_frames

    def forward(self, pixel_values=None, pixel_mask=None, frame_times=None, audio_features=None,
                audio_mask=None) -> MediaLatents:
        out = MediaLatents()
        if pixel_values is not None:
            B, M, T = pixel_values.shape[:3]
            if T > self.max_frames:
                raise InputError("pixel_values", tuple(pixel_values.shape),
                                 f"{T} frames exceed vision.max_frames={self.max_frames}")
            if pixel_mask is None:
                pixel_mask = torch.ones(B, M, T, dtype=torch.bool, device=pixel_values.device)
            if frame_times is None:
                frame_times = torch.zeros(B, M, T, device=pixel_values.device)
            feats = self.vision(pixel_values, frame_times, pixel_mask)  # (B, M, T, P, Dv)
            P = feats.shape[3]
            x = rearrange(feats, "b m t p d -> (b m) t p d")
            token_mask = repeat(pixel_mask.bool(), "b m t -> (b m) t p", p=P)
            lat, lat_mask = self.visual_resampler(x, token_mask)  # (B M, T', K, Dv), (B M, T')
            out.visual = rearrange(self.visual_proj(lat), "(b m) t k d -> b m t k d", b=B)
            out.visual_mask = rearrange(lat_mask, "(b m) t -> b m t", b=B)
        if audio_features is not None:
            B, A = audio_features.shape[:2]
            if audio_mask is None:
                audio_mask = torch.ones(B, A, audio_features.shape[-1], dtype=torch.bool,
                                        device=audio_features.device)
            feats, mask = self.audio(audio_features, audio_mask.bool())  # (B, A, F', Da), (B, A, F')
            if isinstance(self.audio_resampler, Pool3d):  # time windows: frames as "frames" of one 1 x 1 patch
                pooled, window_mask = self.audio_resampler(rearrange(feats, "b a f d -> (b a) f 1 d"),
                                                           rearrange(mask, "b a f -> (b a) f 1"))  # (B A, K, 1, Da)
                lat = rearrange(pooled, "n k 1 d -> n 1 k d")
                lat_mask = window_mask.any(dim=-1, keepdim=True)  # (B A, 1)
            else:
                x = rearrange(feats, "b a f d -> (b a) 1 f d")
                lat, lat_mask = self.audio_resampler(x, rearrange(mask, "b a f -> (b a) 1 f"))  # (B A, 1, K, Da)
            out.audio = rearrange(self.audio_proj(lat), "(b a) t k d -> b a t k d", b=B)
            out.audio_mask = rearrange(lat_mask, "(b a) t -> b a t", b=B)
        return out


def placeholder_ids(config: UnifiedConfig) -> tuple[list[int], list[int]]:
    """(visual placeholder ids, audio placeholder ids) from the config's text section."""
    t = config.text
    visual = [i for i in (t.image_token_id, t.video_token_id) if i is not None]
    audio = [t.audio_token_id] if t.audio_token_id is not None else []
    return visual, audio


def cross_attention_memory(input_ids: torch.Tensor, latents: MediaLatents, config: UnifiedConfig):
    """-> (media (B, S, D), latent_group (B, S), token_group (B, L)) for gated cross-attention; media and
    latent_group are None without media. Mask them with `build_media_mask(token_group, latent_group, mode)`."""
    visual_ids, audio_ids = placeholder_ids(config)
    token_group, _ = media_groups(input_ids, visual_ids + audio_ids)
    parts, groups = [], []
    for lat, mask, ids in ((latents.visual, latents.visual_mask, visual_ids),
                           (latents.audio, latents.audio_mask, audio_ids)):
        if lat is None:
            continue
        item_group = placeholder_groups(input_ids, token_group, ids, num_items=lat.shape[1])  # (B, M)
        media, group = flatten_media(lat, mask, item_group)  # (B, S_i, D), (B, S_i)
        parts.append(media)
        groups.append(group)
    if not parts:
        return None, None, token_group
    return torch.cat(parts, dim=1), torch.cat(groups, dim=1), token_group


def latent_segments(input_ids: torch.Tensor, latents: MediaLatents, config: UnifiedConfig,
                    segment_ids: torch.Tensor) -> torch.Tensor | None:
    """Packed examples: the segment of each latent of `cross_attention_memory`'s media (B, S), -1 on padding (the
    segment of the placeholder its item fills), so gated cross-attention keeps each example to its own media."""
    visual_ids, audio_ids = placeholder_ids(config)
    parts = []
    for lat, mask, ids in ((latents.visual, latents.visual_mask, visual_ids),
                           (latents.audio, latents.audio_mask, audio_ids)):
        if lat is None:
            continue
        item_segment = placeholder_groups(input_ids, segment_ids, ids, num_items=lat.shape[1])  # (B, M)
        parts.append(flatten_media(lat, mask, item_segment)[1])  # (B, S_i)
    return torch.cat(parts, dim=1) if parts else None


def media_mask(token_group: torch.Tensor, latent_group: torch.Tensor, config: UnifiedConfig) -> torch.Tensor:
    """bool (B, L, S): which latents each token may attend to (Flamingo's rule or "all")."""
    return build_media_mask(token_group, latent_group, config.fusion.media_attention)


def splice_latents(embeds, attention_mask, input_ids, latents: MediaLatents, frame_time_ids, embed_tokens,
                   config: UnifiedConfig, token_group: torch.Tensor | None = None):
    """Concat fusion: each placeholder becomes its item's latents; in per-frame mode every frame's latents follow the
    embedding of that frame's `<time_k>` token. On the device (`splice_slots`): the spliced length is the one value
    read back.

    -> (embeds (B, L', D), attention_mask (B, L'), token_group (B, L') or None): the spliced positions take their
    placeholder's group, so "both" fusion can still apply Flamingo's rule to the text tokens after them.
    `token_group` may carry several tracks (B, L, C) (a packed row's groups and segment ids), spliced alike.
    """
    visual_ids, audio_ids = placeholder_ids(config)
    kinds = []
    if latents.visual is not None:
        parts = [latents.visual]  # (B, M, T', K, D)
        if config.resampler.mode == "per_frame" and frame_time_ids is not None:
            stamps = embed_tokens(frame_time_ids[:, : latents.visual.shape[1]])  # (B, M, T, D): each <time_k>
            parts.insert(0, stamps[:, :, :, None].to(latents.visual.dtype))  # (B, M, T' = T, 1, D), then latents
        kinds.append((visual_ids, parts, latents.visual_mask))
    if latents.audio is not None:
        kinds.append((audio_ids, [latents.audio], latents.audio_mask))  # (B, A, 1, K, D)
    tracks = None if token_group is None else token_group if token_group.dim() == 3 else token_group[..., None]
    new_embeds, new_mask, new_tracks = splice_slots(embeds, attention_mask, input_ids, visual_ids + audio_ids,
                                                    kinds, tracks)
    if new_tracks is not None and token_group.dim() == 2:
        new_tracks = new_tracks[..., 0]
    return new_embeds, new_mask, new_tracks

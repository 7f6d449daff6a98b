"""Media encoders: pixels, frames and log-mel spectrograms -> sequences of D-wide feature tokens.

Axis legend: B batch, M visual slots, A audio slots, T frames, P patch tokens per frame, F audio frames,
F' audio frames after the stride-2 stem, C channels, D model width, N flattened (B M T) frames.

Built from scratch (cheap at 64-128 px, trained with the model):

- `PatchStem`: OFA / Gato-style image stem. A 4x4 stride-4 conv to `stem_channels` ("space to depth"), `num_blocks`
  pre-activation residual blocks (GroupNorm, GELU, 3x3 conv, twice) at 1/4 resolution, then a patchify conv whose
  kernel = stride = patch_size / 4 (the remaining downsampling), so every output token is one patch_size x patch_size
  patch. The residual blocks run at 1/4 resolution, not full resolution: at 128 px with 64 stem channels the whole stem
  costs about 0.15 GMAC per frame. A factorised learned 2-D position embedding (row + column) is added.
- `VideoEncoder`: the stem on every frame plus `TimeEmbedding(frame_times)`, a learned embedding of each frame's
  timestamp in seconds (Fourier features -> MLP), so unseen times interpolate between trained ones. Images are T = 1
  items at time 0.
- `AudioEncoder`: Whisper-like conv1d stem over log-mel frames (conv k3 s1, GELU, conv k3 s2, GELU) plus a sinusoidal
  position embedding; the frame mask is downsampled with the same arithmetic (F -> (F + 1) // 2).

Pretrained alternatives, built from a transformers config (stored in ours) with weights copied from a LOCAL
checkpoint once (`unified.model.pretrained`; never the network), frozen by default:

- `PretrainedVisionEncoder`: any transformers vision model (SigLIP, CLIP, DINOv2, ...); dual encoders contribute
  their vision tower; CLS / register tokens are dropped when present (CLIP has one, SigLIP none); Linear to
  `hidden_size`.
- `PretrainedAudioEncoder`: Whisper's encoder; input padded / cropped to its fixed 2 * max_source_positions mel frames.

Frozen = `requires_grad=False` on the backbone and the backbone stays in eval mode whatever `.train()` is called with.
The trainable parts (projection, time embedding) keep learning.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from unified.errors import ConfigError, InputError
from unified.model.pretrained import (
    build_config,
    build_module,
    copy_weights,
    read_backbone_config,
    vision_tower,
)

__all__ = [
    "AudioEncoder",
    "FrozenBackbone",
    "PatchStem",
    "PretrainedAudioEncoder",
    "PretrainedVisionEncoder",
    "TimeEmbedding",
    "VideoEncoder",
    "conv_output_length",
]


def conv_output_length(length: int, kernel: int = 3, stride: int = 2, padding: int = 1) -> int:
    """Length after a 1-D conv: floor((length + 2 * padding - kernel) / stride) + 1; (F + 1) // 2 for k3 s2 p1."""
    return (length + 2 * padding - kernel) // stride + 1


def _num_groups(channels: int) -> int:
    # GroupNorm needs a divisor of the channel count; 32 groups is the ResNet v2 / Gato default when it divides.
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


class _ResidualBlock(nn.Module):
    """Pre-activation residual block: x + conv(gelu(gn(conv(gelu(gn(x))))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_num_groups(channels), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(_num_groups(channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.gelu(self.norm1(x)))
        return x + self.conv2(F.gelu(self.norm2(h)))


POSITION_INIT_STD = 0.35  # per table; row + column sum to std ~0.5 per dimension


class PatchStem(nn.Module):
    """Image -> one token per patch_size x patch_size patch, with a 2-D position embedding.

    Images may be smaller than `image_size` (any multiple of `patch_size`, any aspect ratio); the position table
    covers `image_size // patch_size` rows and columns.

    Example:
        >>> stem = PatchStem(patch_size=16, hidden_size=32, stem_channels=8, image_size=64)
        >>> stem(torch.randn(2, 3, 64, 64)).shape  # 4 x 4 patches
        torch.Size([2, 16, 32])
    """

    def __init__(
        self,
        patch_size: int,
        hidden_size: int,
        num_channels: int = 3,
        stem_channels: int = 64,
        num_blocks: int = 2,
        image_size: int = 224,
        stem_stride: int = 4,
    ):
        super().__init__()
        if patch_size % stem_stride != 0:
            raise ConfigError("patch_size", patch_size, f"must be a multiple of stem_stride={stem_stride}")
        if image_size % patch_size != 0:
            raise ConfigError("image_size", image_size, f"must be a multiple of patch_size={patch_size}")
        self.patch_size, self.image_size = patch_size, image_size
        self.grid = image_size // patch_size
        self.stem = nn.Conv2d(num_channels, stem_channels, stem_stride, stride=stem_stride)
        self.blocks = nn.Sequential(*[_ResidualBlock(stem_channels) for _ in range(num_blocks)])
        self.norm = nn.GroupNorm(_num_groups(stem_channels), stem_channels)
        rest = patch_size // stem_stride
        self.patchify = nn.Conv2d(stem_channels, hidden_size, rest, stride=rest)
        # Convolutions do not know which patch they look at; only these tables do. They start near the patch
        # features' own scale (std ~0.7 at init on the synthetic clips; the tables sum to ~0.5), not at 0.02, which
        # left the position at ~3% of each token.
        self.row_embed = nn.Parameter(torch.randn(self.grid, hidden_size) * POSITION_INIT_STD)
        self.col_embed = nn.Parameter(torch.randn(self.grid, hidden_size) * POSITION_INIT_STD)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W) -> (N, P, D) with P = (H / patch) * (W / patch), patches in row-major order."""
        if images.dim() != 4:
            raise InputError("images", tuple(images.shape), "expected (N, C, H, W)")
        H, W = images.shape[-2:]
        if H % self.patch_size or W % self.patch_size:
            raise InputError("images", (H, W), f"height and width must be multiples of {self.patch_size}")
        h, w = H // self.patch_size, W // self.patch_size
        if h > self.grid or w > self.grid:
            raise InputError("images", (H, W), f"larger than image_size={self.image_size}")
        x = self.stem(images)  # (N, C_s, H/4, W/4)
        x = F.gelu(self.norm(self.blocks(x)))
        x = self.patchify(x)  # (N, D, h, w)
        pos = self.row_embed[:h, None, :] + self.col_embed[None, :w, :]  # (h, w, D)
        return rearrange(x, "n d h w -> n (h w) d") + rearrange(pos, "h w d -> (h w) d")


class TimeEmbedding(nn.Module):
    """Seconds -> D-wide embedding: [sin, cos](2 pi t / period) at log-spaced periods, then a 2-layer MLP.

    The Fourier features are smooth in t, so a time never seen in training lands between its neighbours.

    Example:
        >>> emb = TimeEmbedding(32)
        >>> emb(torch.tensor([[0.0, 0.5, 1.0]])).shape
        torch.Size([1, 3, 32])
    """

    def __init__(self, dim: int, num_frequencies: int = 16, min_period: float = 0.25, max_period: float = 1000.0):
        super().__init__()
        self.periods = (min_period, max_period, num_frequencies)
        self.register_buffer("omega", self.compute_omega(), persistent=False)  # (n_freq,)
        self.mlp = nn.Sequential(nn.Linear(2 * num_frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))

    def compute_omega(self) -> torch.Tensor:
        """The angular frequencies; also how a model loaded from disk (buffers not saved) restores them."""
        low, high, n = self.periods
        return 2 * math.pi / torch.logspace(math.log10(low), math.log10(high), n)

    def forward(self, seconds: torch.Tensor) -> torch.Tensor:
        """seconds (...) float -> (..., D)."""
        phase = seconds.to(self.omega.dtype)[..., None] * self.omega  # (..., n_freq)
        feats = torch.cat([phase.sin(), phase.cos()], dim=-1)  # (..., 2 n_freq)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


def _per_valid_frame(fn, frames: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    # Absent slots / padded frames are common in a mixed batch (an image next to a 32-frame video): skip their
    # stem work and return zeros there, so their cost is zero and their content is well defined.
    if valid is None or bool(valid.all()):
        return fn(frames)
    out = fn(frames[valid])  # (n_valid, P, D)
    full = out.new_zeros(frames.shape[0], *out.shape[1:])
    full[valid] = out
    return full


class VideoEncoder(nn.Module):
    """Frames -> patch tokens per frame plus a learned embedding of each frame's timestamp.

    pixel_values (B, M, T, C, H, W), frame_times (B, M, T) seconds -> (B, M, T, P, D). With `pixel_mask` (B, M, T),
    padded frames are not computed and come back as zeros.

    Example:
        >>> enc = VideoEncoder(patch_size=16, hidden_size=32, stem_channels=8, image_size=64)
        >>> enc(torch.randn(1, 2, 3, 3, 32, 32), torch.zeros(1, 2, 3)).shape
        torch.Size([1, 2, 3, 4, 32])
    """

    def __init__(
        self,
        patch_size: int,
        hidden_size: int,
        num_channels: int = 3,
        stem_channels: int = 64,
        num_blocks: int = 2,
        image_size: int = 224,
        num_time_frequencies: int = 16,
    ):
        super().__init__()
        self.stem = PatchStem(patch_size, hidden_size, num_channels, stem_channels, num_blocks, image_size)
        self.time_embed = TimeEmbedding(hidden_size, num_time_frequencies)

    def forward(
        self, pixel_values: torch.Tensor, frame_times: torch.Tensor, pixel_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return _encode_frames(self.stem, self.time_embed, pixel_values, frame_times, pixel_mask)


def _encode_frames(stem, time_embed, pixel_values, frame_times, pixel_mask):
    # Shared by VideoEncoder and PretrainedVisionEncoder: fold (B, M, T) into one batch of frames, run the stem on the
    # real ones, add the time embedding, zero the padding.
    if pixel_values.dim() != 6:
        raise InputError("pixel_values", tuple(pixel_values.shape), "expected (B, M, T, C, H, W)")
    B, M, T = pixel_values.shape[:3]
    if tuple(frame_times.shape) != (B, M, T):
        raise InputError("frame_times", tuple(frame_times.shape), f"expected (B, M, T) = {(B, M, T)}")
    frames = rearrange(pixel_values, "b m t c h w -> (b m t) c h w")
    valid = None if pixel_mask is None else pixel_mask.reshape(-1).bool()
    feats = _per_valid_frame(stem, frames, valid)  # (B M T, P, D)
    feats = rearrange(feats, "(b m t) p d -> b m t p d", b=B, m=M, t=T)
    feats = feats + time_embed(frame_times)[:, :, :, None, :]  # (B, M, T, P, D)
    if pixel_mask is not None:
        feats = feats * pixel_mask[..., None, None].to(feats.dtype)
    return feats


class AudioEncoder(nn.Module):
    """Log-mel (B, A, n_mels, F) + mask (B, A, F) -> tokens (B, A, F', D) + mask (B, A, F'), F' = (F + 1) // 2.

    Whisper-like stem: conv k3 s1 p1, GELU, conv k3 s2 p1, GELU, then a sinusoidal position embedding. Padded input
    frames are zeroed before each conv (the same as the conv's own zero padding), so the real frames' outputs do not
    depend on how much padding follows them. Output frame j is centred on input frame 2j, so the mask downsamples as
    `mask[..., ::2]`, which for a left-aligned mask of length F gives (F + 1) // 2 real frames.

    Example:
        >>> enc = AudioEncoder(n_mels=8, hidden_size=32)
        >>> x, m = enc(torch.randn(1, 1, 8, 11), torch.ones(1, 1, 11, dtype=torch.bool))
        >>> x.shape, m.sum().item()
        (torch.Size([1, 1, 6, 32]), 6)
    """

    def __init__(self, n_mels: int, hidden_size: int, conv_channels: int | None = None):
        super().__init__()
        self.n_mels, self.hidden_size = n_mels, hidden_size
        ch = conv_channels or hidden_size
        self.conv1 = nn.Conv1d(n_mels, ch, 3, stride=1, padding=1)
        self.conv2 = nn.Conv1d(ch, hidden_size, 3, stride=2, padding=1)

    def forward(self, audio_features: torch.Tensor, audio_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_mels(audio_features, audio_mask, self.n_mels)
        B, A = audio_features.shape[:2]
        x = rearrange(audio_features, "b a c f -> (b a) c f")
        m = rearrange(audio_mask.bool(), "b a f -> (b a) 1 f")
        x = F.gelu(self.conv1(x * m))  # (B A, ch, F)
        x = F.gelu(self.conv2(x * m))  # (B A, D, F')
        m_out = m[..., ::2]  # (B A, 1, F'): centre tap of the stride-2 kernel
        x = rearrange(x, "n d f -> n f d") + sinusoidal_positions(x.shape[-1], self.hidden_size, x)
        x = x * rearrange(m_out, "n 1 f -> n f 1").to(x.dtype)
        return (
            rearrange(x, "(b a) f d -> b a f d", b=B, a=A),
            rearrange(m_out, "(b a) 1 f -> b a f", b=B, a=A),
        )


def sinusoidal_positions(length: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """(length, dim) Transformer / Whisper sinusoidal table: sin on the first half of channels, cos on the second."""
    half = dim // 2
    inv = torch.exp(-math.log(10000.0) * torch.arange(half, device=like.device, dtype=torch.float32) / max(half - 1, 1))
    ang = torch.arange(length, device=like.device, dtype=torch.float32)[:, None] * inv  # (length, half)
    table = torch.cat([ang.sin(), ang.cos()], dim=-1)
    if table.shape[-1] < dim:  # odd dim: one zero channel
        table = F.pad(table, (0, dim - table.shape[-1]))
    return table.to(like.dtype)


# ---------------------------------------------------------------- pretrained backbones --------------------------


class FrozenBackbone(nn.Module):
    """Holds `self.backbone`, a pretrained transformers module built from its config dict; when frozen, its
    parameters never require grad and it never leaves eval mode.

    Subclasses name the config field their checkpoint comes from (`FIELD`), the sub-config to read when the
    checkpoint is a larger model (`PART`, e.g. a dual encoder's "vision_config") and how to find the backbone inside
    the loaded checkpoint (`pick`); `from_pretrained` and `load_backbone_weights` are then the same for all.
    """
    backbone: nn.Module
    freeze: bool
    FIELD: str = ""
    PART: str | None = None

    @staticmethod
    def pick(model: nn.Module) -> nn.Module:
        return model

    @classmethod
    def from_pretrained(cls, path: str | Path, hidden_size: int, freeze: bool = True, **kwargs):
        """Build from the config saved at `path` and copy its weights in."""
        encoder = cls(read_backbone_config(path, cls.FIELD, cls.PART), hidden_size, freeze, **kwargs)
        encoder.load_backbone_weights(path)
        return encoder

    def load_backbone_weights(self, path: str | Path) -> None:
        """Copy the backbone of the local checkpoint at `path` in (every tensor checked by name and shape)."""
        copy_weights(self.backbone, path, self.pick, self.FIELD)
        self._set_frozen()

    def _set_frozen(self) -> None:
        if self.freeze:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:
            self.backbone.eval()
        return self


class PretrainedVisionEncoder(FrozenBackbone):
    """A transformers vision model (SigLIP, CLIP, DINOv2: any model with `last_hidden_state`) as the frame encoder.

    Built from its config dict (`vision.backbone` in our config, so a saved model needs no other directory);
    `from_pretrained(path, ...)` builds one and copies a local checkpoint's weights in. Same contract as
    `VideoEncoder`: pixel_values (B, M, T, 3, H, W), frame_times (B, M, T) -> (B, M, T, P, D). Frames whose size
    differs from the backbone's `image_size` are resized bilinearly. Pixel values must already be normalised with
    the backbone's own mean / std (`unified.model.pretrained.image_processor_settings`). Leading CLS / register
    tokens (CLIP, DINOv2) are dropped: only patch tokens are returned.

    Example:
        >>> enc = PretrainedVisionEncoder.from_pretrained("path/to/siglip", hidden_size=512)  # doctest: +SKIP
        >>> enc(pixels, times).shape  # doctest: +SKIP
        torch.Size([B, M, T, 196, 512])
    """

    def __init__(self, backbone: dict, hidden_size: int, freeze: bool = True, num_time_frequencies: int = 16):
        super().__init__()

        cfg = build_config(backbone, "vision.backbone")
        if not hasattr(cfg, "image_size") or not hasattr(cfg, "patch_size") or not hasattr(cfg, "hidden_size"):
            raise ConfigError("vision.backbone", backbone.get("model_type"),
                              "not a ViT-style vision model (no image_size / patch_size / hidden_size)")
        self.backbone, self.freeze = vision_tower(build_module(backbone, "vision.backbone")), freeze
        self.image_size = int(cfg.image_size)
        self.num_patches = (self.image_size // int(cfg.patch_size)) ** 2
        self.proj = nn.Linear(int(cfg.hidden_size), hidden_size)
        self.time_embed = TimeEmbedding(hidden_size, num_time_frequencies)
        self._set_frozen()

    FIELD, PART = "vision.pretrained_path", "vision_config"

    @staticmethod
    def pick(model: nn.Module) -> nn.Module:
        return vision_tower(model)

    def _stem(self, frames: torch.Tensor) -> torch.Tensor:
        # frames (N, 3, H, W) -> (N, P, D)
        if frames.shape[-2:] != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
        param = next(self.backbone.parameters())  # a checkpoint may load in bf16 / fp16
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self.backbone(pixel_values=frames.to(param.dtype)).last_hidden_state  # (N, P or 1 + P, D_bb)
        hidden = hidden[:, hidden.shape[1] - self.num_patches :]  # drop leading CLS / register tokens, if any
        return self.proj(hidden.to(self.proj.weight.dtype))

    def forward(
        self, pixel_values: torch.Tensor, frame_times: torch.Tensor, pixel_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return _encode_frames(self._stem, self.time_embed, pixel_values, frame_times, pixel_mask)


def check_mels(audio_features: torch.Tensor, audio_mask: torch.Tensor, n_mels: int, hint: str = "") -> None:
    """`InputError` unless audio_features is (B, A, n_mels, F) and audio_mask (B, A, F); `hint` ends the message."""
    if audio_features.dim() != 4 or audio_features.shape[2] != n_mels:
        raise InputError("audio_features", tuple(audio_features.shape), f"expected (B, A, {n_mels}, F){hint}")
    B, A, _, Fr = audio_features.shape
    if tuple(audio_mask.shape) != (B, A, Fr):
        raise InputError("audio_mask", tuple(audio_mask.shape), f"expected (B, A, F) = {(B, A, Fr)}")


def mel_windows(audio_features: torch.Tensor, audio_mask: torch.Tensor, n_mels: int, window: int, hint: str = ""
                ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Log-mels (B, A, C, F) + mask (B, A, F) cut into windows of `window` frames for an encoder with a fixed input
    length (the last window zero-padded; padded frames zeroed first): (x (B A W, C, window), mask (B A, W window), W).
    Nothing is cut; `hint` ends the shape error's message."""
    check_mels(audio_features, audio_mask, n_mels, hint)
    Fr = audio_features.shape[-1]
    x = rearrange(audio_features, "b a c f -> (b a) c f")
    m = rearrange(audio_mask.bool(), "b a f -> (b a) f")
    x = x * m[:, None, :].to(x.dtype)
    windows = max(1, -(-Fr // window))
    pad = windows * window - Fr
    x, m = F.pad(x, (0, pad)), F.pad(m, (0, pad))  # (B A, C, W * window)
    return rearrange(x, "n c (w f) -> (n w) c f", w=windows), m, windows


def _whisper_encoder(config):
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    return WhisperEncoder(config)


def _encoder_of(model: nn.Module) -> nn.Module:
    return model.get_encoder() if hasattr(model, "get_encoder") else model.encoder


class PretrainedAudioEncoder(FrozenBackbone):
    """Whisper's encoder (config from a WhisperModel / WhisperForConditionalGeneration checkpoint), projected to D.

    Built from its config dict (`audio.backbone`); `from_pretrained(path, ...)` copies a local checkpoint's encoder
    weights in. Same contract as `AudioEncoder`: (B, A, n_mels, F) + mask (B, A, F) -> (B, A, F', D) + mask
    (B, A, F'). Whisper's encoder only accepts exactly 2 * max_source_positions mel frames (3000, 30 s, for the
    released models), so input is cut into W such windows (the last zero-padded; padded frames zeroed first), each
    window is encoded on its own and the outputs follow one another in time: F' = W * max_source_positions. Nothing
    past 30 s is dropped. The returned mask marks the outputs computed from real frames (input mask downsampled as in
    `AudioEncoder`).

    Example:
        >>> enc = PretrainedAudioEncoder.from_pretrained("path/to/whisper-tiny", hidden_size=512)  # doctest: +SKIP
        >>> feats, mask = enc(mels, mel_mask)  # feats (B, A, 1500, 512)  # doctest: +SKIP
    """

    def __init__(self, backbone: dict, hidden_size: int, freeze: bool = True):
        super().__init__()

        cfg = build_config(backbone, "audio.backbone")
        if not hasattr(cfg, "max_source_positions") or not hasattr(cfg, "num_mel_bins"):
            raise ConfigError("audio.backbone", backbone.get("model_type"),
                              "expected a Whisper config (an encoder with max_source_positions and num_mel_bins)")
        self.backbone = build_module(backbone, "audio.backbone", _whisper_encoder)
        self.freeze = freeze
        self.n_mels = int(cfg.num_mel_bins)
        self.num_frames = 2 * int(cfg.max_source_positions)
        self.proj = nn.Linear(int(cfg.d_model), hidden_size)
        self._set_frozen()

    FIELD = "audio.pretrained_path"
    pick = staticmethod(_encoder_of)  # Whisper's encoder inside a Whisper checkpoint

    def forward(self, audio_features: torch.Tensor, audio_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, A = audio_features.shape[:2]
        x, m, windows = mel_windows(audio_features, audio_mask, self.n_mels, self.num_frames)  # window by window
        param = next(self.backbone.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self.backbone(x.to(param.dtype)).last_hidden_state  # (B A W, num_frames / 2, D_whisper)
        hidden = rearrange(hidden, "(n w) t d -> n (w t) d", w=windows)  # windows back to back in time
        out = self.proj(hidden.to(self.proj.weight.dtype))
        m_out = m[:, ::2]  # (B A, F'): conv2 of Whisper's stem is k3 s2 p1, as in AudioEncoder
        out = out * m_out[..., None].to(out.dtype)
        return (
            rearrange(out, "(b a) f d -> b a f d", b=B, a=A),
            rearrange(m_out, "(b a) f -> b a f", b=B, a=A),
        )

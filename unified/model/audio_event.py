"""`AudioEventEncoder`: an Audio Spectrogram Transformer (AST, an audio-event model trained on AudioSet) as the
audio encoder, in place of Whisper's speech encoder.

Axis legend: B batch, A audio items, C mel bins, F mel frames, W windows, P patches, T' time patches, D width.

AST reads a fixed-length log-mel "image" (`max_length` frames x `num_mel_bins`, 1024 x 128 for the released
models: 10.24 s at a 10 ms hop) cut into 16 x 16 patches with strides (`frequency_stride`, `time_stride`). Our
contract is a time sequence, so:

    mels (B, A, C, F) -> windows of max_length frames (the last zero-padded; nothing cut) -> AST per window
    -> patch tokens (freq-major, CLS and distillation tokens dropped) -> mean over frequency -> (T', D) per window
    -> windows back to back in time -> Linear to D -> (B, A, W * T', D), mask (B, A, W * T')

A time patch is real when it starts on a real frame. The processor's log-mel must have the model's `num_mel_bins`
(`processor.n_mels`); AST was trained on Kaldi filterbanks normalised with its own mean and std, so fine-tune it or
expect shifted features.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from unified.errors import ConfigError
from unified.model.encoders import FrozenBackbone, mel_windows
from unified.model.pretrained import build_config, build_module

MODEL_TYPE = "audio-spectrogram-transformer"


def _ast_of(model: nn.Module) -> nn.Module:
    # ASTModel is its own; ASTForAudioClassification keeps it as `.audio_spectrogram_transformer`
    return getattr(model, "audio_spectrogram_transformer", model)


class AudioEventEncoder(FrozenBackbone):
    """AST as the audio encoder (see the module docstring); built from its config dict (`audio.backbone`)."""

    def __init__(self, backbone: dict, hidden_size: int, freeze: bool = True):
        super().__init__()

        cfg = build_config(backbone, "audio.backbone")
        if backbone.get("model_type") != MODEL_TYPE:
            raise ConfigError("audio.backbone", backbone.get("model_type"), f"expected {MODEL_TYPE!r}")
        self.backbone = _ast_of(build_module(backbone, "audio.backbone"))
        self.freeze = freeze
        self.n_mels, self.window = int(cfg.num_mel_bins), int(cfg.max_length)
        patch = int(cfg.patch_size)
        self.freq_patches = (self.n_mels - patch) // int(cfg.frequency_stride) + 1
        self.time_patches = (self.window - patch) // int(cfg.time_stride) + 1
        self.time_stride = int(cfg.time_stride)
        self.proj = nn.Linear(int(cfg.hidden_size), hidden_size)
        self._set_frozen()

    FIELD = "audio.pretrained_path"
    pick = staticmethod(_ast_of)

    def forward(self, audio_features: torch.Tensor, audio_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, A = audio_features.shape[:2]
        x, m, windows = mel_windows(audio_features, audio_mask, self.n_mels, self.window,
                                    f": the AST takes {self.n_mels} mel bins (set processor.n_mels)")
        x = x.transpose(1, 2)  # (B A W, window, C): AST reads (batch, time, frequency)
        param = next(self.backbone.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self.backbone(input_values=x.to(param.dtype)).last_hidden_state  # (B A W, 2 + P, D_ast)
        patches = rearrange(hidden[:, 2:], "n (fp tp) d -> n fp tp d", fp=self.freq_patches, tp=self.time_patches)
        hidden = rearrange(patches.mean(1), "(n w) t d -> n (w t) d", w=windows)  # (B A, W T', D_ast)
        out = self.proj(hidden.to(self.proj.weight.dtype))
        starts = torch.arange(self.time_patches, device=m.device) * self.time_stride  # first frame of each patch
        frame = (torch.arange(windows, device=m.device)[:, None] * self.window + starts).flatten()  # (W T',)
        m_out = m[:, frame]  # (B A, W T')
        out = out * m_out[..., None].to(out.dtype)
        return (rearrange(out, "(b a) f d -> b a f d", b=B, a=A), rearrange(m_out, "(b a) f -> b a f", b=B, a=A))

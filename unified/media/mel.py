"""Whisper's log-mel spectrogram, at the audio's own length: `log_mel(wave) -> [n_mels, frames]`.

The recipe is Whisper's, computed as `transformers.WhisperFeatureExtractor._torch_extract_fbank_features`
does (and built on transformers' own `mel_filter_bank`, slaney norm and scale), with ONE difference:
no padding to 30 s, so a 2 s clip gives 200 frames, not 3000.

    window   25 ms Hann (n_fft = 400 at 16 kHz), centred frames (reflect padding, as torch.stft's default)
    hop      10 ms (160 samples at 16 kHz)
    frames   N // hop: torch.stft gives N // hop + 1 centred frames and, like Whisper, the last is dropped
    mel      n_mels triangular filters from 0 Hz to sampling_rate / 2 (8 kHz at 16 kHz)
    scale    log10(max(power, 1e-10)), clamped from below at (its max - 8), then (x + 4) / 4

At other rates the window and hop stay 25 ms and 10 ms (rounded to whole samples). Because the clamp uses
the clip's own maximum, features of a clip shorter than 30 s differ from Whisper's padded ones only where
the padding's silence would change nothing: the pre-clamp log-mel matches frame for frame.

    >>> log_mel(torch.zeros(32000)).shape        # 2 s at 16 kHz
    torch.Size([80, 200])
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank

from unified.errors import InputError


@functools.lru_cache(maxsize=8)
def mel_filters(sampling_rate: int = 16000, n_fft: int = 400, n_mels: int = 80) -> torch.Tensor:
    """Whisper's mel filter bank as float32 [n_fft // 2 + 1, n_mels] (transformers' slaney filters).

    Cached: do not modify the returned tensor in place.
    """
    bank = mel_filter_bank(
        num_frequency_bins=1 + n_fft // 2,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=sampling_rate / 2,
        sampling_rate=sampling_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(bank.astype(np.float32))


def log_mel(audio: Any, sampling_rate: int = 16000, n_mels: int = 80) -> torch.Tensor:
    """Whisper-style log-mel features float32 [n_mels, N // hop] of mono audio [N] (see the module docstring).

    >>> log_mel(load_audio("speech.wav")).shape[0]
    80
    """
    for name, value in (("sampling_rate", sampling_rate), ("n_mels", n_mels)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise InputError(name, value, "expected a positive integer")
    sampling_rate, n_mels = int(sampling_rate), int(n_mels)
    if not isinstance(audio, (np.ndarray, torch.Tensor)):
        raise InputError("audio", audio, f"expected a 1-D float tensor or array, got {type(audio).__name__}")
    wave = torch.as_tensor(audio)
    shown = f"{type(audio).__name__}(shape={tuple(wave.shape)}, dtype={wave.dtype})"
    if not wave.is_floating_point() or wave.ndim != 1:
        raise InputError("audio", shown, "expected mono float samples of shape [N] (see load_audio)")
    n_fft, hop = round(0.025 * sampling_rate), round(0.010 * sampling_rate)
    if wave.shape[0] < n_fft:
        raise InputError("audio", shown, f"shorter than one 25 ms window ({n_fft} samples)")
    wave = wave.to(torch.float32)
    window = torch.hann_window(n_fft, device=wave.device)
    stft = torch.stft(wave, n_fft, hop, window=window, return_complex=True)  # [n_fft//2+1, N//hop + 1]
    power = (stft[:, :-1].abs() ** 2).contiguous()  # [F, frames]: Whisper drops the last frame
    mel = mel_filters(sampling_rate, n_fft, n_mels).to(wave.device).T @ power  # [n_mels, frames]
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0

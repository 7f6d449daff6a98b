"""Tiny model inputs shared by the model tests: a 300-id vocabulary with placeholders 5 (<image>), 6 (<video>),
7 (<audio>), a video of 3 frames, an audio item of 40 mel frames."""

import torch

from unified.model import UnifiedConfig, UnifiedForConditionalGeneration

IMAGE, VIDEO, AUDIO, PAD, EOS = 5, 6, 7, 0, 1


def tiny_config(**overrides) -> UnifiedConfig:
    text = {"vocab_size": 300, "image_token_id": IMAGE, "video_token_id": VIDEO, "audio_token_id": AUDIO,
            **overrides.pop("text", {})}
    return UnifiedConfig.preset("tiny", text=text, **overrides)


def tiny_model(seed: int = 0, **overrides) -> UnifiedForConditionalGeneration:
    torch.manual_seed(seed)
    return UnifiedForConditionalGeneration(tiny_config(**overrides)).eval()


def media_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Two examples: '<video><audio> w w w' and '<video> w w' (right-padded), second video one frame shorter."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([[VIDEO, AUDIO, 20, 21, 22], [VIDEO, 30, 31, PAD, PAD]])
    return {
        "input_ids": ids,
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
        "pixel_values": torch.randn(2, 1, 3, 3, 32, 32, generator=g),
        "pixel_mask": torch.tensor([[[True, True, True]], [[True, True, False]]]),
        "frame_times": torch.tensor([[[0.0, 1.0, 2.0]], [[0.0, 1.0, 0.0]]]),
        "frame_time_ids": torch.tensor([[[200, 249, 299]], [[200, 249, PAD]]]),
        "audio_features": torch.randn(2, 1, 80, 40, generator=g),
        "audio_mask": torch.tensor([[[True] * 40], [[False] * 40]]),
        "labels": torch.tensor([[40, 41, EOS], [42, EOS, -100]]),
    }

"""Parameter counts and bf16 weight memory of our model on pretrained parts, computed from the parts' configs.

    .venv/bin/python benchmarks/param_counts.py            # prints the README's table (markdown)

Each model is built on the meta device (no memory, no download) from hand-written transformers configs with the
published sizes of Flan-T5-base / -large, SigLIP-base-patch16-224 (its vision tower) and Whisper-small (its
encoder), plus our media side: a perceiver resampler (global, 64 latents, depth 2) for video and pooled audio
windows, gated cross-attention before every 2nd encoder layer, and the vocabulary grown by the default layout's
2,383 appended ids (3 media placeholders, 1,000 location, 1,024 value, 256 integer and 100 time tokens).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import SiglipVisionConfig, T5Config, WhisperConfig

from unified.model import UnifiedConfig, UnifiedModel
from unified.tokenizers import VocabLayout

FLAN_T5 = {  # published sizes (google/flan-t5-*/config.json)
    "Flan-T5-base": dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12),
    "Flan-T5-large": dict(d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_heads=16),
}
SIGLIP_BASE = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   image_size=224, patch_size=16)
WHISPER_SMALL = dict(d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072,
                     decoder_layers=12, decoder_attention_heads=12, decoder_ffn_dim=3072, num_mel_bins=80,
                     max_source_positions=1500, vocab_size=51865)


def appended() -> int:
    layout = VocabLayout()
    return 3 + layout.num_loc_bins + layout.num_value_bins + layout.num_int_tokens + layout.num_time_bins


def build(t5: dict, vision: bool, audio: bool) -> UnifiedModel:
    backbone = T5Config(vocab_size=32128, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                        decoder_start_token_id=0, **t5).to_dict()
    text = {"backbone": backbone, "vocab_size": 32128 + appended(), "image_token_id": 32128,
            "video_token_id": 32129, "audio_token_id": 32130}
    parts = {"text": text, "fusion": {"mode": "xattn", "every_k_layers": 2},
             "resampler": {"mode": "global", "num_latents": 64, "depth": 2, "num_heads": 12, "head_dim": 64}}
    if vision:
        parts["vision"] = {"backbone": SiglipVisionConfig(**SIGLIP_BASE).to_dict(), "image_size": 224,
                           "hidden_size": 768}
    if audio:
        parts["audio"] = {"backbone": WhisperConfig(**WHISPER_SMALL).to_dict(), "hidden_size": 768,
                          "resampler": "pool", "num_latents": 32}
    with torch.device("meta"):
        return UnifiedModel(UnifiedConfig.preset("base", **parts))


def split(model: UnifiedModel) -> dict[str, int]:
    count = {"language model": 0, "vision encoder": 0, "audio encoder": 0, "media side (trained)": 0}
    for name, p in model.named_parameters():
        if name.startswith("lm."):
            count["language model"] += p.numel()
        elif ".vision.backbone." in name:
            count["vision encoder"] += p.numel()
        elif ".audio.backbone." in name:
            count["audio encoder"] += p.numel()
        else:
            count["media side (trained)"] += p.numel()
    return count


def main() -> None:
    print("| language model | + SigLIP-base | + Whisper-small | LM | vision | audio | media side | total | bf16 weights |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, t5 in FLAN_T5.items():
        for vision, audio in ((True, False), (True, True)):
            parts = split(build(t5, vision, audio))
            total = sum(parts.values())
            cells = [f"{parts[k] / 1e6:.1f} M" if parts[k] else "-" for k in parts]
            print(f"| {name} | yes | {'yes' if audio else 'no'} | " + " | ".join(cells) +
                  f" | {total / 1e6:.1f} M | {total * 2 / 2**30:.2f} GiB |")


if __name__ == "__main__":
    main()

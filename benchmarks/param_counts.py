"""Parameter counts and bf16 weight memory of our model on pretrained parts, computed from the parts' configs.

    .venv/bin/python benchmarks/param_counts.py            # prints the results page's table (markdown)

Each model is built on the meta device (no memory, no download) from hand-written transformers configs with the
published sizes of Flan-T5-base / -large, T5Gemma 2 270M-270M / 1B-1B (each side a Gemma 3 270M / 1B, with the
SigLIP-so400m tower its encoder carries), SigLIP-base-patch16-224 (its vision tower) and Whisper-small (its
encoder), plus our media side: a perceiver resampler (global, 64 latents, depth 2) for video and pooled audio
windows, gated cross-attention before every 2nd encoder layer, and the vocabulary grown by the default layout's
2,383 appended ids (3 media placeholders, 1,000 location, 1,024 value, 256 integer and 100 time tokens).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import SiglipVisionConfig, T5Config, T5Gemma2Config, WhisperConfig

from unified.model import UnifiedConfig, UnifiedModel
from unified.tokenizers import VocabLayout

FLAN_T5 = {  # published sizes (google/flan-t5-*/config.json)
    "Flan-T5-base": dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12),
    "Flan-T5-large": dict(d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_heads=16),
}
GEMMA3 = {  # published sizes of each side (google/t5gemma-2-270m-270m: Gemma 3 270M; 1B-1B: Gemma 3 1B)
    "T5Gemma 2 270M-270M": dict(hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
                                num_key_value_heads=1, head_dim=256),
    "T5Gemma 2 1B-1B": dict(hidden_size=1152, intermediate_size=6912, num_hidden_layers=26, num_attention_heads=4,
                            num_key_value_heads=1, head_dim=256),
}
GEMMA3_VOCAB = 262144
SIGLIP_SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                     image_size=896, patch_size=14, vision_use_head=False)  # T5Gemma 2's own tower
SIGLIP_BASE = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   image_size=224, patch_size=16)
WHISPER_SMALL = dict(d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072,
                     decoder_layers=12, decoder_attention_heads=12, decoder_ffn_dim=3072, num_mel_bins=80,
                     max_source_positions=1500, vocab_size=51865)


def appended() -> int:
    layout = VocabLayout()
    return 3 + layout.num_loc_bins + layout.num_value_bins + layout.num_int_tokens + layout.num_time_bins


def t5_backbone(sizes: dict) -> tuple[dict, int]:
    config = T5Config(vocab_size=32128, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                      decoder_start_token_id=0, **sizes)
    return config.to_dict(), 32128


def t5gemma2_backbone(sizes: dict) -> tuple[dict, int]:
    side = dict(vocab_size=GEMMA3_VOCAB, sliding_window=512, hidden_activation="gelu_pytorch_tanh", **sizes)
    config = T5Gemma2Config(encoder={"text_config": side, "vision_config": SIGLIP_SO400M},
                            decoder=side, tie_word_embeddings=True)
    return config.to_dict(), GEMMA3_VOCAB


def build(backbone: dict, rows: int, vision: bool, audio: bool) -> UnifiedModel:
    text = {"backbone": backbone, "vocab_size": rows + appended(), "image_token_id": rows,
            "video_token_id": rows + 1, "audio_token_id": rows + 2}
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
    count = {"language model": 0, "its own vision tower": 0, "vision encoder": 0, "audio encoder": 0,
             "media side (trained)": 0}
    for name, p in model.named_parameters():  # a tied tensor is listed once
        if name.startswith("lm.") and ".vision_tower." in name:
            count["its own vision tower"] += p.numel()
        elif name.startswith("lm."):
            count["language model"] += p.numel()
        elif ".vision.backbone." in name:
            count["vision encoder"] += p.numel()
        elif ".audio.backbone." in name:
            count["audio encoder"] += p.numel()
        else:
            count["media side (trained)"] += p.numel()
    return count


def main() -> None:
    print("| language model | + SigLIP-base | + Whisper-small | LM | its own vision tower (unused) | vision | audio "
          "| media side | total | bf16 weights |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    models = [(name, t5_backbone(sizes)) for name, sizes in FLAN_T5.items()]
    models += [(name, t5gemma2_backbone(sizes)) for name, sizes in GEMMA3.items()]
    for name, (backbone, rows) in models:
        for vision, audio in ((True, False), (True, True)):
            parts = split(build(backbone, rows, vision, audio))
            total = sum(parts.values())
            cells = [f"{parts[k] / 1e6:.1f} M" if parts[k] else "-" for k in parts]
            print(f"| {name} | yes | {'yes' if audio else 'no'} | " + " | ".join(cells) +
                  f" | {total / 1e6:.1f} M | {total * 2 / 2**30:.2f} GiB |")


if __name__ == "__main__":
    main()

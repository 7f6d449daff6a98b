"""Our model on a pretrained T5 backbone vs transformers' bare T5 from the same checkpoint, text only, one process.

    .venv/bin/python benchmarks/backbone.py                  # CPU, a T5 v1.1 the size of the small preset's text
    .venv/bin/python benchmarks/backbone.py --frames 16      # also: the added cost of 16 frames through xattn
    .venv/bin/python benchmarks/backbone.py --family t5gemma2   # a T5Gemma 2 of the same width and depth

A random T5 v1.1 (d_model 256, 4 + 4 layers, 4 heads of 64, gated-GELU d_ff 768, vocabulary 8192) is saved to a
temp dir; ours is built on it with `text.pretrained_path` (fusion `xattn`, a gated block before every 2nd encoder
layer, so the hooks are on the path) and the bare model is loaded from the same directory. Rows:

- train step: forward + backward + AdamW step on (B, L) inputs and (B, Lt) labels;
- generate:   greedy decoding of exactly `--new-tokens` tokens, KV cache on both sides.

The ratio is ours / bare (goal <= 1.05 on CPU for both). With `--frames N`, the same train step with an N-frame
64 px video per row through the media stack and gated cross-attention, as a ratio to the text-only step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import T5Config, T5ForConditionalGeneration
from vs_t5 import timed

from unified.model import UnifiedConfig, UnifiedModel


def paired(ours, bare, runs: int, warmup: int) -> tuple[float, float]:
    """Medians of `runs` alternating calls of each (so drift in the machine's speed hits both alike)."""
    for _ in range(warmup):
        ours(), bare()
    a, b = [], []
    for _ in range(runs):
        a.append(timed(ours, 1, 0, "cpu"))
        b.append(timed(bare, 1, 0, "cpu"))
    return statistics.median(a), statistics.median(b)


def build_reference(family: str, vocab: int):
    """A random backbone the size of the small preset's text side: T5 v1.1 (d_model 256, 4 + 4 layers, 4 heads of
    64, gated-GELU 768), or T5Gemma 2 of the same width and depth (4 heads of 64, 2 key-value heads, sliding window
    128 on every other layer)."""
    if family == "t5":
        return T5ForConditionalGeneration(T5Config(vocab_size=vocab, d_model=256, d_kv=64, d_ff=768, num_layers=4,
                                                   num_heads=4, feed_forward_proj="gated-gelu",
                                                   tie_word_embeddings=False, dropout_rate=0.0,
                                                   decoder_start_token_id=0))
    from transformers import T5Gemma2Config, T5Gemma2ForConditionalGeneration
    from transformers.models.t5gemma2.configuration_t5gemma2 import (
        T5Gemma2DecoderConfig,
        T5Gemma2EncoderConfig,
    )

    text = {"vocab_size": vocab, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "sliding_window": 128,
            "layer_types": ["sliding_attention", "full_attention"] * 2, "dropout_rate": 0.0}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 16}
    encoder = T5Gemma2EncoderConfig(text_config=text, vision_config=vision, mm_tokens_per_image=4)
    return T5Gemma2ForConditionalGeneration(T5Gemma2Config(encoder=encoder, decoder=T5Gemma2DecoderConfig(**text),
                                                           dropout_rate=0.0, attention_dropout=0.0))


def train_step(model, batch):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--target", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=0)
    parser.add_argument("--family", choices=["t5", "t5gemma2"], default="t5")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        reference = build_reference(args.family, args.vocab)
        reference.save_pretrained(tmp)
        config = UnifiedConfig.preset("small", text={"pretrained_path": tmp, "video_token_id": args.vocab - 1},
                                      fusion={"mode": "xattn", "every_k_layers": 2}, vision={"image_size": 64})
        ours = UnifiedModel.from_pretrained_parts(config).train()
        bare = type(reference).from_pretrained(tmp).train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, args.vocab - 1, (args.batch, args.length), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "labels": torch.randint(2, args.vocab - 1, (args.batch, args.target), generator=g)}
    rows = []
    rows.append(("train step", *paired(train_step(ours, batch), train_step(bare, batch), args.runs, 2)))
    gen = {"input_ids": ids, "attention_mask": batch["attention_mask"], "max_new_tokens": args.new_tokens,
           "min_new_tokens": args.new_tokens, "do_sample": False}
    ours.eval(), bare.eval()
    with torch.no_grad():
        rows.append((f"generate {args.new_tokens}",
                     *paired(lambda: ours.generate(**gen), lambda: bare.generate(**gen), args.runs, 1)))
    print(f"B {args.batch}, L {args.length}, Lt {args.target}, vocab {args.vocab}, {args.threads} threads")
    print(f"{args.family}\n{'':<14} {'ours ms':>9} {'bare ms':>11} {'ratio':>6}")
    for name, mine, theirs in rows:
        print(f"{name:<14} {mine * 1e3:>9.1f} {theirs * 1e3:>11.1f} {mine / theirs:>6.2f}")
    if args.frames:
        ours.train()
        media = dict(batch)
        media["input_ids"] = ids.clone()
        media["input_ids"][:, 0] = args.vocab - 1  # <video> first
        media["pixel_values"] = torch.randn(args.batch, 1, args.frames, 3, 64, 64, generator=g)
        media["frame_times"] = torch.arange(args.frames).float().expand(args.batch, 1, -1) / 4
        with_media = timed(train_step(ours, media), args.runs, 2, "cpu")
        print(f"train step with {args.frames} frames (xattn): {with_media * 1e3:.1f} ms, "
              f"x{with_media / rows[0][1]:.2f} the text-only step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

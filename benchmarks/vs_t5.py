"""Our encoder-decoder vs transformers' T5 of identical size, text only: one training step and greedy generation.

    .venv/bin/python benchmarks/vs_t5.py                         # CPU, the "small" preset's text size
    .venv/bin/python benchmarks/vs_t5.py --device cuda --dtype bf16 --batch 32 --attn sdpa xformers

Both models get the same width, depth, heads, head size, feed-forward width (gated: SwiGLU here, gated-GELU in T5),
vocabulary, batch and sequence lengths, in one process with a fixed thread count. Our model runs with no media, so
the comparison is the backbone alone. Rows:

- train step: forward + backward + AdamW step on (B, L) inputs and (B, Lt) labels.
- generate:   greedy decoding of exactly `--new-tokens` tokens (KV cache on both sides).

The printed ratio is ours / T5 (< 1: we are faster); the goal on CPU is <= 1.0 for both. On CUDA the script also
reports the training step's achieved FLOP/s as a fraction of a bf16 matmul measured in the same process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import T5Config, T5ForConditionalGeneration

from unified.model import UnifiedConfig, UnifiedModel


def build(preset: str, vocab: int, device: str, dtype: torch.dtype, attn: str):
    ours_cfg = UnifiedConfig.preset(preset, text={"vocab_size": vocab})
    t = ours_cfg.text
    t5_cfg = T5Config(vocab_size=vocab, d_model=t.d_model, d_kv=t.head_dim, d_ff=t.d_ff,
                      num_layers=t.num_encoder_layers,
                      num_decoder_layers=t.num_decoder_layers, num_heads=t.num_heads, feed_forward_proj="gated-gelu",
                      dropout_rate=0.0, tie_word_embeddings=True, decoder_start_token_id=0, pad_token_id=0,
                      eos_token_id=1)
    torch.manual_seed(0)
    ours = UnifiedModel(ours_cfg).to(device, dtype)
    ours.set_attn_implementation(attn)
    t5 = T5ForConditionalGeneration(t5_cfg).to(device, dtype)
    return ours, t5


def timed(fn, runs: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_step_fn(model, batch):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        model.train()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def generate_fn(model, batch, new_tokens: int):
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    @torch.no_grad()
    def gen():
        model.eval()
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             num_beams=1)
        assert out.shape[1] >= new_tokens

    return gen


def matmul_flops(device: str, dtype: torch.dtype, n: int = 8192) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, runs=20, warmup=5, device=device)
    return 2 * n ** 3 / seconds


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=128, help="encoder tokens")
    p.add_argument("--target-length", type=int, default=32, help="decoder tokens in the training step")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--attn", nargs="+", default=["sdpa"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(4, args.vocab, (args.batch, args.length), generator=g),
             "attention_mask": torch.ones(args.batch, args.length, dtype=torch.long),
             "labels": torch.randint(4, args.vocab, (args.batch, args.target_length), generator=g)}
    batch = {k: v.to(args.device) for k, v in batch.items()}
    print(f"device {args.device} {args.dtype}, threads {args.threads}, preset {args.preset}, vocab {args.vocab}, "
          f"batch {args.batch}, L {args.length}, Lt {args.target_length}, new tokens {args.new_tokens}")
    results = {}
    for attn in args.attn:
        ours, t5 = build(args.preset, args.vocab, args.device, dtype, attn)
        n_ours = sum(p.numel() for n, p in ours.named_parameters()  # the text backbone (media parts idle here)
                     if n.startswith(("shared", "encoder.layers", "decoder", "encoder.norm")) and ".xattn." not in n)
        n_t5 = sum(p.numel() for p in t5.parameters())
        rows = {}
        for name, make in (("train step", lambda m: train_step_fn(m, batch)),
                           ("generate", lambda m: generate_fn(m, batch, args.new_tokens))):
            a = timed(make(ours), args.runs, args.warmup, args.device)
            b = timed(make(t5), args.runs, args.warmup, args.device)
            rows[name] = (a, b)
            print(f"[{attn}] {name:<10}  ours {a * 1e3:8.1f} ms   T5 {b * 1e3:8.1f} ms   ratio {a / b:.2f}")
        if args.device == "cuda":
            tokens = args.batch * (args.length + args.target_length)
            flops = 6 * n_ours * tokens / rows["train step"][0]
            peak = matmul_flops(args.device, dtype)
            print(f"[{attn}] training FLOP/s (6 N tokens / step time): {flops / 1e12:.1f} T, "
                  f"bf16 matmul {peak / 1e12:.1f} T -> {flops / peak:.1%}")
            rows["flops_fraction"] = flops / peak
        print(f"[{attn}] backbone parameters: ours {n_ours / 1e6:.2f} M, T5 {n_t5 / 1e6:.2f} M")
        results[attn] = rows
        del ours, t5
    return results


if __name__ == "__main__":
    main()

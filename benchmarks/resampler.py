"""Resampler paths vs all patch tokens: cost of "encoder + fusion" as the number of frames grows.

    .venv/bin/python benchmarks/resampler.py            # CPU, 4 / 8 / 16 / 32 frames of 128 x 128 px
    .venv/bin/python benchmarks/resampler.py --device cuda --batch 8 --backward

Three ways to give a text encoder (L text tokens, width D, 4 layers) a video of T frames, P = (128 / 16)^2 = 64 patch
features per frame (the patch stem is left out: it costs the same on every path):

- all tokens:        the encoder runs over L + T * P tokens (no resampler).
- global + xattn:    PerceiverResampler(mode="global", 64 latents) -> a GatedCrossAttentionBlock before each encoder
                     layer; the encoder runs over the L text tokens only (Flamingo).
- per_frame + splice: PerceiverResampler(mode="per_frame", 8 latents per frame) -> latents spliced into the text with
                     splice_media; the encoder runs over L + 8 T tokens (Apollo / concat fusion).

Each timing is the median of --runs runs after --warmup runs, in one process with a fixed thread count. The encoder
is the model's own: `unified.model.layers.EncoderLayer` (pre-norm RMSNorm, rotary self-attention through SDPA, gated
MLP of width 3 D), the same three paths sharing one stack.
Goals checked at the end: at 16 frames the resampler path is >= 4x cheaper than all tokens, and its cost grows at
most linearly with frames (cost(32) / cost(4) <= 8, with 10 % timing slack).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unified.model.configuration import TextConfig
from unified.model.fusion import GatedCrossAttentionBlock, build_media_mask, media_groups, splice_media
from unified.model.layers import EncoderLayer, RotaryEmbedding
from unified.model.resampler import PerceiverResampler

PLACEHOLDER, WORD = 3, 7


class Encoder(nn.Module):
    """The model's encoder stack (its layers, rotary table and key mask) without embeddings or media."""

    def __init__(self, dim: int, layers: int, heads: int):
        super().__init__()
        config = TextConfig(d_model=dim, num_heads=heads, head_dim=dim // heads, d_ff=3 * dim)
        self.rotary = RotaryEmbedding(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(layers))

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:  # x (B, S, D), keep (B, S)
        rotary = self.rotary(torch.arange(x.shape[1], device=x.device), x.dtype)
        mask = None if keep is None or bool(keep.all()) else keep.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask, rotary)
        return x


class AllTokens(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = layers

    def forward(self, text, patches):  # text (B, L, D), patches (B, T, P, D)
        return self.layers(torch.cat([text, patches.flatten(1, 2)], dim=1))  # (B, L + T P, D)


class GlobalXattn(nn.Module):
    def __init__(self, layers, dim, heads, latents=64):
        super().__init__()
        self.layers = layers
        self.resampler = PerceiverResampler(dim, 2, latents, heads, dim // heads, mode="global", max_frames=64)
        self.xattn = nn.ModuleList(GatedCrossAttentionBlock(dim, dim, heads, dim // heads) for _ in layers.layers)
        for block in self.xattn:  # non-zero gates so nothing could be skipped
            nn.init.constant_(block.attn_gate, 0.5)
            nn.init.constant_(block.ff_gate, 0.5)

    def forward(self, text, patches, input_ids):
        lat, lmask = self.resampler(patches)  # (B, 1, K, D), (B, 1)
        media = lat.flatten(1, 2)  # (B, K, D)
        token_group, item_group = media_groups(input_ids, [PLACEHOLDER], num_items=1)  # no device sync
        latent_group = torch.where(lmask, item_group[:, :1], -1).expand(-1, media.shape[1])  # (B, K)
        mask = build_media_mask(token_group, latent_group, "previous")  # (B, L, K)
        x = text
        rotary = self.layers.rotary(torch.arange(x.shape[1], device=x.device), x.dtype)
        for block, layer in zip(self.xattn, self.layers.layers):
            x = layer(block(x, media, mask), None, rotary)
        return x


class PerFrameSplice(nn.Module):
    def __init__(self, layers, dim, heads, latents=8):
        super().__init__()
        self.layers = layers
        self.resampler = PerceiverResampler(dim, 2, latents, heads, dim // heads, mode="per_frame")

    def forward(self, text, patches, input_ids):
        lat, _ = self.resampler(patches)  # (B, T, k, D)
        items = [[lat[b].flatten(0, 1)] for b in range(lat.shape[0])]  # one video per example: (T k, D)
        x, mask = splice_media(text, torch.ones_like(input_ids), input_ids, [PLACEHOLDER], items)
        return self.layers(x, mask)  # (B, L - 1 + T k, D)


def timed(fn, warmup: int, runs: int, device: str, backward: bool) -> float:
    def once():
        if backward:
            fn().float().square().mean().backward()
        else:
            with torch.inference_mode():
                fn()
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        once()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--patch-size", type=int, default=16)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--text-len", type=int, default=32)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--backward", action="store_true", help="time forward + backward instead of inference")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev, D, B, L = args.device, args.dim, args.batch, args.text_len
    P = (args.image_size // args.patch_size) ** 2

    source = "unified EncoderLayer stack"
    layers = Encoder(D, args.layers, args.heads)  # shared by the three paths
    paths = {
        "all tokens": AllTokens(layers),
        "global+xattn": GlobalXattn(layers, D, args.heads),
        "per_frame+splice": PerFrameSplice(layers, D, args.heads),
    }
    for m in paths.values():
        m.to(dev).train(args.backward)

    input_ids = torch.full((B, L), WORD, device=dev)
    input_ids[:, 0] = PLACEHOLDER  # "<video> question ..."
    text = torch.randn(B, L, D, device=dev)
    print(f"# {source}; D={D}, {args.layers} layers, {args.heads} heads, batch {B}, text {L} tokens, "
          f"{args.image_size}px frames / {args.patch_size}px patches = {P} tokens per frame; device {dev}, "
          f"threads {torch.get_num_threads()}, torch {torch.__version__}, "
          f"{'forward+backward' if args.backward else 'inference'}; median of {args.runs} after {args.warmup} warm-up")
    print("# times in ms; ratio = all tokens / path; seq = tokens in the encoder sequence")
    header = (f"{'frames':>6} | {'all tokens':>10} {'seq':>5} | {'global+xattn':>12} {'ratio':>6} {'ms/frame':>8} | "
              f"{'per_frame+splice':>16} {'seq':>5} {'ratio':>6} {'ms/frame':>8}")
    print(header)
    print("-" * len(header))
    results = {}
    for T in args.frames:
        patches = torch.randn(B, T, P, D, device=dev)
        calls = {
            "all tokens": lambda x=patches: paths["all tokens"](text, x),
            "global+xattn": lambda x=patches: paths["global+xattn"](text, x, input_ids),
            "per_frame+splice": lambda x=patches: paths["per_frame+splice"](text, x, input_ids),
        }
        a, g, s = (timed(fn, args.warmup, args.runs, dev, args.backward) for fn in calls.values())
        results[T] = (a, g, s)
        print(f"{T:>6} | {a:>10.2f} {L + T * P:>5} | {g:>12.2f} {a / g:>6.1f} {g / T:>8.3f} | "
              f"{s:>16.2f} {L - 1 + 8 * T:>5} {a / s:>6.1f} {s / T:>8.3f}")

    lo, hi = min(results), max(results)
    growth = [results[hi][i] / results[lo][i] for i in range(3)]
    print(f"\n# growth from {lo} to {hi} frames (x{hi / lo:.0f} frames): all tokens x{growth[0]:.2f}, "
          f"global+xattn x{growth[1]:.2f}, per_frame+splice x{growth[2]:.2f}")
    ok = True
    if 16 in results:
        a, g, s = results[16]
        for name, t in (("global+xattn", g), ("per_frame+splice", s)):
            good = a / t >= 4.0
            ok &= good
            print(f"# goal: 16 frames, {name} >= 4x cheaper than all tokens: {a / t:.1f}x {'OK' if good else 'MISSED'}")
    for i, name in ((1, "global+xattn"), (2, "per_frame+splice")):
        growth, bound = results[hi][i] / results[lo][i], hi / lo
        good = growth <= bound * 1.1
        ok &= good
        print(f"# goal: {name} grows at most linearly: x{growth:.2f} for x{bound:.0f} frames "
              f"{'OK' if good else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

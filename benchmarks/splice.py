"""Concat fusion's splice: items cut out on the host (`splice_media`) vs dense slots scattered on the device
(`splice_slots`, what the model runs).

    .venv/bin/python benchmarks/splice.py                       # CPU, one thread, 4 / 16 / 64 rows
    .venv/bin/python benchmarks/splice.py --device cuda         # also counts host synchronisations

A row: L = 64 text tokens, a video in the first visual slot and an image in the second for half the rows, an audio
placeholder; M = 2 visual slots of T' = 8 per-frame latent frames (K = 8 latents behind a timestamp embedding,
about 20 % of frames dropped) and one audio slot of K = 8 latents; a third of the rows padded from position 50. The
per-item path is the one the model used before: each row's ids, mask and groups read as Python lists, each item's
kept frames cut out (`latents[b, m][keep]`), then `splice_media` twice (embeddings, groups). Both give the same
tensors (checked). Each timing is the median of --runs after --warmup; on CUDA `torch.cuda.set_sync_debug_mode`
counts the synchronisations of one call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unified.model.fusion import splice_media, splice_slots

IMAGE, VIDEO, AUDIO = 50, 51, 52


def batch(rows: int, device: str, d: int = 256, L: int = 64, M: int = 2, T: int = 8, K: int = 8):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 40, (rows, L), generator=g)
    ids[:, 3], ids[: rows // 2, 20], ids[:, 30] = VIDEO, IMAGE, AUDIO
    mask = torch.ones(rows, L, dtype=torch.long)
    mask[::3, 50:] = 0
    parts = [torch.randn(rows, M, T, 1, d, generator=g), torch.randn(rows, M, T, K, d, generator=g)]
    keep = torch.rand(rows, M, T, generator=g) > 0.2
    audio, audio_keep = torch.randn(rows, 1, 1, K, d, generator=g), torch.ones(rows, 1, 1, dtype=torch.bool)
    groups = torch.randint(0, 3, (rows, L, 1), generator=g)
    embeds = torch.randn(rows, L, d, generator=g)
    kinds = [([IMAGE, VIDEO], [p.to(device) for p in parts], keep.to(device)),
             ([AUDIO], [audio.to(device)], audio_keep.to(device))]
    return embeds.to(device), mask.to(device), ids.to(device), kinds, groups.to(device)


def per_item(embeds, mask, ids, kinds, groups):
    """The host path: lists of each row's items, cut out one by one, then spliced."""
    visual, audio = torch.cat(kinds[0][1], dim=3), kinds[1][1][0]
    ids_cpu, mask_cpu, groups_cpu = ids.tolist(), mask.tolist(), groups[..., 0].tolist()
    items, carried = [], []
    for b in range(ids.shape[0]):
        row, row_groups, m, a = [], [], 0, 0
        for i, (token, real) in enumerate(zip(ids_cpu[b], mask_cpu[b])):
            if not real or token not in (IMAGE, VIDEO, AUDIO):
                continue
            if token == AUDIO:
                lat = audio[b, a][kinds[1][2][b, a]].reshape(-1, embeds.shape[-1])
                a += 1
            else:
                lat = visual[b, m][kinds[0][2][b, m]].reshape(-1, embeds.shape[-1]) if m < visual.shape[1] else \
                    embeds.new_zeros(0, embeds.shape[-1])
                m += 1
            row.append(lat)
            row_groups.append(torch.full((lat.shape[0], 1), float(groups_cpu[b][i]), device=embeds.device))
        items.append(row)
        carried.append(row_groups)
    placeholders = [IMAGE, VIDEO, AUDIO]
    new, new_mask = splice_media(embeds, mask, ids, placeholders, items)
    spliced, _ = splice_media(groups.float(), mask, ids, placeholders, carried)
    return new, new_mask, spliced.round().long().masked_fill(new_mask[..., None] == 0, -1)


def on_device(embeds, mask, ids, kinds, groups):
    return splice_slots(embeds, mask, ids, [IMAGE, VIDEO, AUDIO], kinds, groups)


def timed(fn, args, device: str, warmup: int, runs: int) -> float:
    def once():
        start = time.perf_counter()
        fn(*args)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(warmup):
        once()
    return statistics.median(once() for _ in range(runs)) * 1000


def syncs(fn, args) -> int:
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn(*args)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with torch.no_grad():
        for rows in args.rows:
            inputs = batch(rows, args.device)
            a, b = per_item(*inputs), on_device(*inputs)
            assert all(torch.equal(x, y) for x, y in zip(a, b)), "the two splices differ"
            old = timed(per_item, inputs, args.device, args.warmup, args.runs)
            new = timed(on_device, inputs, args.device, args.warmup, args.runs)
            line = f"{rows:3d} rows: per item {old:7.2f} ms, on the device {new:7.2f} ms ({old / new:.1f}x)"
            if args.device == "cuda":
                line += f"; host syncs {syncs(per_item, inputs)} -> {syncs(on_device, inputs)}"
            print(line)


if __name__ == "__main__":
    main()

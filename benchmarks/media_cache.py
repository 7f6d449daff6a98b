"""What the in-memory media cache saves: processing one training batch with and without decoded clips in memory.

    python benchmarks/media_cache.py [--clips 64] [--batch 16] [--repeats 5]

Writes `--clips` synthetic clips, then times `task_batch` (decode, resample, mel, tokenise, collate) for batches of
`--batch` rows of each media task with a plain processor and with one that caches (`UnifiedProcessor.cache_media`,
after one pass that fills it), in the same process on the same rows. Prints seconds per batch and the ratio; both
batches are checked to be identical.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    from unified.api import DEFAULT_MODEL_DIR
    from unified.data import load_data_dir
    from unified.data.synthetic import write_split
    from unified.processing import UnifiedProcessor
    from unified.task_zoo import get_task
    from unified.task_zoo.batching import task_batch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tasks = ["caption", "vqa", "audio_video_mcqa", "grounding"]
    with tempfile.TemporaryDirectory() as tmp:
        write_split(Path(tmp), args.clips, seed=3, split="test", progress=False)
        data, _ = load_data_dir(tmp, tasks)
        plain = UnifiedProcessor.from_pretrained(DEFAULT_MODEL_DIR)
        cached = UnifiedProcessor.from_pretrained(DEFAULT_MODEL_DIR).cache_media(2**30)
        print(f"| task | batch {args.batch}, 64 px, 8 frames | uncached s/batch | cached s/batch | ratio |")
        for name in tasks:
            task, rows = get_task(name), data[name]
            batches = [rows[i: i + args.batch] for i in range(0, len(rows) - args.batch + 1, args.batch)]
            for batch in batches:  # fill the cache: the state after the first epoch of a run
                task_batch(task, batch, cached, rng=random.Random(0))
            times = {}
            for label, proc in (("plain", plain), ("cached", cached)):
                start = time.perf_counter()
                for _ in range(args.repeats):
                    out = [task_batch(task, batch, proc, rng=random.Random(0)) for batch in batches]
                times[label] = (time.perf_counter() - start) / (args.repeats * len(batches))
                if label == "plain":
                    reference = out
            for a, b in zip(reference, out):
                assert all(torch.equal(a[k], b[k]) for k in a), "cached batch differs"
            print(f"| {name} | | {times['plain']:.3f} | {times['cached']:.4f} | "
                  f"{times['plain'] / times['cached']:.1f}x faster |")


if __name__ == "__main__":
    main()

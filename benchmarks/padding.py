"""Padded positions in training batches, and steps/s, with and without length-aware batching.

    python benchmarks/padding.py [--clips 200] [--steps 40] [--timed 30] [--only packed]
        [--pack-length 160 --pack-target-length 32 --pack-visual 10]

On the shapes-small recipe (batch 16) over `--clips` synthetic clips, in one process: the share of encoder
positions (attention_mask 0) and decoder positions (labels -100) that are padding over `--steps` planned batches,
for mixed batches (the recipe: each row's task drawn on its own), the same packed (`data.pack`: several rows per
sequence, block-diagonal attention), one task per batch, and one task per batch with `data.length_buckets: 8`
(rows sorted by text length within 8 steps' worth); then each one's training steps/s (media cache on, after a
warm-up), so the saving is measured on the step, not only counted. Packed batches have fewer rows: their padding
is counted over the rows they have. Token-budget packing (`data.pack_length`, `data.pack_target_length`,
`data.pack_max_visual`) makes a batch 16 packs of those lengths; its rows a batch count the examples. Real tokens/s:
the non-padding prompt and target tokens of the counted batches times steps/s. Encoder positions are the prompt's
tokens, before media latents are spliced in.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
SHAPES = ROOT / "training" / "configs" / "shapes-small.yaml"


def measure(data: Path, out: Path, overrides: list[str], steps: int, timed: int
            ) -> tuple[float, float, float, float, float]:
    """(encoder padding share, decoder padding share, rows per batch, steps/s over `timed` training steps, real
    tokens per step)."""
    from unified.training import load_config
    from unified.training.loop import Run

    cfg = load_config(SHAPES, [f"output_dir={out}", f"data.train_dir={data}", "data.synthetic=null", "eval.every=0",
                               "checkpoint.every=0", "data.check_media=false", *overrides])
    run = Run(cfg, progress=False, overwrite=True)
    pad = {"enc": [0, 0], "dec": [0, 0], "rows": 0, "real": 0}
    for _ in range(steps):
        prepared = next(run.batches)
        run.planner.consumed(prepared.plan)
        batches = [b for b in (prepared.batch, *prepared.own.values()) if b is not None]
        for b in batches:
            pad["rows"] += b["input_ids"].shape[0] if prepared.packs is None or b is not prepared.batch else sum(
                len(members) for members in prepared.packs)
            pad["real"] += int(b["attention_mask"].sum()) + (int((b["labels"] != -100).sum()) if "labels" in b else 0)
            pad["enc"][0] += int((b["attention_mask"] == 0).sum())
            pad["enc"][1] += b["attention_mask"].numel()
            if "labels" in b:
                pad["dec"][0] += int((b["labels"] == -100).sum())
                pad["dec"][1] += b["labels"].numel()
    run.close()
    rate = float("nan")
    if timed:
        run = Run(cfg, progress=False, overwrite=True)
        for step in range(10):
            run.enter_stage(step)
            run.step(step)
        start = time.perf_counter()
        for step in range(10, 10 + timed):
            run.enter_stage(step)
            run.step(step)
        rate = timed / (time.perf_counter() - start)
        run.close()
    return (pad["enc"][0] / pad["enc"][1], pad["dec"][0] / max(1, pad["dec"][1]), pad["rows"] / steps, rate,
            pad["real"] / steps)


def main() -> None:
    from unified.data.synthetic import write_split

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--timed", type=int, default=30)
    parser.add_argument("--pack-length", type=int, default=160, help="data.pack_length of the token-budget run")
    parser.add_argument("--pack-target-length", type=int, default=32)
    parser.add_argument("--pack-visual", type=int, default=10, help="data.pack_max_visual")
    parser.add_argument("--only", nargs="*", default=None, help="run only the rows whose label has one of these words")
    args = parser.parse_args()
    budget = [f"data.pack_length={args.pack_length}", f"data.pack_target_length={args.pack_target_length}",
              f"data.pack_max_visual={args.pack_visual}"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_split(tmp / "train", args.clips, seed=0, split="train", progress=False)
        runs = {"mixed batches (the recipe)": (["mixture.mixed_batches=true"], args.timed),
                "mixed batches, packed": (["mixture.mixed_batches=true", "data.pack=true"], args.timed),
                f"mixed batches, packed to {args.pack_length} / {args.pack_target_length} tokens": (
                    ["mixture.mixed_batches=true", "data.pack=true", *budget], args.timed),
                "one task per batch": (["mixture.mixed_batches=false"], args.timed),
                "one task per batch, length_buckets 8": (["mixture.mixed_batches=false", "data.length_buckets=8"],
                                                         args.timed)}
        if args.only:
            runs = {k: v for k, v in runs.items() if any(word in k for word in args.only)}
        print(f"| shapes-small, batch 16, {args.clips} clips | encoder padding | decoder padding | rows a batch | "
              "steps/s | real tokens/s |")
        for i, (label, (overrides, timed)) in enumerate(runs.items()):
            enc, dec, rows, rate, real = measure(tmp / "train", tmp / f"run{i}", overrides, args.steps, timed)
            print(f"| {label} | {100 * enc:.1f} % | {100 * dec:.1f} % | {rows:.1f} | {rate:.2f} | {real * rate:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()

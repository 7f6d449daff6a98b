"""Real tokens per second of training on the same rows packed to a token budget and unpacked.

    python benchmarks/pack_speed.py [--clips 100] [--plans 2] [--repeats 2] [--threads 1]
        [--pack-length 160 --pack-target-length 32 --pack-visual 10] [--text-only]

On the shapes-small recipe (mixed batches), the planner makes `--plans` token-budget batches (16 packs each); the
same rows, with the same prompts, are then also cut into batches of 16 unpacked rows. One training step (forward,
backward, AdamW) per batch, the two sets alternated `--repeats` times in one process (a busy machine slows both
alike); the median time of each set gives real (non-padding prompt and target) tokens per second. `--text-only`
trains text2text alone, the text-heavy case.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).parents[1]
SHAPES = ROOT / "training" / "configs" / "shapes-small.yaml"


def main() -> None:
    from unified.data.synthetic import write_split
    from unified.training import load_config
    from unified.training.batches import PlannedBatches, prepare
    from unified.training.loop import Run
    from unified.training.loss import batch_loss
    from unified.training.packing import row_rng

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--plans", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pack-length", type=int, default=160)
    parser.add_argument("--pack-target-length", type=int, default=32)
    parser.add_argument("--pack-visual", type=int, default=10)
    parser.add_argument("--text-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_split(tmp / "train", args.clips, seed=0, split="train", progress=False)
        overrides = [f"output_dir={tmp / 'run'}", f"data.train_dir={tmp / 'train'}", "data.synthetic=null",
                     "eval.every=0", "checkpoint.every=0", "data.check_media=false", "mixture.mixed_batches=true",
                     "data.pack=true", f"data.pack_length={args.pack_length}",
                     f"data.pack_target_length={args.pack_target_length}",
                     f"data.pack_max_visual={args.pack_visual}"]
        if args.text_only:
            overrides += ["data.tasks=[text2text]", "task_options={}"]
        cfg = load_config(SHAPES, overrides)
        run = Run(cfg, progress=False, overwrite=True)
        dataset = PlannedBatches(run.tasks, run.processor, run.train_rows, cfg.seed, pack=True)
        packed, unpacked = [], []
        for _ in range(args.plans):
            prepared = next(run.batches)
            run.planner.consumed(prepared.plan)
            plan = prepared.plan
            if plan.packs is None:  # a contrastive batch: not part of this comparison
                continue
            packed.append(dataset[plan])
            named = [(t, run.train_rows[t][i]) for t, i in plan.rows]
            rngs = [row_rng(cfg.seed, plan.step, plan.micro, t, i) for t, i in plan.rows]
            size = cfg.optim.batch_size
            for start in range(0, len(named), size):
                unpacked.append(prepare(run.tasks, run.processor, named[start:start + size], None,
                                        row_rngs=rngs[start:start + size]))
        model, optimizer, device = run.model, run.optimizer, run.accelerator.device

        def train(batches) -> float:
            start = time.perf_counter()
            for prepared in batches:
                loss, _ = batch_loss(cfg, run.tasks, prepared, model, device)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            return time.perf_counter() - start

        def tokens(batches) -> int:
            return sum(int(b.batch["attention_mask"].sum()) + int((b.batch["labels"] != -100).sum())
                       for b in batches)

        times: tuple[list[float], list[float]] = ([], [])
        train(packed[:1])  # warm-up
        for _ in range(args.repeats):
            times[0].append(train(unpacked))
            times[1].append(train(packed))
        run.close()
        before, after = statistics.median(times[0]), statistics.median(times[1])
        real = tokens(packed)
        assert real == tokens(unpacked), "the two sets must hold the same tokens"
        rows = sum(len(b.names) for b in packed)
        what = "text2text" if args.text_only else "the shapes-small mixture"
        print(f"| {what}: {rows} rows, {args.pack_length} / {args.pack_target_length} tokens a pack | "
              f"{len(packed)} packed batches: {real / after:.0f} real tokens/s | {len(unpacked)} unpacked batches: "
              f"{real / before:.0f} real tokens/s | {before / after:.2f}x |")


if __name__ == "__main__":
    main()

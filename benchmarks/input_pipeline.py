"""The input pipeline against the model's own step: steps/s with batches prepared in the training process, in
DataLoader workers and from the media cache, and the cost of decoding a 720p clip at full size vs at the
processor's size.

    python benchmarks/input_pipeline.py [--clips 64] [--steps 30] [--workers 1 2]

1. Steps/s on the shapes-small recipe (the default model's config: small preset narrowed, 10 tasks in mixed batches
   of 16, 64 px, 8 frames) over `--clips` synthetic clips, in one process, each run after `--warm` untimed steps:
   media cache off with 0 workers, media cache off with each `--workers` count, media cache on (every clip decoded
   once during the warm-up steps, the state after a run's first epoch), and from `unified data shard --decode`
   shards (media decoded when sharded) with the cache off. The ratios are against the cached run.
2. One 720p H.264 clip (5 s, 30 fps, moving shapes over a gradient with grain; written here) sampled to 6 and 16
   frames for a 224 px model: decoded at 1280x720 then resized (antialiased bilinear), against decoded at 224 px
   (`load_video(size=224)`, FFmpeg scaling each chosen frame). Medians of `--repeats`, one thread.
   Each run also reports the share of its wall time the training process spent waiting for the next batch (the
   time an accelerator would sit idle).
3. How many workers a step hides on such video: a batch of 16 clips' decode time (2.) over the cached step time (1.).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).parents[1]
SHAPES = ROOT / "training" / "configs" / "shapes-small.yaml"


class Waited:
    """Wraps the run's batch iterator: seconds the training process spends waiting for its next batch."""

    def __init__(self, batches):
        self.batches, self.seconds = batches, 0.0

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.batches)
        finally:
            self.seconds += time.perf_counter() - start

    def close(self):
        self.batches.close()


def steps_per_second(data: Path, out: Path, overrides: list[str], steps: int, warm: int) -> tuple[float, float]:
    """(steps/s, share of the timed steps' wall time the training process waited for batches)."""
    from unified.training import load_config
    from unified.training.loop import Run

    cfg = load_config(SHAPES, [f"output_dir={out}", f"data.train_dir={data}", "data.synthetic=null", "eval.every=0",
                               "checkpoint.every=0", "data.check_media=false", *overrides])
    run = Run(cfg, progress=False, overwrite=True)
    for step in range(warm):
        run.enter_stage(step)
        run.step(step)
    run.batches = waited = Waited(run.batches)
    start = time.perf_counter()
    for step in range(warm, warm + steps):
        run.enter_stage(step)
        run.step(step)
    elapsed = time.perf_counter() - start
    run.close()
    return steps / elapsed, waited.seconds / elapsed


def write_720p(path: Path, seconds: float = 5.0, fps: int = 30) -> Path:
    import av

    rng = np.random.default_rng(0)
    h, w = 720, 1280
    y, x = np.mgrid[0:h, 0:w]
    background = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1).astype(np.int16)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(int(seconds * fps)):
            frame = background.copy()
            for k in range(6):  # six squares crossing the frame at their own speeds
                cx, cy = (100 + 37 * k + 9 * (k + 1) * i) % w, (80 + 101 * k + 3 * (k + 2) * i) % h
                frame[max(0, cy - 60):cy + 60, max(0, cx - 60):cx + 60] = (40 * k, 255 - 40 * k, 128)
            frame += rng.integers(-6, 7, size=(h, w, 1), dtype=np.int16)  # film grain
            image = av.VideoFrame.from_ndarray(frame.clip(0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(image):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def decode_ms(path: Path, frames: int, size: int | None, repeats: int) -> float:
    import torch.nn.functional as F

    from unified.media import load_video

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        video = load_video(path, fps=None, num_frames=frames, size=size)
        if size is None:
            F.interpolate(video.frames.permute(0, 3, 1, 2).float(), size=(224, 224), mode="bilinear",
                          antialias=True, align_corners=False)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    from unified.data.synthetic import write_split

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warm", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_split(tmp / "train", args.clips, seed=0, split="train", progress=False)
        runs = {"0 workers, no cache": ["data.num_workers=0", "data.media_cache_mb=0"]}
        for n in args.workers:
            runs[f"{n} workers, no cache"] = [f"data.num_workers={n}", "data.media_cache_mb=0"]
        runs["0 workers, cached"] = ["data.num_workers=0", "data.media_cache_mb=2048"]
        rate = {label: steps_per_second(tmp / "train", tmp / f"run{i}", o, args.steps, args.warm)
                for i, (label, o) in enumerate(runs.items())}
        from unified.data.shards import write_shards
        from unified.training.build import processor_settings

        write_shards(tmp / "train", tmp / "decoded", progress=False, decode=processor_settings(SHAPES, tmp / "train"))
        rate["decoded shards, 0 workers, no cache"] = steps_per_second(
            tmp / "decoded", tmp / "run-decoded", ["data.num_workers=0", "data.media_cache_mb=0"], args.steps,
            args.warm)
        cached = rate["0 workers, cached"][0]
        print(f"| shapes-small, batch 16, {args.clips} clips, {torch.get_num_threads()} threads | steps/s | "
              "vs cached | waiting for batches |")
        for label, (value, waiting) in rate.items():
            print(f"| {label} | {value:.2f} | {value / cached:.2f} | {100 * waiting:.0f} % |")

        torch.set_num_threads(1)
        clip = write_720p(tmp / "720p.mp4")
        print("| 720p H.264, 5 s, for a 224 px model | full size + resize ms | at size ms | ratio |")
        at_size = {}
        for frames in (6, 16):
            full = decode_ms(clip, frames, None, args.repeats)
            at_size[frames] = decode_ms(clip, frames, 224, args.repeats)
            print(f"| {frames} frames | {full:.0f} | {at_size[frames]:.0f} | {full / at_size[frames]:.2f}x faster |")
        batch_s = 16 * at_size[6] / 1000
        print(f"| a batch of 16 such clips (6 frames) | {batch_s:.2f} s to decode | step {1 / cached:.2f} s | "
              f"{batch_s * cached:.1f} workers to hide it |")


if __name__ == "__main__":
    main()

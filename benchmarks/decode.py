"""How much seeking saves: `load_video(path, max_frames=8)` vs decoding every frame with PyAV and picking 8.

Writes synthetic 480p clips (a moving texture, libx264 veryfast) to a temporary folder, then times,
in one process, the median of a few runs of:

    seek      load_video(path, fps=1.0, max_frames=8)    60 s at fps=1 is 60 > 8 times: 8 uniform frames
    decode    every frame decoded, every one converted to RGB numpy, 8 picked (the naive loader)
    decode*   every frame decoded, only the 8 picked ones converted (a leaner baseline)

for a 2 s GOP (keyframe every 50 frames) and x264's default 250-frame GOP, and checks that the seek path
returns the same pixels as the baselines. A last section shows the cost does not grow with length:
8 frames from a 60 s and a 240 s low-resolution clip (and a one-hour one with --hour).

    .venv/bin/python benchmarks/decode.py [--repeats 3] [--seconds 60] [--hour]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from unified.media import load_video, sample_times


def write_clip(path: Path, seconds: float, fps: int = 25, size=(640, 480), gop: int = 50) -> Path:
    """A yuv420p clip of a blocky random texture over a gradient, sliding 3 px per frame.

    x264's veryfast preset keeps CABAC, B-frames and deblocking, so decoding costs what real footage does
    per frame (ultrafast would switch those off and flatter the decode-everything baseline's cost).
    """
    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream(
            "libx264", rate=fps, options={"preset": "veryfast", "x264-params": f"keyint={gop}:scenecut=0"}
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        texture = np.random.default_rng(0).integers(0, 256, (height // 8, width // 4), dtype=np.uint8)
        texture = texture.repeat(8, axis=0).repeat(8, axis=1)  # [H, 2W], 8x8 blocks
        ramp = np.add.outer(np.arange(height), np.arange(2 * width)) % 256  # [H, 2W]
        luma = (ramp // 2 + texture // 2).astype(np.uint8)
        chroma = np.full((height // 2, width), 128, np.uint8)  # U and V planes, stacked: [H/2, W]
        for i in range(round(seconds * fps)):
            shift = (3 * i) % width
            planes = np.concatenate([luma[:, shift : shift + width], chroma])  # [H * 3/2, W]
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def decode_everything(path: Path, times: list[float], convert_all: bool) -> np.ndarray:
    """Decode every frame in order; return uint8 [8, H, W, 3] of the last frame at or before each time."""
    picked, cursor = [], 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]  # PyAV's default threading, as load_video uses
        base = stream.time_base
        previous = None
        for frame in container.decode(stream):
            array = frame.to_ndarray(format="rgb24") if convert_all else None
            while cursor < len(times) and frame.pts * base > times[cursor] + 1e-9:
                picked.append(previous)
                cursor += 1
            previous = (frame, array)
        picked += [previous] * (len(times) - cursor)
        frames = [a if a is not None else f.to_ndarray(format="rgb24") for f, a in picked]
    return np.stack(frames)


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    result, durations = None, []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations), result


def compare(path: Path, repeats: int) -> tuple[float, float, float]:
    """Median seconds of (seek, decode all + convert all, decode all + convert 8); checks equal pixels."""
    seek_s, video = median_seconds(lambda: load_video(path, fps=1.0, max_frames=8), repeats)
    times = sample_times(video.duration, fps=1.0, max_frames=8)
    naive_s, naive = median_seconds(lambda: decode_everything(path, times, True), repeats)
    lean_s, lean = median_seconds(lambda: decode_everything(path, times, False), repeats)
    if not (np.array_equal(video.frames.numpy(), naive) and np.array_equal(naive, lean)):
        raise AssertionError(f"{path.name}: load_video returned other frames than the full decode")
    return seek_s, naive_s, lean_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--hour", action="store_true", help="also a one-hour clip (about a minute more)")
    args = parser.parse_args()
    rows, scaling = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for gop in (50, 250):
            start = time.perf_counter()
            path = write_clip(Path(tmp) / f"clip_gop{gop}.mp4", args.seconds, gop=gop)
            print(f"wrote {args.seconds:.0f} s 480p gop={gop} in {time.perf_counter() - start:.1f} s")
            seek_s, naive_s, lean_s = compare(path, args.repeats)
            rows.append(
                f"| 480p {args.seconds:.0f} s, GOP {gop} ({gop / 25:.0f} s) | {seek_s * 1e3:.0f} ms "
                f"| {naive_s * 1e3:.0f} ms | {naive_s / seek_s:.1f}x | {lean_s * 1e3:.0f} ms | {lean_s / seek_s:.1f}x |"
            )
        for seconds in (60.0, 240.0) + ((3600.0,) if args.hour else ()):
            start = time.perf_counter()
            path = write_clip(Path(tmp) / f"small_{seconds:.0f}.mp4", seconds, size=(96, 64), gop=50)
            print(f"wrote {seconds:.0f} s 96x64 gop=50 in {time.perf_counter() - start:.1f} s")
            seek_s, _, lean_s = compare(path, args.repeats if seconds < 3600 else 1)
            scaling.append(
                f"| 96x64 {seconds:.0f} s, GOP 50 | {seek_s * 1e3:.1f} ms | {lean_s * 1e3:.0f} ms |"
            )

    print(f"\n8 frames sampled uniformly (median of {args.repeats} runs, one process):\n")
    print(
        "| clip | load_video (seek) | decode all, convert all | speed-up | decode all, convert 8 | speed-up |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nCost vs length, 8 frames:\n")
    print("| clip | load_video (seek) | decode all, convert 8 |")
    print("|---|---|---|")
    print("\n".join(scaling))


if __name__ == "__main__":
    main()

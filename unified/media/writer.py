"""Writers for what the loaders read: an mp4 (H.264 video, optional AAC audio) and a PNG.

    >>> write_clip("clip.mp4", frames, fps=4, audio=wave, sampling_rate=16000)   # frames uint8 [T, H, W, 3]
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from unified.errors import InputError


def write_clip(path: str | Path, frames: np.ndarray, fps: float, audio: np.ndarray | None = None,
               sampling_rate: int = 16000, crf: int = 12) -> Path:
    """frames uint8 [T, H, W, 3] (H, W even) at `fps`, audio float32 mono [N] in [-1, 1] -> an mp4 at `path`.

    Every frame is a keyframe-close one (GOP 8, no B-frames), so exact seeking costs little; `crf` 12 keeps colours
    within a few levels of the input."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError("frames", getattr(frames, "shape", frames), "expected uint8 [T, H, W, 3]")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise InputError("frames", frames.shape, "H.264 (yuv420p) needs an even height and width")
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001 * 1000)
    with av.open(str(path), "w") as out:
        x264 = "keyint=8:min-keyint=8:scenecut=0:bframes=0"
        options = {"crf": str(crf), "preset": "veryfast", "x264-params": x264}
        video = out.add_stream("libx264", rate=rate, options=options)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream = out.add_stream("aac", rate=sampling_rate, layout="mono") if audio is not None else None
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1) / rate
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if stream is not None:
            samples = np.asarray(audio, dtype=np.float32).reshape(1, -1)  # planar mono [1, N]
            for start in range(0, samples.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]),
                                                   format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = sampling_rate, start, Fraction(1, sampling_rate)
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
    return path


def write_image(path: str | Path, frame: np.ndarray) -> Path:
    """uint8 [H, W, 3] -> a PNG (lossless)."""
    path = Path(path)
    Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(path)
    return path

"""Small media shipped inside the package, so the examples in the README and the docs run from a fresh install.

    >>> from unified import Model
    >>> from unified.samples import CLIP, FRAME
    >>> Model.generate(task="caption", video=CLIP)
    'the blue triangle moves up.'

`CLIP` is one clip of the synthetic world (`unified.data.synthetic`, test split, seed 7; 4.9 KiB): 2 s, 8 frames at
4 fps, 64 x 64 px, one blue triangle that moves up and is visible from 0 to 1.25 s, and a high (1,760 Hz) beep.
`FRAME` is its grounding frame (a PNG of 64 x 64 px; the triangle's box is (3.9, 24.0, 18.9, 39.0) in pixels).
`unified data synth` or `unified demo` write more clips like it, with the truth for every task.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
CLIP = HERE / "clip.mp4"
FRAME = HERE / "frame.png"

__all__ = ["CLIP", "FRAME"]

"""The synthetic world's scenes: coloured shapes that appear, move and disappear over a short clip, and one beep.

A `Scene` is the whole truth about a clip; `render` turns it into frames and audio, and every question in
`unified.data.synthetic` is answered from the `Scene` alone.

    clip:   8 frames at 4 fps (2.0 s), 64 x 64 px, dark grey background; 16 kHz mono audio
    shapes: 1-3, each of its own colour, 14-18 px, moving left/right/up/down at 2-4 px per frame; the first
            is visible from frame 0, the others appear at later, distinct frames; each stays at least 3 frames;
            shapes never overlap
    beep:   one 0.25 s tone when a chosen shape appears: "low" 440 Hz or "high" 1760 Hz, silence elsewhere
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

FRAMES, FPS, SIZE, SAMPLING_RATE = 8, 4.0, 64, 16000
DURATION = FRAMES / FPS
BACKGROUND = (40, 40, 40)
COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (240, 220, 40)}
KINDS = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
PITCHES = {"low": 440.0, "high": 1760.0}
BEEP_SECONDS = 0.25
# (colour, kind) pairs that never occur in the train and test splits: the compositional split is made of them.
HELD_OUT = frozenset({("red", "triangle"), ("blue", "circle"), ("green", "square")})


@dataclass(frozen=True)
class Shape:
    colour: str
    kind: str
    size: int  # px: the side of the square, the diameter of the circle, the base and height of the triangle
    x: float  # centre at frame 0 of the clip (extrapolated when the shape appears later)
    y: float
    direction: str
    speed: float  # px per frame
    appear: int  # first visible frame
    disappear: int  # first frame it is gone (FRAMES when it stays to the end)

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"

    def centre(self, frame: int) -> tuple[float, float]:
        dx, dy = DIRECTIONS[self.direction]
        return self.x + dx * self.speed * frame, self.y + dy * self.speed * frame

    def visible(self, frame: int) -> bool:
        return self.appear <= frame < self.disappear

    def box(self, frame: int) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) pixels of the shape at `frame`."""
        cx, cy = self.centre(frame)
        h = self.size / 2
        return cx - h, cy - h, cx + h, cy + h

    @property
    def span(self) -> tuple[float, float]:
        """Seconds during which it is visible."""
        return self.appear / FPS, self.disappear / FPS


@dataclass(frozen=True)
class Scene:
    clip_id: str
    shapes: tuple[Shape, ...]  # in order of appearance
    beep_shape: int  # index into shapes
    pitch: str  # "low" | "high"

    @property
    def beep_time(self) -> float:
        return self.shapes[self.beep_shape].appear / FPS

    def to_dict(self) -> dict:
        return asdict(self)


def _overlap(a: Shape, b: Shape) -> bool:
    for frame in range(FRAMES):
        if a.visible(frame) and b.visible(frame):
            ax0, ay0, ax1, ay1 = a.box(frame)
            bx0, by0, bx1, by1 = b.box(frame)
            if ax0 < bx1 + 2 and bx0 < ax1 + 2 and ay0 < by1 + 2 and by0 < ay1 + 2:
                return True
    return False


def _pairs(split: str) -> list[tuple[str, str]]:
    everything = [(c, k) for c in COLOURS for k in KINDS]
    if split == "compositional":
        return everything
    return [p for p in everything if p not in HELD_OUT]


def _shape(rng: np.random.Generator, pair: tuple[str, str], appear: int) -> Shape:
    size = int(rng.integers(14, 19))
    direction = str(rng.choice(list(DIRECTIONS)))
    speed = float(rng.integers(2, 5))
    disappear = int(rng.integers(min(appear + 3, FRAMES), FRAMES + 1))
    dx, dy = DIRECTIONS[direction]
    half = size / 2 + 1
    # keep the whole visible path inside the frame
    lo_x = half - min(0, dx * speed * appear, dx * speed * (disappear - 1))
    hi_x = SIZE - half - max(0, dx * speed * appear, dx * speed * (disappear - 1))
    lo_y = half - min(0, dy * speed * appear, dy * speed * (disappear - 1))
    hi_y = SIZE - half - max(0, dy * speed * appear, dy * speed * (disappear - 1))
    x, y = float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y))
    return Shape(pair[0], pair[1], size, round(x, 2), round(y, 2), direction, speed, appear, disappear)


def sample_scene(rng: np.random.Generator, split: str, clip_id: str) -> Scene:
    """A random scene; in the compositional split at least one shape is a held-out (colour, kind) pair."""
    pairs = _pairs(split)
    while True:
        count = int(rng.integers(1, 4))
        chosen_idx = rng.choice(len(pairs), size=count, replace=False)
        chosen = [pairs[i] for i in chosen_idx]
        if split == "compositional" and not any(p in HELD_OUT for p in chosen):
            continue
        if len({colour for colour, _ in chosen}) < count:  # one shape per colour: a colour names a shape
            continue
        appears = [0, *sorted(rng.choice(np.arange(1, 5), size=count - 1, replace=False).tolist())]
        shapes = [_shape(rng, pair, appear) for pair, appear in zip(chosen, appears)]
        if any(_overlap(a, b) for i, a in enumerate(shapes) for b in shapes[i + 1:]):
            continue
        return Scene(clip_id, tuple(shapes), int(rng.integers(count)), str(rng.choice(list(PITCHES))))


# ------------------------------------------------------------------------------------------------ rendering
_YY, _XX = np.mgrid[0:SIZE, 0:SIZE] + 0.5  # pixel centres


def shape_mask(shape: Shape, frame: int) -> np.ndarray:
    """bool [SIZE, SIZE]: the pixels the shape covers at `frame`."""
    cx, cy = shape.centre(frame)
    h = shape.size / 2
    if shape.kind == "circle":
        return (_XX - cx) ** 2 + (_YY - cy) ** 2 <= h * h
    if shape.kind == "square":
        return (np.abs(_XX - cx) <= h) & (np.abs(_YY - cy) <= h)
    # triangle pointing up: apex (cx, cy - h), base from (cx - h, cy + h) to (cx + h, cy + h)
    depth = _YY - (cy - h)  # 0 at the apex, 2h at the base
    return (depth >= 0) & (depth <= 2 * h) & (np.abs(_XX - cx) <= depth / 2)


def render(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """-> frames uint8 [FRAMES, SIZE, SIZE, 3], audio float32 [DURATION * SAMPLING_RATE]."""
    frames = np.empty((FRAMES, SIZE, SIZE, 3), np.uint8)
    frames[:] = BACKGROUND
    for t in range(FRAMES):
        for shape in scene.shapes:
            if shape.visible(t):
                frames[t][shape_mask(shape, t)] = COLOURS[shape.colour]
    audio = np.zeros(int(DURATION * SAMPLING_RATE), np.float32)
    start = round(scene.beep_time * SAMPLING_RATE)
    n = int(BEEP_SECONDS * SAMPLING_RATE)
    t = np.arange(n) / SAMPLING_RATE
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)  # 10 ms ramps: no clicks
    tone = 0.5 * fade * np.sin(2 * np.pi * PITCHES[scene.pitch] * t)
    audio[start:start + n] = tone[: len(audio) - start]
    return frames, audio

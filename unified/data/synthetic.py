"""The built-in synthetic audio-visual world: scenes (`unified.data.scene`) with ground truth for every built-in task.

    >>> clips = generate(4, seed=0, split="train")            # in memory: scene, frames, audio, rows per task
    >>> write_split("data/train", n=1000, seed=0)             # mp4 clips + one JSONL per task (as `unified data synth`)

Deterministic per (seed, split): the random stream is seeded with both, so test clips never repeat train clips, and
the compositional split is made of (colour, kind) pairs that train and test never show. Every answer is computed
from the `Scene`; the questions ask about order, direction, counting, what follows what, and the beep, so most need
several frames (and the audio questions the audio).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from unified.data.scene import (
    COLOURS,
    DIRECTIONS,
    DURATION,
    FPS,
    FRAMES,
    KINDS,
    SIZE,
    Scene,
    render,
    sample_scene,
)
from unified.errors import InputError
from unified.media.writer import write_clip, write_image
from unified.task_zoo import get_task, list_tasks

SPLITS = {"train": 0, "test": 1, "compositional": 2}
TASKS = ("caption", "vqa", "video_mcqa", "audio_video_mcqa", "grounding", "temporal_grounding", "classify",
         "regress", "text2text", "retrieval")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}


@dataclass
class Clip:
    scene: Scene
    frames: np.ndarray  # uint8 [FRAMES, SIZE, SIZE, 3]
    audio: np.ndarray  # float32 [N]
    rows: dict[str, list[dict[str, Any]]]  # task -> rows; media fields hold "{video}" / "{image}" placeholders


# ------------------------------------------------------------------------------------------------ language
def _clause(shape, first: bool) -> str:
    verb = "moves" if first else "appears and moves"
    return f"a {shape.name} {verb} {shape.direction}"


def captions(scene: Scene, rng: np.random.Generator) -> list[str]:
    s = scene.shapes
    one = ", then ".join(_clause(x, i == 0) for i, x in enumerate(s))
    two = "first " + ", then ".join(f"a {x.name} moving {x.direction}" for x in s)
    three = f"{COUNT_WORDS[len(s)]} shape{'s' if len(s) > 1 else ''}: " + " and ".join(
        f"a {x.name} going {x.direction}" for x in s)
    four = " ".join(f"the {x.name} moves {x.direction}." for x in s).rstrip(".")
    refs = [one, two, three, four]
    return [r + "." if not r.endswith(".") else r for r in refs]


def describe(scene: Scene) -> str:
    """Plain English: every shape, its motion, when it is visible, and the beep."""
    parts = [f"a {x.name} moves {x.direction} from {x.span[0]:.2f} s to {x.span[1]:.2f} s." for x in scene.shapes]
    parts.append(f"a {scene.pitch} beep sounds when the {scene.shapes[scene.beep_shape].name} appears.")
    return " ".join(parts)


# ------------------------------------------------------------------------------------------------ questions
def _mc(question: str, answer: str, distractors: list[str], rng: np.random.Generator, size: int = 4) -> dict:
    others = [d for d in dict.fromkeys(distractors) if d != answer]
    picked = list(rng.choice(others, size=min(size - 1, len(others)), replace=False)) if others else []
    options = [answer, *map(str, picked)]
    order = rng.permutation(len(options))
    options = [options[i] for i in order]
    return {"question": question, "options": options, "answer_index": options.index(answer)}


def _names(scene: Scene, rng: np.random.Generator) -> list[str]:
    """The clip's shape names plus a few that are not in it (distractors)."""
    others = [f"{c} {k}" for c in COLOURS for k in KINDS]
    return [x.name for x in scene.shapes] + [others[i] for i in rng.permutation(len(others))[:3]]


def video_questions(scene: Scene, rng: np.random.Generator) -> list[dict]:
    s = scene.shapes
    names = _names(scene, rng)
    moving = s[int(rng.integers(len(s)))]
    out = [_mc(f"which way does the {moving.name} move?", moving.direction, list(DIRECTIONS), rng),
           _mc("how many shapes appear in the clip?", str(len(s)), ["1", "2", "3", "4"], rng)]
    if len(s) > 1:
        out.append(_mc("which shape appears last?", s[-1].name, names, rng))
        i = int(rng.integers(len(s) - 1))
        out.append(_mc(f"what appears after the {s[i].name}?", s[i + 1].name, names, rng))
    return out


def audio_questions(scene: Scene, rng: np.random.Generator) -> list[dict]:
    out = [_mc("was the beep high or low?", scene.pitch, ["high", "low"], rng, size=2)]
    if len(scene.shapes) > 1:
        out.append(_mc("which shape appeared when the beep sounded?", scene.shapes[scene.beep_shape].name,
                       [x.name for x in scene.shapes], rng))
    return out


def vqa_questions(scene: Scene) -> list[dict]:
    s = scene.shapes
    out = []
    for x in s:
        if sum(y.kind == x.kind for y in s) == 1:
            out.append({"question": f"what colour is the {x.kind}?", "answer": x.colour})
        if sum(y.colour == x.colour for y in s) == 1:
            out.append({"question": f"what shape is {x.colour}?", "answer": x.kind})
    return out


# ------------------------------------------------------------------------------------------------ rows
def _grounding_frame(scene: Scene) -> int:
    """The first frame showing the most shapes."""
    counts = [sum(x.visible(t) for x in scene.shapes) for t in range(FRAMES)]
    return int(np.argmax(counts))


def scene_rows(scene: Scene, rng: np.random.Generator) -> dict[str, list[dict[str, Any]]]:
    """Rows for every built-in task; media fields are the placeholders "{video}" and "{image}"."""
    s, video = scene.shapes, "{video}"
    refs = captions(scene, rng)
    g_frame = _grounding_frame(scene)
    g_shape = [x for x in s if x.visible(g_frame)][int(rng.integers(sum(x.visible(g_frame) for x in s)))]
    t_shape = s[int(rng.integers(len(s)))]
    r_shape = s[int(rng.integers(len(s)))]
    axis = 0 if DIRECTIONS[r_shape.direction][0] else 1
    last = r_shape.disappear - 1
    trajectory = [round(r_shape.centre(t)[axis], 2) for t in range(FRAMES)]
    sentences = " ".join(f"a {x.name} moves {x.direction}." for x in s)
    asked = s[int(rng.integers(len(s)))]
    text_rows = [{"text": f"{sentences} which way does the {asked.name} move?", "target": asked.direction}]
    if len(s) > 1:
        text_rows.append({"text": f"{sentences} which shape is mentioned first?", "target": s[0].name})
    return {
        "caption": [{"video": video, "caption": refs[0], "captions": refs}],
        "vqa": [{"video": video, **q} for q in vqa_questions(scene)],
        "video_mcqa": [{"video": video, **q} for q in video_questions(scene, rng)],
        "audio_video_mcqa": [{"video": video, "audio": video, **q} for q in audio_questions(scene, rng)],
        "grounding": [{"image": "{image}", "phrase": g_shape.name, "image_size": [SIZE, SIZE],
                       "box": [round(v, 2) for v in g_shape.box(g_frame)]}],
        "temporal_grounding": [{"video": video, "question": f"when is the {t_shape.name} visible?",
                                "span": list(t_shape.span), "duration": DURATION}],
        "classify": [{"video": video, "label": s[0].direction, "labels": list(DIRECTIONS)}],
        "regress": [{"video": video, "value_range": [0, SIZE], "values": [round(r_shape.centre(last)[axis], 2)],
                     "question": f"where is the {r_shape.name} along its path when it is last seen?"},
                    {"inputs": trajectory[:5], "values": trajectory[5:], "value_range": [-32, 96]}],
        "text2text": text_rows,
        "retrieval": [{"video": video, "text": refs[0], "group": scene.clip_id}],
    }


def plugin_rows(scene: Scene) -> dict[str, list[dict[str, Any]]]:
    """Rows of every other registered task that describes synthetic scenes (`Task.synthetic_rows`)."""
    rows = {}
    for name in list_tasks():
        if name not in TASKS:
            task_rows = get_task(name).synthetic_rows(scene)
            if task_rows:
                rows[name] = [dict(r) for r in task_rows]
    return rows


def _rng(seed: int, split: str) -> np.random.Generator:
    if split not in SPLITS:
        raise InputError("split", split, f"expected one of {sorted(SPLITS)}")
    return np.random.default_rng([int(seed), SPLITS[split]])


def generate(n: int, seed: int = 0, split: str = "train") -> list[Clip]:
    """`n` clips in memory (scene, frames, audio, rows)."""
    if not isinstance(n, int) or n < 1:
        raise InputError("n", n, "expected a positive number of clips")
    rng = _rng(seed, split)
    clips = []
    for i in range(n):
        scene = sample_scene(rng, split, f"{split}_{seed}_{i:05d}")
        frames, audio = render(scene)
        clips.append(Clip(scene, frames, audio, {**scene_rows(scene, rng), **plugin_rows(scene)}))
    return clips


def _fill(row: dict[str, Any], video: str, image: str) -> dict[str, Any]:
    return {k: (video if v == "{video}" else image if v == "{image}" else v) for k, v in row.items()}


def write_split(out_dir: str | Path, n: int, seed: int = 0, split: str = "train", progress: bool = True
                ) -> dict[str, Path]:
    """Write `n` clips as `clips/*.mp4` (+ a PNG for grounding), one `{task}.jsonl` per task and `scenes.jsonl`.
    Returns {task: path of its JSONL}."""
    if not isinstance(n, int) or n < 1:
        raise InputError("n", n, "expected a positive number of clips")
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    rng = _rng(seed, split)
    rows: dict[str, list[dict]] = {task: [] for task in TASKS}  # + plug-in tasks' rows (`plugin_rows`)
    scenes = []
    for i in tqdm(range(n), desc=f"synth {split}", unit="clip", disable=not progress):
        scene = sample_scene(rng, split, f"{split}_{seed}_{i:05d}")
        frames, audio = render(scene)
        video = f"clips/{scene.clip_id}.mp4"
        image = f"clips/{scene.clip_id}_g.png"
        write_clip(out / video, frames, FPS, audio)
        write_image(out / image, frames[_grounding_frame(scene)])
        for task, task_rows in {**scene_rows(scene, rng), **plugin_rows(scene)}.items():
            rows.setdefault(task, []).extend(_fill(r, video, image) for r in task_rows)
        scenes.append({**scene.to_dict(), "video": video, "description": describe(scene)})
    files = {}
    for task, task_rows in rows.items():
        files[task] = out / f"{task}.jsonl"
        files[task].write_text("".join(json.dumps(r) + "\n" for r in task_rows))
    (out / "scenes.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scenes))
    return files

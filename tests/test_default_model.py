"""The built-in default model, called on the class as the design card shows it, on clips generated here with a seed
it never saw: captions name the right shape, multiple-choice answers and boxes match the clips' truth.

Thresholds are what the shipped model measurably clears, each well above chance; the goals the model card tracks
(caption METEOR >= 0.5, multiple choice >= 0.9, boxes >= 0.8 at IoU 0.5) are higher, and the card says how far off
it is.
"""

from __future__ import annotations

import json

import pytest

from unified.api import DEFAULT_MODEL_DIR, Model
from unified.data import load_data_dir
from unified.data.synthetic import write_split
from unified.tokenizers import Box

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").is_file(),
                                reason="this checkout has no built-in default model")
N_CLIPS = 30
SEED = 90210  # the training data used seed 0 (train and test splits)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("fresh")
    write_split(root, N_CLIPS, seed=SEED, split="test", progress=False)
    data, _ = load_data_dir(root, ["caption", "video_mcqa", "audio_video_mcqa", "grounding"])
    scenes = [json.loads(line) for line in (root / "scenes.jsonl").read_text().splitlines()]
    return data, scenes


def test_the_default_model_loads_once_per_process():
    assert Model.default() is Model.default()


def test_captions_name_the_first_shape(clips):
    data, scenes = clips
    rows = data["caption"]
    captions = Model.generate(task="caption", video=[r["video"] for r in rows])
    assert isinstance(captions, list) and all(isinstance(c, str) for c in captions)
    named = 0
    for caption, scene in zip(captions, scenes):
        first = scene["shapes"][0]
        words = caption.replace(",", " ").replace(".", " ").split()
        named += first["colour"] in words and first["kind"] in words
    assert named / len(rows) >= CAPTION_NAMED, captions[:5]


@pytest.mark.parametrize("task", ["video_mcqa", "audio_video_mcqa"])
def test_multiple_choice_matches_the_truth(clips, task):
    data, _ = clips
    rows = data[task]
    picked = Model.generate(task=task, video=[r["video"] for r in rows], audio=[r["audio"] for r in rows]
                            if task == "audio_video_mcqa" else None,
                            question=[r["question"] for r in rows], options=[r["options"] for r in rows])
    right = sum(p == r["options"][r["answer_index"]] for p, r in zip(picked, rows)) / len(rows)
    chance = sum(1 / len(r["options"]) for r in rows) / len(rows)
    assert right >= MCQA[task] > chance, (right, chance)


def test_boxes_overlap_the_true_boxes(clips):
    data, _ = clips
    rows = data["grounding"]
    boxes = Model.generate(task="grounding", image=[r["image"] for r in rows], phrase=[r["phrase"] for r in rows])
    assert all(isinstance(b, Box) for b in boxes)
    hits = sum(b.iou(Box(*r["box"])) >= 0.5 for b, r in zip(boxes, rows)) / len(rows)
    assert hits >= GROUNDING_AT_05, hits

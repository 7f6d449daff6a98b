"""The built-in default model, called on the class as the design card shows it, on clips generated here with a seed
it never saw.

The shipped model reaches each goal checked here on these 30 clips: captions (METEOR >= 0.5), multiple choice
(>= 0.9) and boxes (>= 0.8 at IoU 0.5). On these clips it scored: caption METEOR 0.628 with 28 distinct captions
(0.270 against another clip's references), video multiple choice 0.96 on 76 questions (chance 0.25), the beep
questions 1.00 on 38 (chance 0.50), boxes 0.90 at IoU 0.5 (mean IoU 0.75; a fixed 18 px box in the middle of the
frame: 0.108). The tests hold it to the goals, to the other measurements with a margin, and to the typed,
well-formed answers the API promises.
"""

from __future__ import annotations

import json

import pytest

from unified.api import DEFAULT_MODEL_DIR, Model
from unified.data import load_data_dir
from unified.data.synthetic import write_split
from unified.tokenizers import Box

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").is_file(),
                                reason="this checkout has no built-in default model")]
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


def test_captions_are_sentences_about_shapes(clips):
    from unified.data.scene import COLOURS, KINDS

    data, _ = clips
    captions = Model.generate(task="caption", video=[r["video"] for r in data["caption"]])
    assert len(captions) == N_CLIPS and all(isinstance(c, str) for c in captions)
    for caption in captions:
        words = caption.replace(",", " ").replace(".", " ").split()
        assert set(words) & set(COLOURS) and set(words) & set(KINDS), caption
    assert len(set(captions)) >= 18  # it describes clips, not one sentence for all (measured 28 of 30)


def test_captions_score_against_the_clips_own_references(clips):
    from unified.task_zoo.metrics import CaptionScorer

    data, _ = clips
    rows = data["caption"]
    captions = Model.generate(task="caption", video=[r["video"] for r in rows])
    with CaptionScorer(("meteor",)) as scorer:
        own = scorer.score(captions, [r["captions"] for r in rows])["meteor"]
        shifted = scorer.score(captions, [r["captions"] for r in rows[1:] + rows[:1]])["meteor"]  # another clip's
    assert own >= 0.5 and own > shifted + 0.1, (own, shifted)  # the goal; measured 0.628 / 0.270


@pytest.mark.parametrize("task", ["video_mcqa", "audio_video_mcqa"])
def test_multiple_choice_meets_the_goal_on_fresh_clips(clips, task):
    """video_mcqa measured 0.96 (76 questions, chance 0.25); the beep questions 1.00 (38, chance 0.50)."""
    data, _ = clips
    rows = data[task]
    audio = {"audio": [r["audio"] for r in rows]} if task == "audio_video_mcqa" else {}
    picked = Model.generate(task=task, video=[r["video"] for r in rows], question=[r["question"] for r in rows],
                            options=[r["options"] for r in rows], **audio)
    right = sum(p == r["options"][r["answer_index"]] for p, r in zip(picked, rows)) / len(rows)
    chance = sum(1 / len(r["options"]) for r in rows) / len(rows)
    assert right >= 0.9 and right >= chance + 0.4, (right, chance)  # the goal


def test_boxes_lie_in_the_frame_and_meet_the_goal(clips):
    data, _ = clips
    rows = data["grounding"]
    boxes = Model.generate(task="grounding", image=[r["image"] for r in rows], phrase=[r["phrase"] for r in rows])
    assert len(boxes) == len(rows) and all(isinstance(b, Box) for b in boxes)
    for box, row in zip(boxes, rows):
        w, h = row["image_size"]
        assert 0 <= box.x1 <= box.x2 <= w and 0 <= box.y1 <= box.y2 <= h
    # where the shape is, better than a prior: a fixed 18 px box in the middle of the 64 px frame
    ious = [box.iou(Box(*row["box"])) for box, row in zip(boxes, rows)]
    centre = [Box(23, 23, 41, 41).iou(Box(*row["box"])) for row in rows]
    assert sum(ious) / len(ious) > sum(centre) / len(centre) + 0.5, (ious, centre)  # measured 0.754 vs 0.108
    assert sum(iou >= 0.5 for iou in ious) / len(ious) >= 0.8, ious  # the goal; measured 0.90

"""The synthetic world against independent truths: the decoded mp4 (colour segmentation, FFT of the audio) and an
oracle that answers every question from the scene parameters alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unified.data import load_data_dir
from unified.data.scene import COLOURS, FPS, HELD_OUT, PITCHES, sample_scene
from unified.data.synthetic import generate, write_split
from unified.errors import InputError
from unified.media import load_audio, load_video


def test_same_seed_same_world_and_splits_differ():
    a, b = generate(6, seed=3), generate(6, seed=3)
    assert [c.rows for c in a] == [c.rows for c in b]
    assert all(np.array_equal(x.frames, y.frames) and np.array_equal(x.audio, y.audio) for x, y in zip(a, b))
    test = generate(6, seed=3, split="test")
    assert [c.scene.shapes for c in test] != [c.scene.shapes for c in a]
    with pytest.raises(InputError, match="split"):
        generate(2, split="validation")
    with pytest.raises(InputError, match="positive"):
        generate(0)


def test_compositional_pairs_never_in_train():
    rng = np.random.default_rng(0)
    for i in range(300):
        train = sample_scene(rng, "train", str(i))
        assert not any((s.colour, s.kind) in HELD_OUT for s in train.shapes)
        comp = sample_scene(rng, "compositional", str(i))
        assert any((s.colour, s.kind) in HELD_OUT for s in comp.shapes)


def _segment(frame: np.ndarray, colour: str) -> np.ndarray:
    return np.abs(np.asarray(frame).astype(int) - np.array(COLOURS[colour])).sum(-1) < 60


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_split(out, 12, seed=5, split="test", progress=False)
    return out


def test_decoded_clips_match_the_rows(written):
    scenes = [json.loads(line) for line in (written / "scenes.jsonl").read_text().splitlines()]
    data, _ = load_data_dir(written)
    for scene, grounding in zip(scenes, data["grounding"]):
        video = load_video(written / scene["video"], fps=FPS, max_frames=8)
        frames = video.frames.numpy()
        assert frames.shape == (8, 64, 64, 3)
        for shape in scene["shapes"]:
            present = [bool(_segment(f, shape["colour"]).sum() > 15) for f in frames]
            assert present == [shape["appear"] <= t < shape["disappear"] for t in range(8)], shape
            t0, t1 = shape["appear"], shape["disappear"] - 1
            c0 = np.argwhere(_segment(frames[t0], shape["colour"])).mean(0)  # (y, x)
            c1 = np.argwhere(_segment(frames[t1], shape["colour"])).mean(0)
            dy, dx = c1 - c0
            seen = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
            assert seen == shape["direction"]
        # the grounding box: colour segmentation of the PNG that the row names
        from unified.media import load_image

        colour = grounding["phrase"].split()[0]
        ys, xs = np.nonzero(_segment(load_image(grounding["image"]), colour))
        x0, y0, x1, y1 = grounding["box"]
        assert abs(xs.min() - x0) <= 2 and abs(xs.max() + 1 - x1) <= 2
        assert abs(ys.min() - y0) <= 2 and abs(ys.max() + 1 - y1) <= 2
        # the beep: when and how high, from the decoded audio track
        wave = load_audio(written / scene["video"], sampling_rate=16000).numpy()
        loud = np.nonzero(np.abs(wave) > 0.1)[0]
        start = scene["shapes"][scene["beep_shape"]]["appear"] / FPS
        assert abs(loud[0] / 16000 - start) < 0.05
        piece = wave[loud[0]: loud[0] + 2048] * np.hanning(2048)
        peak = np.argmax(np.abs(np.fft.rfft(piece))) * 16000 / 2048
        assert abs(peak - PITCHES[scene["pitch"]]) / PITCHES[scene["pitch"]] < 0.05


def oracle(scene, question: str) -> str:
    """Answers every question form from the scene parameters, written independently of the generator."""
    shapes = sorted(scene.shapes, key=lambda s: s.appear)
    by_name = {f"{s.colour} {s.kind}": s for s in shapes}
    q = question.rstrip("?")
    if q.startswith("which way does the "):
        return by_name[q[len("which way does the "):-len(" move")]].direction
    if q == "how many shapes appear in the clip":
        return str(len(shapes))
    if q == "which shape appears last":
        return max(by_name, key=lambda n: by_name[n].appear)
    if q.startswith("what appears after the "):
        t = by_name[q[len("what appears after the "):]].appear
        later = [s for s in shapes if s.appear > t]
        return f"{later[0].colour} {later[0].kind}"
    if q == "was the beep high or low":
        return scene.pitch
    if q == "which shape appeared when the beep sounded":
        beeper = scene.shapes[scene.beep_shape]
        at_beep = [s for s in shapes if s.appear == beeper.appear]
        return f"{at_beep[0].colour} {at_beep[0].kind}"
    if q.startswith("what colour is the "):
        kind = q[len("what colour is the "):]
        return next(s.colour for s in shapes if s.kind == kind)
    if q.startswith("what shape is "):
        colour = q[len("what shape is "):]
        return next(s.kind for s in shapes if s.colour == colour)
    raise AssertionError(f"the oracle does not know {question!r}")


def test_every_answer_matches_the_oracle_and_is_unique():
    for clip in generate(150, seed=11, split="test"):
        rows = clip.rows
        for task in ("video_mcqa", "audio_video_mcqa"):
            for row in rows[task]:
                truth = oracle(clip.scene, row["question"])
                assert row["options"][row["answer_index"]] == truth
                assert row["options"].count(truth) == 1 and len(set(row["options"])) == len(row["options"])
        for row in rows["vqa"]:
            assert row["answer"] == oracle(clip.scene, row["question"])
        shapes = clip.scene.shapes
        assert rows["classify"][0]["label"] == min(shapes, key=lambda s: s.appear).direction
        for row in rows["temporal_grounding"]:
            name = row["question"][len("when is the "):-len(" visible?")]
            shape = next(s for s in shapes if f"{s.colour} {s.kind}" == name)
            assert row["span"] == [shape.appear / 4, shape.disappear / 4]
        for row in rows["text2text"]:
            if row["text"].endswith("move?"):
                name = row["text"].split("which way does the ")[1][: -len(" move?")]
                assert row["target"] == next(s.direction for s in shapes if f"{s.colour} {s.kind}" == name)
        sequence = next(r for r in rows["regress"] if "inputs" in r)
        steps = np.diff(sequence["inputs"] + sequence["values"])
        assert np.allclose(steps, steps[0])  # constant speed: the next values continue the line


def test_video_questions_need_more_than_the_first_frame():
    """Direction and 'appears last/after' cannot be read from frame 0: count how often frame 0 alone (the shapes
    visible in it, without motion) would even contain the answer."""
    decided, total = 0, 0
    for clip in generate(100, seed=2):
        first = {f"{s.colour} {s.kind}" for s in clip.scene.shapes if s.appear == 0}
        for row in clip.rows["video_mcqa"]:
            q = row["question"]
            if q.startswith(("which shape appears last", "what appears after")):
                total += 1
                decided += row["options"][row["answer_index"]] in first
    assert total > 50 and decided == 0

"""The run is what the record says, and rows that contradict themselves or their media are refused: a resume that
would change what the checkpoint fixes, --overwrite leaving the earlier run's files, synthetic data of other
settings, packing with nothing to pack, a task the model never learnt, a plug-in that is not installed, audio
samples without their rate, budgets that cannot be sampled, boxes and spans outside their image and clip."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from unified import Model
from unified.api import with_audio_rate
from unified.data.synthetic import write_split
from unified.errors import ConfigError, InputError
from unified.media import Samples, load_audio
from unified.task_zoo import get_task
from unified.training import load_config, train
from unified.training.data import load_training_data

SMOKE = Path(__file__).parents[1] / "training" / "configs" / "tiny-smoke.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_split(root / "train", 8, seed=0, split="train", progress=False)
    return root


def _overrides(data: Path, out: Path, *more: str) -> list[str]:
    return [f"output_dir={out}", f"data.train_dir={data / 'train'}", "data.synthetic=null", "data.tasks=[vqa]",
            "optim.batch_size=4", "tokenizer.text_vocab_size=200", "log_with=none", "checkpoint.every=2", *more]


@pytest.mark.slow
def test_a_resume_that_would_change_the_checkpoints_model_is_refused_even_with_allow_changes(data, tmp_path):
    train(load_config(SMOKE, _overrides(data, tmp_path, "optim.max_steps=4")), progress=False, stop_after=2)
    wider = load_config(SMOKE, _overrides(data, tmp_path, "optim.max_steps=4", "model.text={d_ff: 96}"))
    with pytest.raises(ConfigError, match=r"model\.text\.d_ff: \(absent\) -> 96"):
        train(wider, progress=False, allow_changes=True)
    slower = load_config(SMOKE, _overrides(data, tmp_path, "optim.max_steps=4", "optim.lr=0.001"))
    train(slower, progress=False, allow_changes=True)  # what the checkpoint does not fix may change
    assert json.loads((tmp_path / "config.json").read_text())["optim"]["lr"] == 0.001  # and the record says so


@pytest.mark.slow
def test_overwrite_leaves_nothing_of_the_earlier_run(data, tmp_path):
    overrides = _overrides(data, tmp_path, "optim.max_steps=2", f"data.eval_dir={data / 'train'}",
                           "eval.max_rows=2")
    train(load_config(SMOKE, overrides), progress=False)
    for name in ("summary.json", "eval.jsonl", "best", "final", "ranks", "loss.png"):
        assert (tmp_path / name).exists(), name
    train(load_config(SMOKE, overrides), progress=False, overwrite=True, stop_after=1)  # dies early
    for name in ("summary.json", "eval.jsonl", "best", "final", "ranks", "loss.png"):
        assert not (tmp_path / name).exists(), name
    assert (tmp_path / "checkpoints").is_dir() is False  # stop_after=1 < checkpoint.every: none yet


def test_synthetic_data_of_other_settings_is_rewritten(tmp_path):
    common = [f"output_dir={tmp_path}", "data.synthetic={n_train: 3, n_eval: 0, seed: 0}", "data.tasks=[vqa]",
              "data.check_media=false"]
    rows, _ = load_training_data(load_config(None, common), log=lambda _: None)
    more, _ = load_training_data(load_config(None, [*common, "data.synthetic={n_train: 5, n_eval: 0, seed: 0}"]),
                                 log=lambda _: None)
    assert len(more["vqa"]) > len(rows["vqa"])  # not the 3 clips written first
    assert (tmp_path / "data" / "train" / ".complete").read_text().split() == ["5", "0", "train"]


@pytest.mark.slow
def test_packing_with_nothing_to_pack_stops_before_step_0(data, tmp_path):
    cfg = load_config(SMOKE, [*_overrides(data, tmp_path, "optim.max_steps=1", "data.pack=true"),
                              "data.tasks=[retrieval]", "model.fusion={mode: concat}"])
    with pytest.raises(ConfigError, match="nothing to pack"):
        train(cfg, progress=False)


def test_a_task_the_model_never_learnt_is_refused_by_name(tmp_path):
    model = Model.default()
    trained = sorted(model.task_options)
    untrained = Model(model.network, model.processor, {"caption": {}})
    with pytest.raises(InputError, match=r"not trained on it; it was trained on \['caption'\]"):
        untrained.generate(task="vqa", video=str(Path(__file__).parents[1] / "unified" / "samples" / "clip.mp4"),
                           question="what moves?")
    assert "vqa" in trained  # the built-in model answers what it learnt
    anonymous = Model(model.network, model.processor)  # a model that does not record its tasks
    with pytest.warns(UserWarning, match="does not record which tasks"):
        anonymous.check_trained("vqa")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        anonymous.check_trained("vqa")  # once


def test_a_missing_plug_in_is_named_with_its_package(tmp_path):
    model = Model.default()
    model.save_pretrained(tmp_path / "saved")
    sources = json.loads((tmp_path / "saved" / "task_sources.json").read_text())
    assert sources["vqa"]["module"] == type(get_task("vqa")).__module__ and sources["vqa"]["package"] == "unified"
    options = json.loads((tmp_path / "saved" / "task_options.json").read_text())
    (tmp_path / "saved" / "task_options.json").write_text(json.dumps({**options, "count_beeps": {}}))
    (tmp_path / "saved" / "task_sources.json").write_text(json.dumps({**sources, "count_beeps": {
        "module": "beep_tasks.count", "package": "beep-tasks", "version": "1.2"}}))
    loaded = Model.from_pretrained(tmp_path / "saved")
    with pytest.raises(InputError, match=r"package 'beep-tasks' 1\.2 .*pip install beep-tasks"):
        loaded.generate(task="count_beeps", video="clip.mp4")


def test_audio_samples_take_their_rate():
    tone = np.sin(2 * np.pi * 440 * np.arange(8000) / 8000).astype(np.float32)  # 1 s at 8 kHz
    assert load_audio(Samples(tone, 8000), sampling_rate=16000).shape == (16000,)
    with pytest.warns(UserWarning, match="taken to be at 16000 Hz"):
        wrapped = with_audio_rate(tone, None, 16000)
    assert wrapped.rate == 16000 and load_audio(wrapped, sampling_rate=16000).shape == (8000,)
    with pytest.raises(InputError, match="source_rate"):
        with_audio_rate("clip.mp4", 8000, 16000)
    with pytest.raises(InputError, match="source_rate"):
        Samples(tone, 0)


@pytest.mark.parametrize("override, field", [
    ("budgets={vqa: {max_frames: -3}}", r"budgets\.vqa\.max_frames"),
    ("budgets={vqa: {num_frames: 0, video_fps: null}}", r"budgets\.vqa\.num_frames"),
    ("data.budget={video_fps: 0}", r"data\.budget\.video_fps"),
    ("budgets={vqa: {max_audio_seconds: -1}}", r"budgets\.vqa\.max_audio_seconds"),
    ("budgets={vqa: {max_length: 0}}", r"budgets\.vqa\.max_length"),
])
def test_budgets_are_checked_when_the_config_loads(override, field):
    with pytest.raises(ConfigError, match=field):
        load_config(SMOKE, [override])


def test_boxes_and_spans_must_lie_inside_their_image_and_clip():
    grounding, temporal = get_task("grounding"), get_task("temporal_grounding")
    row = {"image": "f.png", "phrase": "red circle", "box": [10, 10, 30, 30], "image_size": [64, 64]}
    grounding.check_row(row)
    for box, reason in [([10, 10, 80, 30], "outside the image"), ([30, 10, 10, 30], "x1 < x2"),
                        ([1, 2, 3], r"\[x1, y1, x2, y2\]")]:
        with pytest.raises(InputError, match=reason):
            grounding.check_row({**row, "box": box})
    with pytest.raises(InputError, match="width, height"):
        grounding.check_row({**row, "image_size": [64, -1]})
    clip = {"video": "c.mp4", "question": "when?", "span": [0.5, 1.5], "duration": 2.0}
    temporal.check_row(clip)
    for span, reason in [([0.5, 2.5], "past the clip's duration"), ([1.5, 0.5], "start < end"),
                         ([-1, 1], "start < end")]:
        with pytest.raises(InputError, match=reason):
            temporal.check_row({**clip, "span": span})


def test_an_image_size_that_contradicts_the_image_is_refused():
    """The shipped frame is 64 x 64 px: a row saying 128 x 128 would scale every box by two."""
    frame = str(Path(__file__).parents[1] / "unified" / "samples" / "frame.png")
    processor = Model.default().processor
    row = {"image": frame, "phrase": "blue triangle", "box": [4, 24, 19, 39]}
    assert get_task("grounding").complete(row, processor)["image_size"] == [64, 64]
    with pytest.raises(InputError, match="contradicts its image, whose frames are 64 x 64 px"):
        get_task("grounding").complete({**row, "image_size": [128, 128]}, processor)

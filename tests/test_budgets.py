"""Per-task media budgets: each task samples its own frames; over a budget the processor fits (frames spread evenly,
true timestamps kept; audio cut) and counts, or raises under `fit: error`; training, evaluation and
`Model.generate` see the same frames at the same times. The truth is a clip whose frame k is shown at k / 10 s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from media_fixtures import write_index_video, write_tone
from task_rows import tiny_stack

from unified import Model
from unified.errors import ConfigError, InputError
from unified.media import load_audio, log_mel
from unified.processing import UnifiedProcessor
from unified.task_zoo import get_task
from unified.task_zoo.batching import task_batch
from unified.task_zoo.evaluation import evaluate

SMOKE = Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny-smoke.yaml"
# 2 s at 10 fps: fps sampling asks for 20 frames; four spread evenly are the centres of four 0.5 s segments,
# t = 0.25, 0.75, 1.25, 1.75, which fall on frames 2, 7, 12 and 17, presented at 0.2, 0.7, 1.2 and 1.7 s.
FOUR = [0.2, 0.7, 1.2, 1.7]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget")
    return str(write_index_video(root / "clip.mp4", num_frames=20, fps=10, size=(64, 48)))


def stack(**budgets):
    tokenizer, _, model = tiny_stack()
    processor = UnifiedProcessor(tokenizer, image_size=32, video_fps=10.0, max_frames=32, budgets=budgets)
    return processor, model.eval()


def spy(processor) -> list[torch.Tensor]:
    """Record the frame times of every batch the processor collates."""
    seen, collate = [], processor.collate

    def recording(items):
        batch = collate(items)
        if "frame_times" in batch:
            seen.extend(times[mask].tolist() for times, mask in zip(batch["frame_times"][:, 0],
                                                                    batch["pixel_mask"][:, 0]))
        return batch

    processor.collate = recording
    return seen


def test_each_task_samples_under_its_own_budget(clip):
    processor, _ = stack(vqa={"max_frames": 4})
    row = {"video": clip, "question": "what colour is it?", "answer": "red"}
    vqa = task_batch(get_task("vqa"), [row], processor)
    caption = task_batch(get_task("caption"), [{"video": clip, "caption": "a red circle"}], processor)
    assert vqa["frame_times"][0, 0].tolist() == pytest.approx(FOUR, abs=1e-6)
    assert caption["frame_times"][0, 0].tolist() == pytest.approx([k / 10 for k in range(20)], abs=1e-6)
    assert processor.fitted == {"vqa: frames": 1}  # only vqa's clip was fitted


def test_training_evaluation_and_generate_see_the_same_frame_times(clip):
    processor, model = stack(vqa={"max_frames": 4})
    seen = spy(processor)
    row = {"video": clip, "question": "what colour is it?", "answer": "red"}
    task_batch(get_task("vqa"), [row], processor, rng=__import__("random").Random(0))  # a training batch
    evaluate(model, processor, {"vqa": [row]}, progress=False)
    Model(model, processor).generate(task="vqa", video=clip, question="what colour is it?", max_new_tokens=2)
    assert len(seen) == 3
    for times in seen:
        assert times == pytest.approx(FOUR, abs=1e-6)


def test_fit_error_raises_naming_the_task_and_the_budget(clip):
    processor, _ = stack(vqa={"max_frames": 4, "fit": "error"})
    with pytest.raises(InputError, match="20 frames at 10 fps exceed max_frames=4 of task 'vqa'"):
        task_batch(get_task("vqa"), [{"video": clip, "question": "q?", "answer": "a"}], processor)
    assert not processor.fitted


def test_audio_over_its_budget_is_cut_there_and_counted(tmp_path):
    tone = write_tone(tmp_path / "tone.wav", 440.0, 1.0, sampling_rate=16000)
    processor, _ = stack(caption={"max_audio_seconds": 0.5})
    batch = task_batch(get_task("caption"), [{"audio": str(tone), "caption": "a beep"}], processor)
    first_half = log_mel(load_audio(tone, sampling_rate=16000)[:8000], sampling_rate=16000, n_mels=80)
    torch.testing.assert_close(batch["audio_features"][0, 0], first_half)
    assert processor.fitted == {"caption: audio": 1}
    strict, _ = stack(caption={"max_audio_seconds": 0.5, "fit": "error"})
    with pytest.raises(InputError, match="longer than max_audio_seconds=0.5 of task 'caption'"):
        task_batch(get_task("caption"), [{"audio": str(tone), "caption": "a beep"}], strict)


@pytest.mark.parametrize("budgets, field", [
    ({"vqa": {"frames": 4}}, "budgets.vqa.frames"),
    ({"vqa": {"max_frames": 0}}, "budgets.vqa.max_frames"),
    ({"vqa": {"fit": "crop"}}, "budgets.vqa.fit"),
])
def test_bad_budgets_name_the_field(budgets, field):
    with pytest.raises(ConfigError) as caught:
        stack(**budgets)
    assert caught.value.field == field


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_budgets_in_a_training_config_are_applied_saved_and_reported(tmp_path, workers):
    """Also with DataLoader workers, whose fitted counts reach the training process's report."""
    from unified.training import load_config, train

    common = [f"data.num_workers={workers}", f"output_dir={tmp_path / 'run'}",
              "data.synthetic={n_train: 8, n_eval: 0, seed: 2}",
              "data.tasks=[video_mcqa, caption]", "optim.max_steps=3", "optim.batch_size=2", "log_with=none",
              "checkpoint.every=100", "data.budget={max_frames: 4}", "budgets={video_mcqa: {max_frames: 2}}"]
    summary = train(load_config(SMOKE, common), progress=False)
    saved = json.loads((tmp_path / "run" / "final" / "processor_config.json").read_text())
    assert saved["budgets"] == {"video_mcqa": {"max_frames": 2}, "caption": {"max_frames": 4}}
    # synthetic clips: 8 frames at processor.video_fps 4 over 2 s, above both budgets: 3 steps x 2 rows = 6 clips
    assert summary["fitted"].get("video_mcqa: frames", 0) + summary["fitted"].get("caption: frames", 0) == 6
    model = Model.from_pretrained(tmp_path / "run" / "final")
    assert model.processor.settings("video_mcqa").max_frames == 2
    with pytest.raises(ConfigError, match="budgets for tasks this run does not have"):
        train(load_config(SMOKE, [*common[:-1], f"output_dir={tmp_path / 'other'}",
                                  "budgets={grounding: {max_frames: 2}}"]), progress=False)


@pytest.mark.slow
def test_a_prompt_budget_no_row_meets_fails_before_step_0(tmp_path):
    from unified.training import load_config, train

    cfg = load_config(SMOKE, [f"output_dir={tmp_path / 'run'}", "data.synthetic={n_train: 4, n_eval: 0, seed: 2}",
                              "data.tasks=[vqa]", "log_with=none", "budgets={vqa: {max_length: 3}}"])
    with pytest.raises(ConfigError, match="over the budget's max_length=3") as caught:
        train(cfg, progress=False)
    assert caught.value.field.startswith("task 'vqa' (vqa.jsonl:")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_task_budget_sets_its_own_frame_size(clip):
    """vqa at 16 px, caption at the processor's 32 px: each batch holds its own size, the frames are the clip's
    frames decoded at 16 px (near a resize done here on the full-size frames), and the model takes both."""
    import torch.nn.functional as F

    from unified.media import load_video

    processor, model = stack(vqa={"image_size": 16})
    vqa = task_batch(get_task("vqa"), [{"video": clip, "question": "q?", "answer": "a"}], processor)
    caption = task_batch(get_task("caption"), [{"video": clip, "caption": "a"}], processor)
    assert vqa["pixel_values"].shape[-2:] == (16, 16) and caption["pixel_values"].shape[-2:] == (32, 32)
    at_size = load_video(clip, fps=10.0, max_frames=32, size=16).frames.permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(vqa["pixel_values"][0, 0], (at_size - 0.5) / 0.5)
    frames = load_video(clip, fps=10.0, max_frames=32).frames.permute(0, 3, 1, 2).float() / 255
    resized = (F.interpolate(frames, size=(16, 16), mode="bilinear", antialias=True, align_corners=False) - 0.5) / 0.5
    assert float((vqa["pixel_values"][0, 0] - resized).abs().mean()) < 0.1  # 13/255 in pixels, at a quarter size
    with torch.no_grad():
        for batch in (vqa, caption):
            assert torch.isfinite(model(**batch).loss)
    with pytest.raises(InputError, match="one batch holds one frame size"):
        processor.collate([processor.process({"text": "<video> q?", "video": clip, "task": t})
                           for t in ("vqa", "caption")])
    with pytest.raises(ConfigError, match="larger than the processor's image_size=32"):
        stack(vqa={"image_size": 64})


def test_a_per_task_frame_size_with_mixed_batches_fails_before_step_0(tmp_path):
    from unified.training import load_config, train

    cfg = load_config(SMOKE, [f"output_dir={tmp_path / 'run'}", "data.synthetic={n_train: 4, n_eval: 0, seed: 2}",
                              "data.tasks=[vqa, caption]", "log_with=none", "mixture.mixed_batches=true",
                              "budgets={vqa: {image_size: 16}}"])
    with pytest.raises(ConfigError, match="one task per batch"):
        train(cfg, progress=False)
    cfg = load_config(SMOKE, [f"output_dir={tmp_path / 'run2'}", "data.synthetic={n_train: 4, n_eval: 0, seed: 2}",
                              "data.tasks=[vqa]", "log_with=none", "budgets={vqa: {image_size: 24}}"])
    with pytest.raises(ConfigError, match="multiple of its patch size 16"):
        train(cfg, progress=False)

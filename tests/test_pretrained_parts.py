"""A model built on pretrained media encoders (tiny random CLIP and Whisper saved to temp dirs) trains, saves and
loads, evaluates and resumes where those directories no longer exist; the encoders' own normalisation reaches the
processor; frozen backbones stay bitwise what their checkpoints hold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unified.data.synthetic import write_split
from unified.errors import ConfigError, InputError
from unified.training import load_config, train

pytestmark = pytest.mark.slow  # training runs

ROOT = Path(__file__).parents[1]
SMOKE = ROOT / "training" / "configs" / "tiny-smoke.yaml"
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _encoders(root: Path) -> tuple[Path, Path]:
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        WhisperConfig,
        WhisperModel,
    )

    torch.manual_seed(0)
    clip, whisper = root / "clip-tiny", root / "whisper-tiny"
    CLIPVisionModel(CLIPVisionConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                                     image_size=32, patch_size=8)).save_pretrained(clip)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=list(CLIP_MEAN),
                       image_std=list(CLIP_STD)).save_pretrained(clip)
    # 2 * 100 mel frames = the synthetic clips' 2 s, so nothing is cropped
    WhisperModel(WhisperConfig(d_model=24, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                               decoder_attention_heads=2, encoder_ffn_dim=48, decoder_ffn_dim=48, num_mel_bins=80,
                               max_source_positions=100, max_target_positions=16, vocab_size=99, pad_token_id=0,
                               bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)).save_pretrained(whisper)
    return clip, whisper


def _own_weights(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in load_file(path / "model.safetensors").items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 4-step run on CLIP + Whisper, checkpoints at 2 and 4; then both encoder directories are deleted."""
    root = tmp_path_factory.mktemp("pretrained")
    clip, whisper = _encoders(root)
    write_split(root / "data", 16, seed=0, split="train", progress=False)
    from transformers import CLIPVisionModel, WhisperModel

    # what transformers itself loads from the two directories
    clip_weights = CLIPVisionModel.from_pretrained(clip).state_dict()
    whisper_weights = WhisperModel.from_pretrained(whisper).encoder.state_dict()
    overrides = [f"output_dir={root / 'run'}", f"data.train_dir={root / 'data'}", "data.synthetic=null",
                 "data.tasks=[audio_video_mcqa, caption]", "optim.max_steps=4", "checkpoint.every=2",
                 "checkpoint.keep=5", "tokenizer.text_vocab_size=200", "optim.batch_size=4",
                 f"model.vision={{pretrained_path: {clip}}}", f"model.audio={{pretrained_path: {whisper}}}"]
    train(load_config(SMOKE, overrides), progress=False)
    shutil.rmtree(clip)
    shutil.rmtree(whisper)
    return {"root": root, "out": root / "run", "overrides": overrides, "clip": clip_weights,
            "whisper": whisper_weights}


def test_frozen_encoders_hold_their_checkpoints_weights(run):
    final = run["out"] / "final"
    for prefix, truth in (("encoder.media.vision.backbone.", run["clip"]),
                          ("encoder.media.audio.backbone.", run["whisper"])):
        saved = _own_weights(final, prefix)
        assert saved.keys() == truth.keys()
        assert all(torch.equal(saved[k].float(), truth[k].float()) for k in truth), prefix
    config = json.loads((final / "config.json").read_text())
    assert config["vision"]["backbone"]["model_type"] == "clip_vision_model"
    assert config["audio"]["backbone"]["model_type"] == "whisper"
    # the projections next to them did train
    first = _own_weights(run["out"] / "checkpoints" / "step-00000002", "encoder.media.vision.proj.")
    assert not torch.equal(first["weight"], _own_weights(final, "encoder.media.vision.proj.")["weight"])


def test_processor_takes_the_encoders_normalisation(run):
    saved = json.loads((run["out"] / "final" / "processor_config.json").read_text())
    assert saved["image_mean"] == pytest.approx(CLIP_MEAN) and saved["image_std"] == pytest.approx(CLIP_STD)


def test_saved_model_loads_and_answers_without_the_encoder_directories(run):
    from transformers import AutoModelForSeq2SeqLM

    from unified import Model
    from unified.data import load_data_dir

    final = run["out"] / "final"
    model = Model.from_pretrained(final)
    rows, _ = load_data_dir(run["root"] / "data", ["audio_video_mcqa"])
    row = rows["audio_video_mcqa"][0]
    answer = model.generate(task="audio_video_mcqa", video=row["video"], audio=row["audio"],
                            question=row["question"], options=row["options"])
    assert answer in row["options"]
    auto = AutoModelForSeq2SeqLM.from_pretrained(final)
    ours = dict(model.network.named_parameters())
    assert all(torch.equal(p, ours[n]) for n, p in auto.named_parameters())
    result = model.evaluate(run["root"] / "data", tasks=["caption"], max_rows=2)
    assert 0.0 <= result.integral <= 1.0


def test_run_resumes_without_the_encoder_directories(run):
    train(load_config(SMOKE, [*run["overrides"], "optim.max_steps=6"]), progress=False)
    assert (run["out"] / "checkpoints" / "step-00000006").is_dir()
    later = _own_weights(run["out"] / "checkpoints" / "step-00000006", "encoder.media.audio.backbone.")
    assert all(torch.equal(later[k].float(), run["whisper"][k].float()) for k in run["whisper"])


def test_frame_size_the_encoder_does_not_take_is_refused(tmp_path):
    clip, _ = _encoders(tmp_path)
    write_split(tmp_path / "data", 2, seed=0, split="train", progress=False)
    cfg = load_config(SMOKE, [f"output_dir={tmp_path / 'run'}", f"data.train_dir={tmp_path / 'data'}",
                              "data.synthetic=null", "data.tasks=[caption]", "processor.image_size=64",
                              f"model.vision={{pretrained_path: {clip}}}"])
    with pytest.raises(ConfigError, match=r"processor.image_size.*takes 32 px"):
        train(cfg, progress=False)


def test_missing_encoder_directory_is_named(tmp_path):
    from unified.model import UnifiedConfig

    with pytest.raises(InputError, match="vision.pretrained_path.*nowhere"):
        UnifiedConfig.preset("tiny", vision={"pretrained_path": str(tmp_path / "nowhere")})


def test_a_stage_training_every_group_keeps_a_frozen_backbone_frozen(tmp_path):
    from unified.model import UnifiedConfig, UnifiedModel
    from unified.training.config import Stage
    from unified.training.stages import apply_stage

    clip, whisper = _encoders(tmp_path)
    config = UnifiedConfig.preset("tiny", vision={"pretrained_path": str(clip)},
                                  audio={"pretrained_path": str(whisper), "freeze": False})
    model = UnifiedModel(config)
    apply_stage(model, Stage())  # every group, "media" included
    media = model.encoder.media
    assert not any(p.requires_grad for p in media.vision.backbone.parameters())  # freeze: true holds
    assert media.vision.proj.weight.requires_grad
    assert all(p.requires_grad for p in media.audio.backbone.parameters())  # freeze: false trains

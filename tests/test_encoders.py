"""Media encoders: shapes, timestamp embedding, audio mask arithmetic, and tiny pretrained wrappers from local dirs."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from unified.errors import ConfigError, InputError
from unified.model.encoders import (
    AudioEncoder,
    PatchStem,
    PretrainedAudioEncoder,
    PretrainedVisionEncoder,
    TimeEmbedding,
    VideoEncoder,
    conv_output_length,
)

D = 16


def test_patch_stem_shapes_and_errors():
    torch.manual_seed(0)
    stem = PatchStem(patch_size=16, hidden_size=D, stem_channels=8, num_blocks=2, image_size=64)
    assert stem(torch.randn(2, 3, 64, 64)).shape == (2, 16, D)
    assert stem(torch.randn(1, 3, 32, 64)).shape == (1, 8, D)  # smaller, non-square
    with pytest.raises(InputError, match="multiples of 16"):
        stem(torch.randn(1, 3, 30, 32))
    with pytest.raises(InputError, match="image_size"):
        stem(torch.randn(1, 3, 80, 80))
    with pytest.raises(ConfigError, match="patch_size"):
        PatchStem(patch_size=6, hidden_size=D)


def test_patch_stem_position_embedding_is_row_plus_column():
    stem = PatchStem(patch_size=8, hidden_size=D, stem_channels=4, image_size=32)
    x = torch.randn(1, 3, 16, 24)  # 2 x 3 patches
    with torch.no_grad():
        out = stem(x)
        stem.row_embed.zero_()
        stem.col_embed.zero_()
        content = stem(x)
    pos = out - content  # (1, 6, D)
    # token (r, c) in row-major order carries row_embed[r] + col_embed[c]; check (1, 2) - (1, 0) = (0, 2) - (0, 0)
    torch.testing.assert_close(pos[0, 5] - pos[0, 3], pos[0, 2] - pos[0, 0])


def test_video_encoder_shapes_and_timestamp_embedding():
    torch.manual_seed(0)
    enc = VideoEncoder(patch_size=16, hidden_size=D, stem_channels=8, image_size=32).eval()
    frame = torch.randn(3, 32, 32)
    pixels = frame.expand(1, 1, 4, 3, 32, 32).clone()  # the same frame four times
    times = torch.tensor([[[0.0, 1.5, 1.5, 7.25]]])
    with torch.no_grad():
        out = enc(pixels, times)
    assert out.shape == (1, 1, 4, 4, D)
    torch.testing.assert_close(out[0, 0, 1], out[0, 0, 2], atol=0, rtol=0)  # same time -> same
    assert not torch.allclose(out[0, 0, 0], out[0, 0, 1])  # different time -> different
    assert not torch.allclose(out[0, 0, 1], out[0, 0, 3])
    # the difference is one vector added to every patch of the frame: the time embedding
    diff = out[0, 0, 3] - out[0, 0, 0]
    torch.testing.assert_close(diff, diff[:1].expand_as(diff), atol=1e-5, rtol=1e-5)


def test_time_embedding_is_smooth_for_unseen_times():
    torch.manual_seed(0)
    emb = TimeEmbedding(D)
    with torch.no_grad():
        e = emb(torch.tensor([10.0, 10.01, 10.5, 40.0]))
    assert (e[0] - e[1]).norm() < (e[0] - e[2]).norm()  # nearby times -> nearby embeddings


def test_video_encoder_pixel_mask_zeros_padding_frames():
    torch.manual_seed(0)
    enc = VideoEncoder(patch_size=16, hidden_size=D, stem_channels=8, image_size=32).eval()
    pixels = torch.randn(2, 2, 3, 3, 32, 32)
    times = torch.rand(2, 2, 3)
    mask = torch.tensor([[[True, True, False], [False, False, False]], [[True, True, True], [True, False, False]]])
    with torch.no_grad():
        full = enc(pixels, times)
        masked = enc(pixels, times, mask)
    torch.testing.assert_close(masked[mask], full[mask], atol=1e-5, rtol=1e-5)
    assert torch.equal(masked[~mask], torch.zeros_like(masked[~mask]))


@pytest.mark.parametrize("frames, expected", [(1, 1), (2, 1), (3, 2), (10, 5), (11, 6)])
def test_conv_arithmetic_k3_s2_p1(frames, expected):
    assert conv_output_length(frames) == expected == (frames + 1) // 2
    assert nn.Conv1d(1, 1, 3, stride=2, padding=1)(torch.zeros(1, 1, frames)).shape[-1] == expected


def test_audio_encoder_mask_downsampling_and_padding_invariance():
    torch.manual_seed(0)
    enc = AudioEncoder(n_mels=8, hidden_size=D).eval()
    feats = torch.randn(2, 2, 8, 11)
    lengths = torch.tensor([[11, 7], [4, 0]])
    mask = torch.arange(11)[None, None, :] < lengths[..., None]  # (2, 2, 11) left-aligned
    with torch.no_grad():
        out, out_mask = enc(feats, mask)
    assert out.shape == (2, 2, 6, D) and out_mask.shape == (2, 2, 6)
    assert out_mask.sum(-1).tolist() == [[6, 4], [2, 0]]  # (L + 1) // 2 by hand: 11 -> 6, 7 -> 4, 4 -> 2, 0 -> 0
    assert torch.equal(out[~out_mask], torch.zeros_like(out[~out_mask]))
    # the 7-frame item alone, without padding, gives the same 4 output frames
    with torch.no_grad():
        alone, _ = enc(feats[:1, 1:, :, :7], torch.ones(1, 1, 7, dtype=torch.bool))
    torch.testing.assert_close(alone[0, 0], out[0, 1, :4], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ tiny pretrained checkpoints -------------------

VISION = {"hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 2,
          "image_size": 32, "patch_size": 8}


def _save(model, path):
    model.save_pretrained(path)
    return str(path)


def _t5gemma2():
    """A tiny T5Gemma 2: its encoder carries a SigLIP vision tower of the VISION sizes."""
    from transformers import T5Gemma2Config, T5Gemma2ForConditionalGeneration
    from transformers.models.t5gemma2.configuration_t5gemma2 import (
        T5Gemma2DecoderConfig,
        T5Gemma2EncoderConfig,
    )

    text = {"vocab_size": 99, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "layer_types": ["full_attention"]}
    encoder = T5Gemma2EncoderConfig(text_config=text, vision_config={**VISION, "model_type": "siglip_vision_model"},
                                    mm_tokens_per_image=4)
    return T5Gemma2ForConditionalGeneration(T5Gemma2Config(encoder=encoder, decoder=T5Gemma2DecoderConfig(**text)))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPVisionConfig,
        CLIPVisionModel,
        Dinov2Config,
        Dinov2Model,
        SiglipVisionConfig,
        SiglipVisionModel,
        WhisperConfig,
        WhisperForConditionalGeneration,
        WhisperModel,
    )

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("ckpt")
    text = {**VISION, "vocab_size": 99, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    del text["image_size"], text["patch_size"]
    whisper = WhisperConfig(d_model=24, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                            decoder_attention_heads=2, encoder_ffn_dim=48, decoder_ffn_dim=48, num_mel_bins=8,
                            max_source_positions=16, max_target_positions=16, vocab_size=99, pad_token_id=0,
                            bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    return {
        "clip_vision": _save(CLIPVisionModel(CLIPVisionConfig(**VISION)), root / "clip_vision"),
        "clip": _save(CLIPModel(CLIPConfig(text_config=text, vision_config=VISION, projection_dim=8)), root / "clip"),
        "siglip": _save(SiglipVisionModel(SiglipVisionConfig(**VISION)), root / "siglip"),
        "dinov2": _save(Dinov2Model(Dinov2Config(**VISION)), root / "dinov2"),
        "t5gemma2": _save(_t5gemma2(), root / "t5gemma2"),
        "whisper": _save(WhisperModel(whisper), root / "whisper"),
        "whisper_cg": _save(WhisperForConditionalGeneration(whisper), root / "whisper_cg"),
    }


def _assert_frozen_backbone_and_trainable_rest(enc, loss):
    loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in enc.backbone.parameters())
    assert enc.proj.weight.grad is not None and enc.proj.weight.grad.abs().sum() > 0
    enc.train()
    assert enc.training and not enc.backbone.training  # frozen backbone stays in eval mode


@pytest.mark.parametrize("name, has_cls", [("clip_vision", True), ("clip", True), ("siglip", False),
                                           ("dinov2", True), ("t5gemma2", False)])
def test_pretrained_vision_encoder(checkpoints, name, has_cls):
    from transformers import AutoModel

    torch.manual_seed(0)
    enc = PretrainedVisionEncoder.from_pretrained(checkpoints[name], hidden_size=D)
    pixels = torch.randn(1, 2, 2, 3, 32, 32)
    out = enc(pixels, torch.rand(1, 2, 2))
    assert out.shape == (1, 2, 2, 16, D)  # (32 / 8)^2 patch tokens, CLS dropped
    # independent truth: run the checkpoint itself and drop the CLS token by hand
    ref = AutoModel.from_pretrained(checkpoints[name])
    ref = getattr(ref, "encoder", None).vision_tower if name == "t5gemma2" else ref  # T5Gemma 2's SigLIP
    ref = getattr(ref, "vision_model", ref).eval()
    with torch.no_grad():
        hidden = ref(pixel_values=pixels[0, 0]).last_hidden_state
        assert hidden.shape[1] == 16 + has_cls
        expected = enc.proj(hidden[:, int(has_cls) :])
        got = enc._stem(pixels[0, 0])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # other frame sizes are resized to the backbone's image_size
    assert enc(torch.randn(1, 1, 1, 3, 48, 48), torch.zeros(1, 1, 1)).shape == (1, 1, 1, 16, D)
    _assert_frozen_backbone_and_trainable_rest(enc, out.square().mean())


def test_pretrained_vision_encoder_unfrozen_trains(checkpoints):
    enc = PretrainedVisionEncoder.from_pretrained(checkpoints["siglip"], hidden_size=D, freeze=False)
    enc(torch.randn(1, 1, 1, 3, 32, 32), torch.zeros(1, 1, 1)).sum().backward()
    grads = {n: p.grad for n, p in enc.backbone.named_parameters()}
    # the pooling head (MAP) is not on the last_hidden_state path; the patch embedding and layers are
    on_path = [n for n in grads if ".head." not in n and not n.startswith("head.")]
    assert on_path and all(grads[n] is not None for n in on_path), [n for n in on_path if grads[n] is None]
    assert enc.train().backbone.training


@pytest.mark.parametrize("name", ["whisper", "whisper_cg"])
def test_pretrained_audio_encoder(checkpoints, name):
    torch.manual_seed(0)
    enc = PretrainedAudioEncoder.from_pretrained(checkpoints[name], hidden_size=D)
    assert enc.num_frames == 32  # 2 * max_source_positions
    mask = torch.zeros(2, 1, 20, dtype=torch.bool)
    mask[0, 0, :13] = True
    mask[1, 0, :20] = True
    out, out_mask = enc(torch.randn(2, 1, 8, 20), mask)  # padded to 32 frames
    assert out.shape == (2, 1, 16, D) and out_mask.shape == (2, 1, 16)
    assert out_mask.sum(-1).flatten().tolist() == [7, 10]  # (13 + 1) // 2, (20 + 1) // 2
    _assert_frozen_backbone_and_trainable_rest(enc, out.square().mean())


def test_whisper_audio_longer_than_one_window_is_encoded_window_by_window(checkpoints):
    """50 mel frames through a 32-frame Whisper window: two windows, none of it cut. Each window's outputs equal
    Whisper's own encoder run on that window alone (the second zero-padded), and the mask covers (50 - 32 + 1) // 2
    real outputs of the second window."""
    from transformers import WhisperModel

    torch.manual_seed(0)
    enc = PretrainedAudioEncoder.from_pretrained(checkpoints["whisper"], hidden_size=D).eval()
    mels = torch.randn(1, 1, 8, 50)
    out, mask = enc(mels, torch.ones(1, 1, 50, dtype=torch.bool))
    assert out.shape == (1, 1, 32, D) and mask.sum().item() == 16 + 9
    whisper = WhisperModel.from_pretrained(checkpoints["whisper"]).get_encoder().eval()
    with torch.no_grad():
        first = whisper(mels[0, :, :, :32]).last_hidden_state
        second = whisper(torch.nn.functional.pad(mels[0, :, :, 32:], (0, 14))).last_hidden_state
        expected = enc.proj(torch.cat([first, second], dim=1))[0]
    expected = expected * mask[0, 0, :, None]
    torch.testing.assert_close(out[0, 0], expected, atol=1e-5, rtol=1e-5)


def test_pretrained_paths_are_checked(tmp_path, checkpoints):
    missing = tmp_path / "nope"
    with pytest.raises(InputError, match="nope"):
        PretrainedVisionEncoder.from_pretrained(missing, hidden_size=D)
    with pytest.raises(InputError, match="nope"):
        PretrainedAudioEncoder.from_pretrained(missing, hidden_size=D)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "no_such_model"}))
    with pytest.raises(InputError, match="bad"):
        PretrainedVisionEncoder.from_pretrained(bad, hidden_size=D)
    with pytest.raises(ConfigError, match="Whisper"):
        PretrainedAudioEncoder.from_pretrained(checkpoints["siglip"], hidden_size=D)
    with pytest.raises(ConfigError, match="vision"):
        PretrainedVisionEncoder.from_pretrained(checkpoints["whisper"], hidden_size=D)


def test_an_audio_spectrogram_transformer_encodes_audio_events_window_by_window(tmp_path):
    """A tiny AST (16 mel bins, 64-frame windows, 16 x 16 patches at stride 16: 4 time patches per window) on 100
    frames: two windows, eight time steps; each equals the AST's own patch tokens for that window averaged over
    frequency, and a time patch is real when it starts on a real frame."""
    from transformers import ASTConfig, ASTModel

    from unified.model.audio_event import AudioEventEncoder

    torch.manual_seed(0)
    ASTModel(ASTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       patch_size=16, frequency_stride=16, time_stride=16, max_length=64,
                       num_mel_bins=32)).save_pretrained(tmp_path / "ast")
    enc = AudioEventEncoder.from_pretrained(tmp_path / "ast", hidden_size=D).eval()
    mels = torch.randn(1, 1, 32, 100)
    mask = torch.ones(1, 1, 100, dtype=torch.bool)
    out, out_mask = enc(mels, mask)
    assert out.shape == (1, 1, 8, D)
    assert out_mask[0, 0].tolist() == [True] * 7 + [False]  # patch starts 64, 80, 96 are real; 112 is padding
    ast = ASTModel.from_pretrained(tmp_path / "ast").eval()
    with torch.no_grad():
        windows = [mels[0, :, :, :64], torch.nn.functional.pad(mels[0, :, :, 64:], (0, 28))]
        steps = []
        for window in windows:  # (1, 32, 64) -> AST input (1, 64, 32)
            hidden = ast(input_values=window.transpose(1, 2)).last_hidden_state[:, 2:]  # (1, 2 x 4 patches, 16)
            steps.append(hidden.view(1, 2, 4, 16).mean(1))  # freq-major patches, averaged over frequency
        expected = enc.proj(torch.cat(steps, dim=1))[0] * out_mask[0, 0, :, None]
    torch.testing.assert_close(out[0, 0], expected, atol=1e-5, rtol=1e-5)
    _assert_frozen_backbone_and_trainable_rest(enc, out.square().mean())


def test_an_ast_checkpoint_is_the_models_audio_encoder_and_sets_the_processors_mel_bins(tmp_path):
    from transformers import ASTConfig, ASTModel

    from unified.model import UnifiedConfig, UnifiedModel
    from unified.model.audio_event import AudioEventEncoder
    from unified.training import load_config
    from unified.training.build import build_stack
    from unified.training.data import load_training_data

    torch.manual_seed(0)
    ast = ASTModel(ASTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             patch_size=16, frequency_stride=16, time_stride=16, max_length=64, num_mel_bins=32))
    ast.save_pretrained(tmp_path / "ast")
    config = UnifiedConfig.preset("tiny", audio={"pretrained_path": str(tmp_path / "ast")})
    model = UnifiedModel.from_pretrained_parts(config)
    assert isinstance(model.encoder.media.audio, AudioEventEncoder)
    ours = model.encoder.media.audio.backbone.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in ast.state_dict().items())
    smoke = Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny-smoke.yaml"
    cfg = load_config(smoke, [f"output_dir={tmp_path / 'run'}", "data.synthetic={n_train: 2, n_eval: 0, seed: 1}",
                              "data.tasks=[audio_video_mcqa]", f"model.audio={{pretrained_path: {tmp_path / 'ast'}}}"])
    rows, _ = load_training_data(cfg, log=lambda _: None)
    _, processor, built = build_stack(cfg, rows, log=lambda _: None)
    assert processor.config.n_mels == 32
    from unified.task_zoo import get_task
    from unified.task_zoo.batching import task_batch

    batch = task_batch(get_task("audio_video_mcqa"), rows["audio_video_mcqa"][:2], processor)
    assert batch["audio_features"].shape[2] == 32 and torch.isfinite(built(**batch).loss)


def test_a_videomae_checkpoint_encodes_clips_and_gives_each_frame_its_tubelet(tmp_path):
    """A tiny VideoMAE (4-frame clips, tubelets of 2, 2 x 2 patches) on 6 frames: two clips, the second filled by
    repeating its last frame; frames 2i and 2i + 1 carry tubelet i's tokens, which equal VideoMAE's own output on that
    clip, plus each frame's own time embedding; in a model, `vision.pretrained_path` picks it."""
    from transformers import VideoMAEConfig, VideoMAEModel

    from unified.model import UnifiedConfig, UnifiedModel
    from unified.model.video_clip import ClipVideoEncoder

    torch.manual_seed(0)
    VideoMAEModel(VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=16,
                                 num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(
        tmp_path / "videomae")
    enc = ClipVideoEncoder.from_pretrained(tmp_path / "videomae", hidden_size=D).eval()
    pixels = torch.randn(1, 1, 6, 3, 32, 32)
    times = torch.arange(6.0).view(1, 1, 6) / 4
    out = enc(pixels, times, torch.ones(1, 1, 6, dtype=torch.bool))
    assert out.shape == (1, 1, 6, 4, D)
    ref = VideoMAEModel.from_pretrained(tmp_path / "videomae").eval()
    with torch.no_grad():
        first = ref(pixel_values=pixels[:, 0, :4]).last_hidden_state.view(2, 4, 16)  # tubelets x patches
        second = ref(pixel_values=torch.cat([pixels[:, 0, 4:], pixels[:, 0, 5:6].expand(1, 2, 3, 32, 32)],
                                            dim=1)).last_hidden_state.view(2, 4, 16)
        tokens = torch.stack([first[0], first[0], first[1], first[1], second[0], second[0]])  # (6, 4, 16)
        expected = enc.proj(tokens) + enc.time_embed(times)[0, 0, :, None, :]
    torch.testing.assert_close(out[0, 0], expected, atol=1e-5, rtol=1e-5)
    masked = enc(pixels, times, torch.tensor([[[True] * 3 + [False] * 3]]))
    assert masked[0, 0, 3:].abs().sum() == 0  # padded frames are zero
    _assert_frozen_backbone_and_trainable_rest(enc, out.square().mean())
    config = UnifiedConfig.preset("tiny", vision={"pretrained_path": str(tmp_path / "videomae"), "image_size": 32})
    assert isinstance(UnifiedModel.from_pretrained_parts(config).encoder.media.vision, ClipVideoEncoder)

"""UnifiedProcessor against independent truths: frames that show their own index, tones of known length,
hand-computed normalisation, time bins and label padding."""

import numpy as np
import pytest
import torch
from media_fixtures import index_frame, read_index, write_index_video, write_tone

from unified.errors import ConfigError, InputError
from unified.processing import UnifiedProcessor
from unified.tokenizers import UnifiedTokenizer

CORPUS = [f"the {c} {s} moves {d} quickly" for c in ("red", "green", "blue") for s in ("circle", "square")
          for d in ("left", "right", "up", "down")] * 3 + ["what happens first where is it"]


@pytest.fixture(scope="module")
def tokenizer():
    return UnifiedTokenizer.train(CORPUS, text_vocab_size=60, hard_vocab_limit=False)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    short = write_index_video(root / "short.mp4", num_frames=30, fps=10, size=(128, 96))  # 3 s
    long = write_index_video(root / "long.mp4", num_frames=50, fps=10, size=(128, 96), with_audio_hz=1000.0)
    tone = write_tone(root / "tone.wav", 440.0, seconds=1.5, sampling_rate=16000)
    return {"short": short, "long": long, "tone": tone}


def _unnormalise(pixels: torch.Tensor) -> np.ndarray:
    # (3, S, S) normalised with mean = std = 0.5 -> uint8 (S, S, 3)
    return ((pixels * 0.5 + 0.5).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def test_video_batch_frames_masks_and_times_follow_the_clips(tokenizer, clips):
    # image_size = the clip width keeps the index bars readable after the square resize (96 -> 128 rows).
    proc = UnifiedProcessor(tokenizer, image_size=128, video_fps=2.0, max_frames=32)
    batch = proc([{"text": "<video> what happens first", "video": clips["short"], "target": "the red circle"},
                  {"text": "<video> where is it", "video": clips["long"], "target": "left"}])
    assert batch["pixel_values"].shape == (2, 1, 10, 3, 128, 128)
    # 3 s at 2 fps -> t = 0, 0.5, ..., 2.5 -> source frames 0, 5, ..., 25; 5 s -> frames 0, 5, ..., 45
    assert batch["pixel_mask"].sum(-1).tolist() == [[6], [10]]
    for b, count in ((0, 6), (1, 10)):
        seen = [read_index(_unnormalise(batch["pixel_values"][b, 0, t])) for t in range(count)]
        assert seen == list(range(0, 5 * count, 5))
        assert torch.allclose(batch["frame_times"][b, 0, :count], torch.arange(count) * 0.5, atol=1e-3)
    assert not batch["pixel_mask"][0, 0, 6:].any() and (batch["pixel_values"][0, 0, 6:] == 0).all()
    # time tokens: relative bin round(t / duration * 99); t = 2.5 of 3.0 s -> bin 82.5 -> 82 (round half to even)
    expected = [tokenizer.token_to_id(f"<time_{round(t / 3.0 * 99)}>") for t in np.arange(6) * 0.5]
    assert batch["frame_time_ids"][0, 0, :6].tolist() == expected


def test_labels_and_prompt_padding(tokenizer, clips):
    proc = UnifiedProcessor(tokenizer, image_size=32)
    batch = proc([{"text": "what happens first", "target": "the red circle moves left"},
                  {"text": "where", "target": "up"}])
    first = [*tokenizer.encode("the red circle moves left"), tokenizer.eos_token_id]
    second = [*tokenizer.encode("up"), tokenizer.eos_token_id]
    assert batch["labels"][0].tolist() == first
    assert batch["labels"][1].tolist() == second + [-100] * (len(first) - len(second))
    prompt = tokenizer.encode("where")
    assert batch["input_ids"][1, : len(prompt)].tolist() == prompt
    assert batch["attention_mask"][1].tolist() == [1] * len(prompt) + [0] * (batch["input_ids"].shape[1] - len(prompt))
    assert (batch["input_ids"][1, len(prompt):] == tokenizer.pad_token_id).all()
    assert "pixel_values" not in batch and "audio_features" not in batch


def test_image_normalisation_is_hand_computable(tokenizer):
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 255, 51, 0
    proc = UnifiedProcessor(tokenizer, image_size=16, image_mean=(0.5, 0.2, 0.0), image_std=(0.5, 0.1, 1.0))
    batch = proc({"text": "<image> where is it", "image": image})
    pixels = batch["pixel_values"][0, 0, 0]  # (3, 16, 16)
    for channel, value in enumerate(((1.0 - 0.5) / 0.5, (0.2 - 0.2) / 0.1, 0.0)):
        assert torch.allclose(pixels[channel], torch.full((16, 16), value), atol=1e-5)
    assert batch["frame_times"].tolist() == [[[0.0]]]
    assert batch["frame_time_ids"].item() == tokenizer.token_to_id("<time_0>")


def test_media_follow_placeholder_order(tokenizer):
    frames = [index_frame(i, size=(128, 128)) for i in (3, 7)]
    proc = UnifiedProcessor(tokenizer, image_size=128)
    batch = proc({"text": "<image> the <image> where", "image": frames})
    assert [read_index(_unnormalise(batch["pixel_values"][0, m, 0])) for m in range(2)] == [3, 7]


def test_audio_features_length_and_mask(tokenizer, clips):
    proc = UnifiedProcessor(tokenizer, image_size=32)
    batch = proc([{"text": "<audio> what", "audio": clips["tone"]},
                  {"text": "<video><audio> what", "video": clips["long"], "audio": clips["long"]}])
    # 1.5 s and 5 s at 16 kHz, hop 160 -> 150 and 500 mel frames
    assert batch["audio_features"].shape == (2, 1, 80, 500)
    assert batch["audio_mask"].sum(-1).tolist() == [[150], [500]]
    assert batch["pixel_mask"].sum().item() == 5  # only the second example has a visual item: 5 s at 1 fps
    assert not batch["pixel_mask"][0].any()


def test_placeholder_mismatch_and_bad_examples_raise(tokenizer, clips):
    proc = UnifiedProcessor(tokenizer, image_size=32)
    with pytest.raises(InputError, match="1 <video> placeholder"):
        proc({"text": "<video> what", "video": [clips["short"], clips["short"]]})
    with pytest.raises(InputError, match="0 <audio> placeholder"):
        proc({"text": "what", "audio": clips["tone"]})
    with pytest.raises(InputError, match="unknown keys"):
        proc({"text": "what", "videos": clips["short"]})
    with pytest.raises(InputError, match="text=None: expected the prompt"):
        proc({"video": clips["short"]})
    with pytest.raises(InputError, match="give a target for every example"):
        proc([{"text": "what", "target": "up"}, {"text": "where"}])
    with pytest.raises(InputError, match="max_length"):
        UnifiedProcessor(tokenizer, max_length=2)({"text": "what happens first"})
    with pytest.raises(ConfigError, match="video_fps"):
        UnifiedProcessor(tokenizer, video_fps=0)
    with pytest.raises(ConfigError, match="unknown processor field"):
        UnifiedProcessor(tokenizer, image_sise=3)


def test_save_and_load_round_trip(tokenizer, clips, tmp_path):
    proc = UnifiedProcessor(tokenizer, image_size=48, video_fps=None, num_frames=4)
    proc.save_pretrained(tmp_path)
    again = UnifiedProcessor.from_pretrained(tmp_path)
    example = {"text": "<video> what happens first", "video": clips["short"], "target": "the red circle"}
    a, b = proc(example), again(example)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(InputError, match="processor_config.json"):
        UnifiedProcessor.from_pretrained(tmp_path / "missing")


def test_media_cache_decodes_each_file_once_and_notices_a_rewrite(tokenizer, tmp_path):
    clip = write_index_video(tmp_path / "clip.mp4", num_frames=20, fps=10, size=(128, 96), with_audio_hz=1000.0)
    example = {"text": "<video><audio> where is it", "video": clip, "audio": clip, "target": "left"}
    plain = UnifiedProcessor(tokenizer, image_size=128, video_fps=2.0, max_frames=8)
    cached = UnifiedProcessor(tokenizer, image_size=128, video_fps=2.0, max_frames=8).cache_media(2**30)
    first, again = cached([example]), cached([example])
    assert cached.media_cache.misses == 2 and cached.media_cache.hits == 2  # video + audio, each once
    for key, value in plain([example]).items():
        assert torch.equal(first[key], value) and torch.equal(again[key], value), key
    # 2 s at 2 fps -> source frames 0, 5, 10, 15
    assert [read_index(_unnormalise(first["pixel_values"][0, 0, t])) for t in range(4)] == [0, 5, 10, 15]
    # rewritten in place with other content: decoded again, not served stale
    write_index_video(clip, num_frames=20, fps=5, size=(128, 96), with_audio_hz=1000.0)
    frames = cached([example])["pixel_values"][0, 0]
    assert [read_index(_unnormalise(frames[t])) for t in range(4)] == [0, 2, 5, 7]  # on screen at 0, .5, 1, 1.5 s
    assert cached.media_cache.misses == 4


def test_media_cache_drops_the_least_recently_used_past_its_budget(tmp_path):
    from unified.media.cache import MediaCache

    cache = MediaCache(max_bytes=3 * 400)  # room for three 100-float tensors
    files = [tmp_path / f"{i}.bin" for i in range(4)]
    for f in files:
        f.write_bytes(b"x")
    for i, f in enumerate(files[:3]):
        cache.get("t", f, (), lambda i=i: torch.full((100,), float(i)))
    cache.get("t", files[0], (), lambda: pytest.fail("file 0 was cached"))  # 0 becomes the most recent
    cache.get("t", files[3], (), lambda: torch.full((100,), 3.0))  # evicts 1, the least recently used
    assert len(cache) == 3 and cache.bytes == 1200
    assert cache.get("t", files[1], (), lambda: torch.full((100,), -1.0))[0].item() == -1.0  # reloaded
    assert cache.get("t", "not a file", (), lambda: "passed through") == "passed through"
    with pytest.raises(ConfigError, match="max_bytes"):
        MediaCache(0)

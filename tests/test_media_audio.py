"""load_audio and log_mel against the truth: tones of known pitch and length, and Whisper's own feature extractor."""

import math

import numpy as np
import pytest
import torch
from media_fixtures import write_audio, write_index_video, write_tone
from transformers import WhisperFeatureExtractor

from unified.errors import InputError, MediaDecodeError
from unified.media import load_audio, log_mel

RATE = 16000


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    return {
        "wav": write_tone(root / "a440.wav", 440.0, 2.0, sampling_rate=44100),
        "m4a": write_tone(root / "a440.m4a", 440.0, 2.0, sampling_rate=44100),
        "mp3": write_tone(root / "a440.mp3", 440.0, 2.0, sampling_rate=44100),
        "video": write_index_video(root / "beep.mp4", 30, 10, with_audio_hz=1000.0),  # 3 s, aac track
        "silent_video": write_index_video(root / "silent.mp4", 10, 10),
        "empty_wav": write_tone(root / "empty.wav", 440.0, 0.0),
        "empty_m4a": write_tone(root / "empty.m4a", 440.0, 0.0),
        "root": root,
    }


def dominant_hz(wave: torch.Tensor, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(wave.numpy()))
    return float(np.argmax(spectrum) * rate / len(wave))


# The stated stream duration trims codec padding, so lengths are exact up to resampler rounding; the
# tolerance still allows one aac frame (1024 samples at 44.1 kHz = 372 at 16 kHz) for containers that
# do not state a duration, since aac decoders emit whole frames.
AAC_FRAME_AT_16K = math.ceil(1024 * RATE / 44100)


@pytest.mark.parametrize(
    "name, seconds, hz",
    [("wav", 2.0, 440.0), ("m4a", 2.0, 440.0), ("mp3", 2.0, 440.0), ("video", 3.0, 1000.0)],
)
def test_tone_comes_back_at_16k_with_its_length_and_pitch(media, name, seconds, hz):
    wave = load_audio(media[name])
    assert wave.dtype == torch.float32 and wave.ndim == 1
    assert abs(len(wave) - seconds * RATE) <= AAC_FRAME_AT_16K
    assert abs(dominant_hz(wave) - hz) <= 5.0
    rms = wave[RATE // 4 : -RATE // 4].pow(2).mean().sqrt().item()  # away from the codec's edge effects
    assert rms == pytest.approx(0.5 / math.sqrt(2), rel=0.05)  # a 0.5-amplitude sine


def test_wav_is_exact(media):
    wave = load_audio(media["wav"])
    assert len(wave) == 32000
    t = np.arange(32000) / RATE
    truth = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    # Away from the resampler's start-up, samples match the analytic tone to s16 + resampling error.
    np.testing.assert_allclose(wave.numpy()[200:-200], truth[200:-200], atol=2e-3)


def test_audio_next_to_cover_art(tmp_path):
    wave = load_audio(write_tone(tmp_path / "song.mp3", 440.0, 1.0, cover_art=True))
    assert abs(len(wave) - RATE) <= AAC_FRAME_AT_16K and abs(dominant_hz(wave) - 440.0) <= 5.0


def test_bytes_and_paths_agree(media):
    torch.testing.assert_close(load_audio(media["m4a"].read_bytes()), load_audio(str(media["m4a"])))


def test_arrays_are_resampled_like_files(media):
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * np.arange(88200) / 44100)).astype(np.float32)  # 2 s at 44.1 kHz
    wave = load_audio(tone, source_rate=44100)
    assert len(wave) == 32000 and abs(dominant_hz(wave) - 440.0) <= 5.0
    np.testing.assert_allclose(wave.numpy(), load_audio(media["wav"]).numpy(), atol=1e-3)  # s16 rounding
    same = load_audio(torch.from_numpy(tone).double(), source_rate=44100)
    np.testing.assert_allclose(same.numpy(), wave.numpy(), atol=1e-6)
    unchanged = load_audio(tone)  # no source_rate: already at sampling_rate
    assert unchanged.dtype == torch.float32 and np.array_equal(unchanged.numpy(), tone)
    assert len(load_audio(tone, source_rate=44100, sampling_rate=8000)) == 16000


def test_zero_length_audio_is_a_decode_error(media):
    with pytest.raises(MediaDecodeError, match="no audio samples") as info:
        load_audio(media["empty_wav"])
    assert str(media["empty_wav"]) in str(info.value)
    with pytest.raises(MediaDecodeError):  # the mp4 muxer drops a track with no packets: no audio stream
        load_audio(media["empty_m4a"])


def test_video_without_audio_is_a_decode_error(media):
    with pytest.raises(MediaDecodeError, match=r"no audio stream \(streams found: video\)"):
        load_audio(media["silent_video"])


def test_random_bytes_and_missing_files(media):
    with pytest.raises(MediaDecodeError, match="not a decodable audio file") as info:
        load_audio(np.random.default_rng(1).bytes(3000))
    assert "<3000 bytes>" in str(info.value)
    with pytest.raises(MediaDecodeError, match="empty"):
        load_audio(b"")
    missing = media["root"] / "missing.wav"
    with pytest.raises(InputError, match="no such file") as info:
        load_audio(missing)
    assert not isinstance(info.value, MediaDecodeError) and str(missing) in str(info.value)


@pytest.mark.parametrize(
    "source, kwargs, what, reason",
    [
        (np.zeros(100, np.int16), {}, "audio", "floating"),
        (np.zeros((2, 100), np.float32), {}, "audio", "mono"),
        (np.zeros(0, np.float32), {}, "audio", "no samples"),
        (np.array([0.0, np.nan], np.float32), {}, "audio", "NaN"),
        (np.zeros(100, np.float32), {"sampling_rate": 0}, "sampling_rate", "positive integer"),
        (np.zeros(100, np.float32), {"source_rate": 44100.5}, "source_rate", "positive integer"),
        ("x.wav", {"source_rate": 44100}, "source_rate", "only for arrays"),
        ([0.0, 0.1], {}, "audio", "unsupported type list"),
    ],
)
def test_bad_audio_inputs_name_the_input(source, kwargs, what, reason):
    with pytest.raises(InputError, match=reason) as info:
        load_audio(source, **kwargs)
    assert info.value.what == what


def test_stereo_is_averaged_to_mono(tmp_path):
    t = np.arange(RATE) / RATE
    left, right = 0.4 * np.sin(2 * np.pi * 300 * t), 0.2 * np.sin(2 * np.pi * 1200 * t)
    wave = load_audio(write_audio(tmp_path / "stereo.wav", np.stack([left, right]), RATE))
    assert len(wave) == RATE
    np.testing.assert_allclose(wave.numpy(), (left + right) / 2, atol=1e-4)  # s16 rounding only


def test_other_source_rates(tmp_path):
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 8000).astype(np.float32)  # 1 s at 8 kHz
    assert len(load_audio(write_audio(tmp_path / "noise.wav", noise, 8000))) == RATE
    assert len(load_audio(write_audio(tmp_path / "noise.m4a", noise, 8000), sampling_rate=24000)) == 24000


# ---------------------------------------------------------------------------------------------------------
# log_mel


def slaney_hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney's Auditory Toolbox scale, written out here independently: linear below 1 kHz, log above.
    hz = np.asarray(hz, dtype=np.float64)
    linear = 3.0 * hz / 200.0
    return np.where(hz < 1000.0, linear, 15.0 + 27.0 * np.log(np.maximum(hz, 1e-9) / 1000.0) / np.log(6.4))


def slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel < 15.0, 200.0 * mel / 3.0, 1000.0 * np.exp(np.log(6.4) * (mel - 15.0) / 27.0))


@pytest.mark.parametrize("hz", [440.0, 1000.0, 3000.0])
def test_log_mel_peak_sits_in_the_bin_nearest_the_tone(hz):
    wave = torch.from_numpy((0.5 * np.sin(2 * np.pi * hz * np.arange(RATE) / RATE)).astype(np.float32))
    features = log_mel(wave)
    assert features.shape == (80, 100) and features.dtype == torch.float32
    centres = slaney_mel_to_hz(np.linspace(slaney_hz_to_mel(0.0), slaney_hz_to_mel(8000.0), 82)[1:-1])
    distance = np.abs(centres - hz)
    expected = int(np.argmin(distance))
    assert np.sort(distance)[1] - distance[expected] > 5.0  # not a tie between two bins
    assert int(features.mean(dim=1).argmax()) == expected


def test_log_mel_equals_whisper_on_a_30_second_clip():
    # Exactly 30 s: Whisper pads nothing, so its global-max clamp sees the same audio as ours.
    rng = np.random.default_rng(0)
    t = np.arange(30 * RATE) / RATE
    audio = (0.1 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * 700 * t)).astype(np.float32)
    extractor = WhisperFeatureExtractor(feature_size=80, sampling_rate=RATE)
    reference = extractor(audio, sampling_rate=RATE, return_tensors="np").input_features[0]  # [80, 3000]
    numpy_reference = extractor._np_extract_fbank_features(audio[None], "cpu")[0]  # numpy STFT path
    ours = log_mel(torch.from_numpy(audio)).numpy()
    assert ours.shape == reference.shape == (80, 3000)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(ours, numpy_reference, atol=1e-4)


def test_log_mel_keeps_the_actual_length_and_matches_whisper_inside_it():
    # 2 s with a loud burst in the middle (so the max, and hence the clamp, is the same with or without
    # Whisper's 28 s of silent padding). Only the last frame differs: Whisper's centred window there sees
    # padding zeros where ours sees reflected audio.
    audio = (0.1 * np.random.default_rng(1).standard_normal(2 * RATE)).astype(np.float32)
    audio[RATE : RATE + 1600] *= 4
    ours = log_mel(torch.from_numpy(audio)).numpy()
    assert ours.shape == (80, 200)  # N // 160, not 3000
    reference = WhisperFeatureExtractor(feature_size=80)(audio, sampling_rate=RATE, return_tensors="np")
    np.testing.assert_allclose(ours[:, :-1], reference.input_features[0][:, :199], atol=1e-5)
    assert log_mel(torch.zeros(2 * RATE + 159)).shape == (80, 200)  # a partial hop adds no frame


def test_log_mel_scaling_of_silence():
    # All power at the 1e-10 floor: log10 = -10 everywhere, the clamp is inactive, (x + 4) / 4 = -1.5.
    assert torch.equal(log_mel(torch.zeros(RATE)), torch.full((80, 100), -1.5))


@pytest.mark.parametrize(
    "audio, kwargs, reason",
    [
        (torch.zeros(399), {}, "25 ms window"),
        (torch.zeros(2, 1600), {}, "mono"),
        (torch.zeros(1600, dtype=torch.int16), {}, "float"),
        ([0.0] * 1600, {}, "expected a 1-D float tensor"),
        (torch.zeros(1600), {"n_mels": 0}, "positive integer"),
        (torch.zeros(1600), {"sampling_rate": -1}, "positive integer"),
    ],
)
def test_log_mel_bad_inputs(audio, kwargs, reason):
    with pytest.raises(InputError, match=reason):
        log_mel(audio, **kwargs)


def test_corrupted_files_raise_only_media_decode_errors(media):
    rng = np.random.default_rng(0)
    sources = [media[name].read_bytes() for name in ("wav", "m4a", "mp3", "video")]
    outcomes = set()
    for i in range(60):
        data = bytearray(sources[i % 4])
        start = rng.integers(len(data))
        data[start : start + 200] = rng.bytes(200)  # a run of noise, or a truncation
        if i % 2:
            data = data[: rng.integers(len(data))]
        try:
            load_audio(bytes(data))
            outcomes.add("decoded")
        except MediaDecodeError:
            outcomes.add("MediaDecodeError")
    assert outcomes == {"decoded", "MediaDecodeError"}

"""load_video against the truth: every test file shows its frame index, so we know exactly which frames came back.

Expected indices are worked out by hand from the documented rule (times k / fps, or segment centres
(i + 0.5) * duration / n; frame i covers [i / source_fps, (i + 1) / source_fps)).
"""

import math
import os
from fractions import Fraction

import av
import numpy as np
import PIL.Image
import pytest
import torch
from media_fixtures import index_frame, read_index, write_index_video, write_tone

from unified.errors import InputError, MediaDecodeError
from unified.media import Video, load_video, sample_times
from unified.media.video import _FrameCursor


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    return {
        # 30 frames at 10 fps = 3 s. x264's default GOP (250) leaves one keyframe; gop=1 makes all of them key.
        "ten_one_key": write_index_video(root / "ten_one_key.mp4", 30, 10),
        "ten_all_key": write_index_video(root / "ten_all_key.mp4", 30, 10, gop=1),
        "ten_mpeg4": write_index_video(root / "ten_mpeg4.mp4", 30, 10, codec="mpeg4", gop=12),
        # 120 frames at 24 fps = 5 s, keyframes every 50 frames / every frame; with an aac track.
        "24_gop50": write_index_video(root / "24_gop50.mp4", 120, 24, gop=50, with_audio_hz=1000.0),
        "24_all_key": write_index_video(root / "24_all_key.mp4", 120, 24, gop=1),
        "24_faststart": write_index_video(root / "24_faststart.mp4", 120, 24, gop=10, faststart=True),
        "tone_wav": write_tone(root / "tone.wav", 440.0, 0.5),
        "tone_m4a": write_tone(root / "tone.m4a", 440.0, 0.5),
        "tone_mp3_with_cover": write_tone(root / "cover.mp3", 440.0, 0.5, cover_art=True),
        "root": root,
    }


def indices(video: Video) -> list[int]:
    return [read_index(frame.numpy()) for frame in video.frames]


def assert_timestamps_match_indices(video: Video, source_fps: float) -> None:
    expected = torch.tensor([i / source_fps for i in indices(video)], dtype=torch.float32)
    torch.testing.assert_close(video.timestamps, expected, atol=1e-3, rtol=0)


TEN_FPS_CASES = [
    # (kwargs, expected frame indices of the 3 s, 10 fps clip)
    ({"fps": 1.0}, [0, 10, 20]),  # t = 0, 1, 2
    ({"fps": 0.5}, [0, 20]),  # t = 0, 2
    ({"fps": 3.0}, [0, 3, 6, 10, 13, 16, 20, 23, 26]),  # t = k/3, k < 9; t = 1.0 is frame 10's first instant
    ({"fps": 2.0, "max_frames": 4}, [3, 11, 18, 26]),  # 6 > 4 times: uniform, t = .375, 1.125, 1.875, 2.625
    ({"fps": None, "num_frames": 5}, [3, 9, 15, 21, 27]),  # t = .3, .9, 1.5, 2.1, 2.7: each on a boundary
    ({"fps": None, "num_frames": 1}, [15]),  # t = 1.5
    ({"fps": 20.0, "max_frames": 100}, list(range(30))),  # above the source rate: each frame once
]

TWENTY_FOUR_FPS_CASES = [
    # (kwargs, expected frame indices of the 5 s, 24 fps clip)
    ({"fps": 1.0}, [0, 24, 48, 72, 96]),
    ({"fps": 2.5}, [0, 9, 19, 28, 38, 48, 57, 67, 76, 86, 96, 105, 115]),  # t = 0.4k, k <= 12: floor(9.6k)
    ({"fps": 1.0, "max_frames": 3}, [20, 60, 100]),  # 5 > 3: t = (i + .5) * 5/3 -> 40 (i + .5)
    ({"fps": None, "num_frames": 8}, [7, 22, 37, 52, 67, 82, 97, 112]),  # floor(15 i + 7.5)
    ({"fps": 6.0}, list(range(0, 120, 4))),  # exactly every 4th frame, 30 <= 32
    ({"fps": 8.0}, [math.floor((i + Fraction(1, 2)) * 120 / 32) for i in range(32)]),  # 40 > 32: uniform
]


@pytest.mark.parametrize("name", ["ten_one_key", "ten_all_key", "ten_mpeg4"])
@pytest.mark.parametrize("kwargs, expected", TEN_FPS_CASES)
def test_sampling_returns_exactly_the_expected_frames_10fps(media, name, kwargs, expected):
    video = load_video(media[name], **kwargs)
    assert indices(video) == expected
    assert_timestamps_match_indices(video, 10.0)
    assert video.duration == pytest.approx(3.0, abs=1e-6) and video.source_fps == pytest.approx(10.0)
    assert video.frames.shape == (len(expected), 48, 64, 3) and video.frames.dtype == torch.uint8
    assert video.timestamps.dtype == torch.float32


@pytest.mark.parametrize("name", ["24_gop50", "24_all_key", "24_faststart"])
@pytest.mark.parametrize("kwargs, expected", TWENTY_FOUR_FPS_CASES)
def test_sampling_returns_exactly_the_expected_frames_24fps(media, name, kwargs, expected):
    video = load_video(media[name], **kwargs)
    assert indices(video) == expected
    assert_timestamps_match_indices(video, 24.0)
    assert video.duration == pytest.approx(5.0, abs=1e-6)


@pytest.mark.parametrize(
    "suffix, codec",
    [
        (".mkv", "libx264"),  # index from cues; time base 1/1000, so pts are rounded to whole ms
        (".ts", "libx264"),  # no index (seeks planned by distance) and a non-zero start time
        (".webm", "libvpx-vp9"),
        (".avi", "mpeg4"),
        (".h264", "libx264"),  # raw stream: no duration, no pts, no seeking
    ],
)
def test_other_containers_give_the_same_frames(tmp_path, suffix, codec):
    path = write_index_video(tmp_path / f"clip{suffix}", 120, 24, codec=codec, gop=50)
    # Only cases whose times fall inside frames or on whole milliseconds: a 1/1000 time base stores
    # frame 4's start (1/6 s) as 0.167 s, so at t = 1/6 the file itself says frame 3 is still showing.
    for kwargs, expected in [TWENTY_FOUR_FPS_CASES[i] for i in (0, 1, 3, 5)]:
        video = load_video(path, **kwargs)
        assert indices(video) == expected, kwargs
        assert_timestamps_match_indices(video, 24.0)
        assert video.duration == pytest.approx(5.0, abs=0.05)


def test_sample_times_follow_the_documented_rule():
    assert sample_times(3.0, fps=1.0) == [0.0, 1.0, 2.0]
    assert sample_times(3.05, fps=10.0)[-1] == pytest.approx(3.0)  # 3.0 < 3.05: 31 times
    assert len(sample_times(3.0, fps=10.0)) == 30  # 3.0 is not < 3.0
    assert sample_times(4.0, fps=1.0, max_frames=2) == [1.0, 3.0]
    assert sample_times(0.0, fps=1.0) == [0.0]  # a zero-length clip still yields its first frame


def test_seeking_decodes_a_fraction_of_the_frames(tmp_path):
    # 240 frames, keyframe every 10: four far-apart targets should cost a few frames each, not 240.
    path = write_index_video(tmp_path / "g10.mp4", 240, 24, gop=10)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        cursor = _FrameCursor(container, stream, 0)
        ticks = 1 / stream.time_base
        picked = [
            read_index(cursor.frame_at(int(t * ticks)).to_ndarray(format="rgb24")) for t in (0, 3, 6, 9)
        ]
        assert picked == [0, 72, 144, 216]
        assert cursor.seeks == 3
        assert cursor.decoded <= 4 * 12  # at most a GOP (plus one frame of lookahead) per target
        # Close targets (no keyframe in between) decode forward without seeking again.
        seeks = cursor.seeks
        assert read_index(cursor.frame_at(int(9.1 * ticks)).to_ndarray(format="rgb24")) == 218
        assert cursor.seeks == seeks


def test_all_input_types_give_the_same_frames(media, tmp_path):
    path = media["ten_one_key"]
    with av.open(str(path)) as container:  # every frame, decoded independently of the loader
        every = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # [30, H, W, 3]
    assert [read_index(f) for f in every] == list(range(30))
    reference = load_video(path, fps=3.0)
    pngs = []
    for i, frame in enumerate(every):
        pngs.append(tmp_path / f"{i}.png")
        PIL.Image.fromarray(frame).save(pngs[-1])
    sources = {
        "str": str(path),
        "bytes": path.read_bytes(),
        "numpy": every,
        "torch": torch.from_numpy(every),
        "list of PIL": [PIL.Image.fromarray(f) for f in every],
        "list of numpy": list(every),
        "list of png paths": pngs,
    }
    for name, source in sources.items():
        extra = {} if isinstance(source, (str, bytes)) else {"source_fps": 10.0}
        video = load_video(source, fps=3.0, **extra)
        torch.testing.assert_close(video.frames, reference.frames, atol=0, rtol=0, msg=name)
        torch.testing.assert_close(video.timestamps, reference.timestamps, atol=1e-6, rtol=0, msg=name)
        assert video.duration == pytest.approx(3.0), name


def test_in_memory_frames_default_to_one_per_second():
    frames = np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(5)])  # [5, 4, 4, 3]
    video = load_video(frames)
    assert video.timestamps.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and video.duration == 5.0
    assert video.frames[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]
    uniform = load_video(frames, fps=None, num_frames=2)  # t = 1.25, 3.75
    assert uniform.frames[:, 0, 0, 0].tolist() == [1, 3]
    frames[:] = 9
    assert video.frames[0, 0, 0, 0] == 0  # a copy


def test_truncated_file_with_index_in_front_returns_the_frames_that_decode(media):
    data = media["24_faststart"].read_bytes()
    video = load_video(data[: int(len(data) * 0.9)], fps=4.0, max_frames=100)
    found = indices(video)
    assert found == sorted(set(found)) and 0 < found[-1] < 119  # a prefix of the clip, each frame once
    assert found[:5] == [0, 6, 12, 18, 24]
    assert_timestamps_match_indices(video, 24.0)
    # Cut right after the index: the header is readable but no frame is.
    header_only = data[: data.find(b"mdat") + 8]
    with pytest.raises(MediaDecodeError, match="no video frame could be decoded"):
        load_video(header_only)


def test_truncated_file_with_index_at_the_end_is_a_decode_error(media):
    data = media["ten_one_key"].read_bytes()
    with pytest.raises(MediaDecodeError, match="not a decodable video") as info:
        load_video(data[: len(data) // 2])
    assert f"<{len(data) // 2} bytes>" in str(info.value)


def test_random_and_empty_bytes_are_decode_errors():
    with pytest.raises(MediaDecodeError, match="not a decodable video") as info:
        load_video(np.random.default_rng(0).bytes(4000))
    assert info.value.what == "video" and "<4000 bytes>" in str(info.value)
    with pytest.raises(MediaDecodeError, match="empty"):
        load_video(b"")


@pytest.mark.parametrize("name", ["tone_wav", "tone_m4a"])
def test_audio_only_file_has_no_video_stream(media, name):
    with pytest.raises(MediaDecodeError, match=r"no video stream \(streams found: audio\)") as info:
        load_video(media[name])
    assert str(media[name]) in str(info.value)


def test_cover_art_is_not_a_video(media):
    with pytest.raises(MediaDecodeError, match=r"no video stream .*attached picture \(cover art\)"):
        load_video(media["tone_mp3_with_cover"])


def test_numpy_scalars_are_accepted_as_arguments(media):
    video = load_video(media["ten_one_key"], fps=np.float32(1.0), max_frames=np.int64(8))
    assert indices(video) == [0, 10, 20]


def test_missing_file_and_directory_are_input_errors(media):
    missing = media["root"] / "missing.mp4"
    with pytest.raises(InputError, match="no such file") as info:
        load_video(missing)
    assert not isinstance(info.value, MediaDecodeError) and str(missing) in str(info.value)
    with pytest.raises(InputError, match="not a file"):
        load_video(media["root"])


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"fps": 0}, "fps"),
        ({"fps": -1.0}, "fps"),
        ({"fps": float("nan")}, "fps"),
        ({"fps": float("inf")}, "fps"),
        ({"fps": True}, "fps"),
        ({"fps": "2"}, "fps"),
        ({"max_frames": 0}, "max_frames"),
        ({"max_frames": 2.5}, "max_frames"),
        ({"fps": None, "num_frames": 0}, "num_frames"),
        ({"num_frames": 4}, "num_frames"),  # fps=1.0 is also set
        ({"fps": None}, "fps"),  # neither
        ({"source_fps": 10.0}, "source_fps"),  # a file has its own rate
    ],
)
def test_bad_arguments_name_the_argument(media, kwargs, argument):
    with pytest.raises(InputError) as info:
        load_video(media["ten_one_key"], **kwargs)
    assert info.value.what == argument and str(info.value).startswith(f"{argument}=")


@pytest.mark.parametrize(
    "source, kwargs, reason",
    [
        (np.zeros((2, 4, 4, 3), np.float32), {}, "dtype uint8"),
        (np.zeros((4, 4, 3), np.uint8), {}, r"shape \[T, H, W, 3\]"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), {}, "permute"),
        (np.zeros((0, 4, 4, 3), np.uint8), {}, "at least one frame"),
        ([], {}, "at least one frame"),
        (np.zeros((2, 4, 4, 3), np.uint8), {"source_fps": 0}, "source_fps"),
        (42, {}, "unsupported type int"),
    ],
)
def test_bad_in_memory_sources(source, kwargs, reason):
    with pytest.raises(InputError, match=reason):
        load_video(source, **kwargs)


def test_list_of_images_must_share_a_size():
    frames = [np.zeros((4, 4, 3), np.uint8), np.zeros((4, 6, 3), np.uint8)]
    with pytest.raises(InputError, match=r"video\[1\].*share one size"):
        load_video(frames)
    with pytest.raises(InputError, match=r"video\[0\].*unsupported type dict"):
        load_video([{"not": "an image"}])


def test_corrupt_bytes_inside_a_file_do_not_crash(media):
    # Overwrite a stretch in the middle of the media data with noise: packets fail to decode and are skipped.
    data = bytearray(media["24_all_key"].read_bytes())
    start = data.find(b"mdat") + len(data) // 3
    data[start : start + 2000] = os.urandom(2000)
    video = load_video(bytes(data), fps=4.0, max_frames=100)
    assert video.num_frames > 0
    assert video.timestamps.tolist() == sorted(video.timestamps.tolist())


def corrupt(data: bytes, rng: np.random.Generator) -> bytes:
    """One random corruption: flipped bytes, a truncation, or a run of noise."""
    data = bytearray(data)
    kind = rng.integers(3)
    if kind == 0:
        for _ in range(rng.integers(1, 20)):
            data[rng.integers(len(data))] = rng.integers(256)
    elif kind == 1:
        data = data[: rng.integers(len(data))]
    else:
        start = rng.integers(len(data))
        data[start : start + 200] = rng.bytes(200)
    return bytes(data)


def test_corrupted_files_raise_only_media_decode_errors(media):
    # Whatever FFmpeg makes of a damaged file, the caller sees a Video or a MediaDecodeError, never a
    # PyAV/numpy traceback. (A local run of 1,500 such cases found none; 60 keep the suite quick.)
    rng = np.random.default_rng(0)
    sources = [
        media["24_gop50"].read_bytes(),
        media["24_faststart"].read_bytes(),
        media["tone_m4a"].read_bytes(),
    ]
    outcomes = set()
    for i in range(60):
        try:
            load_video(corrupt(sources[i % 3], rng), fps=2.0)
            outcomes.add("decoded")
        except MediaDecodeError:
            outcomes.add("MediaDecodeError")
    assert outcomes == {"decoded", "MediaDecodeError"}  # both paths were exercised


def test_frames_scaled_while_decoding_keep_their_index_time_and_stored_size(tmp_path):
    """`size=`: FFmpeg scales each chosen frame while converting it to RGB. The clip's 12 bars of 16 px become
    bars of 8 px in a 96 x 96 frame, so each frame still reads as its own index at its own time; the pixels match
    a full-size decode resized afterwards (antialiased bilinear) to within 4/255 on average; `size` reports the
    stored (width, height), which boxes in pixels refer to."""
    import torch.nn.functional as F

    clip = write_index_video(tmp_path / "wide.mp4", 40, 10, size=(192, 96))
    small = load_video(clip, fps=4.0, max_frames=32, size=96)
    full = load_video(clip, fps=4.0, max_frames=32)
    assert small.frames.shape == (16, 96, 96, 3) and full.frames.shape == (16, 96, 192, 3)
    assert small.size == full.size == (192, 96)
    assert [read_index(f) for f in small.frames] == [round(float(t) * 10) for t in small.timestamps]
    assert torch.equal(small.timestamps, full.timestamps)
    resized = F.interpolate(full.frames.permute(0, 3, 1, 2).float(), size=(96, 96), mode="bilinear",
                            antialias=True).permute(0, 2, 3, 1)
    assert float((small.frames.float() - resized).abs().mean()) < 4.0
    frames = np.stack([index_frame(i, (192, 96)) for i in range(8)])  # in memory: resized the same way
    memory = load_video(frames, fps=1.0, size=96)
    assert memory.frames.shape == (8, 96, 96, 3) and memory.size == (192, 96)
    assert [read_index(f) for f in memory.frames] == list(range(8))
    with pytest.raises(InputError, match="size"):
        load_video(clip, size=0)


def _decode_scaled_in_child(clip, conn):
    video = load_video(clip, fps=4.0, max_frames=32, size=96)
    conn.send([read_index(f) for f in video.frames])


def test_a_forked_worker_decodes_at_size_after_its_parent_did(tmp_path):
    """DataLoader workers are forked. PyAV keeps one reformatter per thread and scales with a pool of threads; a
    child forked after its parent scaled a frame inherits that reformatter without its threads and used to wait on
    them forever. The parent here scales through PyAV's default path and through load_video, then a forked child
    decodes at a size and must read each frame's own index within the minute."""
    import multiprocessing

    clip = write_index_video(tmp_path / "wide.mp4", 40, 10, size=(192, 96))
    with av.open(str(clip)) as container:
        frame = next(container.decode(video=0))
        assert frame.to_ndarray(format="rgb24", width=96, height=96).shape == (96, 96, 3)
    parent = load_video(clip, fps=4.0, max_frames=32, size=96)
    expected = [round(float(t) * 10) for t in parent.timestamps]  # frame i is shown from i / 10 s
    assert [read_index(f) for f in parent.frames] == expected
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_decode_scaled_in_child, args=(clip, send))
    child.start()
    try:
        assert receive.poll(60), "the forked child did not finish decoding within 60 s"
        assert receive.recv() == expected
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0

"""Synthetic media files with a known truth, written with PyAV, for tests (and benchmarks) to read back.

Every video frame shows its own index in binary as wide black/white vertical bars, so a test can tell
exactly which source frame a loader returned, despite lossy compression:

    >>> path = write_index_video(tmp_path / "clip.mp4", num_frames=30, fps=10)   # 3 s, frames 0..29
    >>> read_index(frame)                    # frame: uint8 [H, W, 3] decoded from that file
    7

Audio is a sine tone of a known frequency, so a test can check the rate, the length and the pitch:

    >>> write_tone(tmp_path / "a4.wav", 440.0, seconds=1.0, sampling_rate=44100)     # pcm_s16le
    >>> write_tone(tmp_path / "empty.wav", 440.0, seconds=0.0)                        # valid, zero samples

Functions here only write files; they never decode with the library under test.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BAR_MIN_WIDTH = 8  # px: wide enough that a bar's mean survives 4:2:0 chroma and 8x8/16x16 block coding
MAX_BARS = 12  # 12 bits: up to 4096 distinct frame indices

# File suffix -> (audio codec, sample format the encoder wants).
_AUDIO_CODECS = {
    ".wav": ("pcm_s16le", "s16"),
    ".m4a": ("aac", "fltp"),
    ".mp4": ("aac", "fltp"),
    ".mp3": ("libmp3lame", "fltp"),
}


def num_bars(width: int) -> int:
    """How many index bars a frame of this width carries (each at least 8 px wide, at most 12)."""
    return min(MAX_BARS, width // BAR_MIN_WIDTH)


def index_frame(index: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """The uint8 [H, W, 3] picture of frame `index`: bit b (most significant first) is bar b, white when set.

    >>> index_frame(5, (64, 48))[0, :, 0][::8]    # 8 bars of 8 px: 00000101
    array([  0,   0,   0,   0,   0, 255,   0, 255], dtype=uint8)
    """
    width, height = size
    bars = num_bars(width)
    if bars < 1 or not 0 <= index < 2**bars:
        raise ValueError(f"index {index} does not fit in {bars} bars of a {width}-px-wide frame")
    bar_width = width // bars
    frame = np.zeros((height, width, 3), np.uint8)  # [H, W, 3]
    for bar in range(bars):
        if (index >> (bars - 1 - bar)) & 1:
            frame[:, bar * bar_width : (bar + 1) * bar_width] = 255
    return frame


def read_index(frame: np.ndarray, coded_width: int | None = None) -> int:
    """Decode the index that `index_frame` drew: threshold the mean of each bar's central columns at 128.

    `frame` is uint8 [H, W, 3] (a numpy array or anything `np.asarray` accepts, e.g. a CPU tensor).
    Columns near a bar's edges are skipped, since lossy codecs ring there. `coded_width`: the width the frame was
    drawn at, when it has been scaled since (the bars are then read where the scaling put them).
    """
    frame = np.asarray(frame)
    width = frame.shape[1]
    drawn = coded_width or width
    bars = num_bars(drawn)
    bar_width = drawn // bars
    margin = bar_width // 4
    scale = width / drawn
    index = 0
    for bar in range(bars):
        lo = int((bar * bar_width + margin) * scale)
        hi = max(lo + 1, int(((bar + 1) * bar_width - margin) * scale))
        index = (index << 1) | int(frame[:, lo:hi].mean() >= 128)
    return index


def _video_options(codec: str, gop: int | None, bframes: int | None) -> dict[str, str]:
    if codec != "libx264":
        return {}
    # scenecut=0: no keyframes beyond the fixed GOP, so a "large GOP" file really has few of them.
    params = ["scenecut=0"]
    if gop is not None:
        params += [f"keyint={gop}", f"min-keyint={gop}"]
    if bframes is not None:
        params.append(f"bframes={bframes}")
    return {"x264-params": ":".join(params), "preset": "veryfast", "crf": "18"}


def write_index_video(
    path: str | Path,
    num_frames: int,
    fps: float,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    gop: int | None = None,
    with_audio_hz: float | None = None,
    *,
    bframes: int | None = None,
    audio_rate: int = 44100,
    faststart: bool = False,
    audio_samples: np.ndarray | None = None,
) -> Path:
    """Write an mp4 (or any container PyAV infers from the suffix) whose frame i shows `index_frame(i)`.

    Args:
        path: output file; its suffix picks the container.
        num_frames: frames to write; frame i is presented at i / fps seconds.
        fps: constant frame rate (a Fraction is kept exactly; a float is limited to denominator 1001 * 1000).
        size: (width, height); width // 8 bars carry the index (so 64 px -> 8 bits -> at most 256 frames).
        codec: "libx264" (B-frames on, veryfast, crf 18), "mpeg4" (no B-frames), or another PyAV encoder
            (e.g. "libvpx-vp9" for .webm); encoders other than x264 get a high bit rate.
        gop: keyframe interval (1: every frame is a keyframe; None: the codec's default, 250 for x264,
            so a short clip has only its first keyframe). x264 runs with scenecut=0, so its keyframes are
            exactly every `gop` frames; mpeg4 still adds a keyframe where it detects a scene change.
        with_audio_hz: also write a mono aac track of a sine at this frequency, as long as the video.
        bframes: libx264 only: number of B-frames (None: the preset's default, 3).
        audio_rate: sampling rate of the audio track.
        faststart: mp4 only: put the index (moov atom) at the front, as streaming files do.
        audio_samples: instead of a sine, this mono float32 sound at `audio_rate` as the aac track.

    Returns the path. Example:
        >>> write_index_video(tmp_path / "c.mp4", 30, 10, gop=1, with_audio_hz=1000.0)
    """
    path = Path(path)
    width, height = size
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001 * 1000)
    container_options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=container_options) as out:
        video = out.add_stream(codec, rate=rate, options=_video_options(codec, gop, bframes))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if codec != "libx264":
            video.bit_rate = 4_000_000  # near-lossless for the tiny test frames
            if gop is not None:
                video.codec_context.gop_size = gop
        audio = None
        if with_audio_hz is not None or audio_samples is not None:
            audio = out.add_stream("aac", rate=audio_rate, layout="mono")
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, size), format="rgb24")
            frame.pts = i  # in 1 / rate units; PyAV rescales to the stream time base
            frame.time_base = Fraction(1) / rate
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio is not None:
            seconds = float(num_frames / rate)
            sound = _sine(with_audio_hz, seconds, audio_rate) if audio_samples is None else audio_samples
            _encode_audio(out, audio, sound, audio_rate, "fltp")
    return path


def _sine(freq_hz: float, seconds: float, sampling_rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sampling_rate)) / sampling_rate  # [N]
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _encode_audio(out, stream, samples: np.ndarray, sampling_rate: int, sample_format: str) -> None:
    # samples: float32 [C, N]. Fixed-size chunks; encoders with a fixed frame size (aac: 1024, mp3: 1152)
    # get them re-chunked by PyAV's internal audio FIFO.
    samples = np.atleast_2d(samples)
    layout = {1: "mono", 2: "stereo"}[samples.shape[0]]
    chunk = 1024
    for start in range(0, samples.shape[1], chunk):
        piece = samples[:, start : start + chunk]  # [C, n] planar
        if sample_format == "s16":  # packed: [1, n * C] interleaved
            piece = np.round(np.clip(piece, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format=sample_format, layout=layout)
        frame.sample_rate = sampling_rate
        frame.pts = start
        frame.time_base = Fraction(1, sampling_rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _add_cover_art(out):
    stream = out.add_stream("mjpeg", rate=1)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
    stream.disposition = av.stream.Disposition.attached_pic
    return stream


def _cover_frame() -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(index_frame(1, (64, 48)), format="rgb24").reformat(format="yuvj420p")
    frame.pts = 0
    return frame


def write_audio(
    path: str | Path,
    samples: np.ndarray,
    sampling_rate: int,
    codec: str | None = None,
    *,
    cover_art: bool = False,
) -> Path:
    """Write float samples in [-1, 1], mono [N] or [C, N] with C in 1, 2, as an audio-only file.

    N may be 0 (a valid file with no samples). The codec follows the suffix unless given:
    .wav -> pcm_s16le, .m4a/.mp4 -> aac, .mp3 -> libmp3lame. `cover_art=True` (mp3) also stores a
    64x48 picture as an "attached picture" video stream, as music files carry album art.

        >>> write_audio(tmp_path / "noise.wav", np.random.default_rng(0).uniform(-1, 1, 16000), 16000)
    """
    path = Path(path)
    default_codec, sample_format = _AUDIO_CODECS.get(path.suffix.lower(), ("pcm_s16le", "s16"))
    codec = codec or default_codec
    if codec != default_codec:
        sample_format = "s16" if codec.startswith("pcm_s16") else "fltp"
    samples = np.atleast_2d(np.asarray(samples, np.float32))  # [C, N]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=sampling_rate, layout={1: "mono", 2: "stereo"}[samples.shape[0]])
        art = _add_cover_art(out) if cover_art else None
        out.start_encoding()  # writes the header even when no packet follows (an empty file stays valid)
        if art is not None:
            out.mux(art.encode(_cover_frame()))
            out.mux(art.encode(None))
        _encode_audio(out, stream, samples, sampling_rate, sample_format)
    return path


def write_tone(
    path: str | Path,
    freq_hz: float,
    seconds: float,
    sampling_rate: int = 44100,
    codec: str | None = None,
    amplitude: float = 0.5,
    *,
    cover_art: bool = False,
) -> Path:
    """Write an audio-only file holding a sine of `freq_hz` for `seconds` (0 gives a valid file with no samples).

    `cover_art`: see `write_audio`.

    >>> write_tone(tmp_path / "a4.m4a", 440.0, 2.0)      # aac in mp4, 44.1 kHz
    """
    samples = _sine(freq_hz, seconds, sampling_rate, amplitude)
    return write_audio(path, samples, sampling_rate, codec, cover_art=cover_art)


def speak(words_at: list[tuple[str, float]], seconds: float, sampling_rate: int = 16000,
          voice: str = "en-us+f2") -> np.ndarray:
    """Mono float32 [seconds * sampling_rate] of silence with each word spoken by espeak-ng from its time on."""
    import shutil
    import subprocess

    from unified.media import load_audio

    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise FileNotFoundError("espeak-ng")
    out = np.zeros(int(seconds * sampling_rate), np.float32)
    for word, start in words_at:
        wav = subprocess.run([espeak, "-v", voice, "-s", "130", "--stdout", word], capture_output=True,
                             check=True).stdout
        said = load_audio(wav, sampling_rate=sampling_rate).numpy()
        at = int(start * sampling_rate)
        out[at:at + len(said)] = said[:len(out) - at]
    return out

"""Audio in, mono float32 samples at one rate out: `load_audio(source, sampling_rate=16000) -> [N]`.

Accepted sources:

    str / Path / bytes   any file FFmpeg reads: wav, flac, mp3, m4a/aac, ogg, and the audio track of a video
                         (mp4, mkv, webm, ...); the first audio stream is used
    numpy / torch        1-D floating samples in [-1, 1]; `source_rate=` gives their rate (None: they are
                         already at `sampling_rate`, returned as a float32 copy)

Everything is resampled by FFmpeg (PyAV's `av.AudioResampler(format="fltp", rate=sampling_rate, threads=1)`,
flushed at the end), arrays included, so there is one resampling implementation. Channels are then
AVERAGED with equal weights: stereo becomes (L + R) / 2, as librosa's `to_mono` and Whisper's
`ffmpeg -ac 1` to 16-bit PCM give. (Asking libswresample for float mono instead would give
(L + R) / sqrt(2), which can exceed 1.)

Length: when the stream states its duration, the output is trimmed to round(duration * sampling_rate).
This matters for aac, whose decoder outputs whole 1024-sample frames: FFmpeg drops the encoder's
priming samples at the start (the mp4 edit list says how many) but not the padding at the end,
which the stated duration excludes. Without a stated duration, aac may come back up to one frame
(1024 source samples) long. Arrays come back with round(N * sampling_rate / source_rate) samples.

Errors: a missing file -> InputError; undecodable bytes, a file with no audio stream, or a valid file
with no samples -> MediaDecodeError; integer, multi-channel, empty or non-finite arrays -> InputError.
Containers are opened with `with` (always closed), so the loader is safe in DataLoader workers.

    >>> wave = load_audio("speech.m4a")                 # float32 [N] at 16 kHz
    >>> wave = load_audio(np.zeros(44100, np.float32), source_rate=44100)
    >>> wave.shape
    torch.Size([16000])
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from unified.errors import InputError, MediaDecodeError
from unified.media.member import Member, decoded_array

_ARRAY_CHUNK = 1 << 16  # samples per AudioFrame when resampling an array


@dataclass(frozen=True)
class Samples:
    """Samples in memory with their rate: a 1-D float array or tensor in [-1, 1] recorded at `rate` samples per
    second. `Model.generate(audio=array, source_rate=...)` wraps arrays in it; `load_audio` takes it like any
    source.

        >>> load_audio(Samples(np.zeros(44100, np.float32), rate=44100)).shape
        torch.Size([16000])
    """

    samples: Any
    rate: int

    def __post_init__(self) -> None:
        _check_rate("source_rate", self.rate)


def load_audio(source: Any, *, sampling_rate: int = 16000, source_rate: int | None = None) -> torch.Tensor:
    """Decode and resample to mono float32 [N] at `sampling_rate` (see the module docstring).

    >>> load_audio("clip.mp4", sampling_rate=16000).dtype       # the audio track of a video
    torch.float32
    """
    _check_rate("sampling_rate", sampling_rate)
    if source_rate is not None:
        _check_rate("source_rate", source_rate)
    if isinstance(source, Samples):
        if source_rate is not None and source_rate != source.rate:
            raise InputError("source_rate", source_rate, f"the samples state their own rate ({source.rate})")
        return _load_array(source.samples, sampling_rate, source.rate)
    if isinstance(source, Member):  # inside a tar shard: its bytes, or the waveform decoded when it was sharded
        if source.decoded is not None:
            return torch.from_numpy(decoded_array(source, "audio", {"sampling_rate": sampling_rate}))
        source = source.read()
    if isinstance(source, (str, Path, bytes, bytearray, memoryview)):
        if source_rate is not None:
            raise InputError("source_rate", source_rate, "only for arrays; a file states its own rate")
        return _load_file(source, sampling_rate)
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return _load_array(source, sampling_rate, source_rate)
    raise InputError(
        "audio",
        source,
        f"unsupported type {type(source).__name__}; expected a path, bytes, or a 1-D float numpy array "
        "or torch tensor",
    )


def _check_rate(name: str, rate: Any) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise InputError(name, rate, "expected a positive integer number of samples per second")


def _load_file(source: Any, sampling_rate: int) -> torch.Tensor:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise InputError("audio", str(source), "no such file")
        if not path.is_file():
            raise InputError("audio", str(source), "not a file")
        opened, shown = str(path), str(source)
    else:
        opened, shown = io.BytesIO(bytes(source)), bytes(source)
        if not shown:
            raise MediaDecodeError("audio", shown, "empty input, not an audio file")
    try:
        with av.open(opened, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                kinds = ", ".join(s.type for s in container.streams) or "none"
                raise MediaDecodeError("audio", shown, f"no audio stream (streams found: {kinds})")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", rate=sampling_rate, threads=1)  # keeps the channel layout
            try:
                chunks = [out for frame in _decoded(container, stream) for out in _resample(resampler, frame)]
                chunks += _resample(resampler, None)  # flush: the resampler holds a filter's worth of samples
            except ValueError as err:  # PyAV: a frame whose format, layout or rate changed mid-stream
                raise MediaDecodeError("audio", shown, f"cannot resample the audio ({err})") from err
            stated = float(stream.duration * stream.time_base) if stream.duration else None
    except av.FFmpegError as err:
        raise MediaDecodeError("audio", shown, f"not a decodable audio file ({err})") from err
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)  # [N]
    if stated is not None:
        samples = samples[: round(stated * sampling_rate)]
    if samples.size == 0:
        raise MediaDecodeError("audio", shown, "no audio samples (the stream is empty)")
    return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))


def _decoded(container: Any, stream: Any):
    # Like the video cursor: a corrupt packet is skipped, unreadable container data ends the stream.
    demuxed = container.demux(stream)
    while True:
        try:
            packet = next(demuxed)
        except (StopIteration, av.FFmpegError):
            return
        try:
            yield from packet.decode()
        except av.FFmpegError:
            continue


def _resample(resampler: av.AudioResampler, frame: Any) -> list[np.ndarray]:
    # "fltp" is planar: each output frame's ndarray is [C, n]; average the channels to mono [n].
    return [out.to_ndarray().mean(axis=0, dtype=np.float32) for out in resampler.resample(frame)]


def _load_array(source: Any, sampling_rate: int, source_rate: int | None) -> torch.Tensor:
    shown = f"{type(source).__name__}(shape={tuple(source.shape)}, dtype={source.dtype})"
    array = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else source
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(
            "audio", shown, "expected floating samples in [-1, 1]; convert int16 PCM with x / 32768"
        )
    if array.ndim != 1:
        raise InputError("audio", shown, "expected mono samples of shape [N]; downmix with x.mean(axis=0)")
    if array.size == 0:
        raise InputError("audio", shown, "no samples")
    if not np.isfinite(array).all():
        raise InputError("audio", shown, "samples contain NaN or infinity")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if source_rate is None or source_rate == sampling_rate:
        return torch.from_numpy(array.copy())
    resampler = av.AudioResampler(format="fltp", rate=sampling_rate, threads=1)
    chunks = []
    for start in range(0, array.size, _ARRAY_CHUNK):
        frame = av.AudioFrame.from_ndarray(
            array[None, start : start + _ARRAY_CHUNK], format="flt", layout="mono"
        )
        frame.sample_rate, frame.pts, frame.time_base = source_rate, start, Fraction(1, source_rate)
        chunks += _resample(resampler, frame)
    chunks += _resample(resampler, None)
    samples = np.concatenate(chunks)[: round(array.size * sampling_rate / source_rate)]  # [N']
    return torch.from_numpy(np.ascontiguousarray(samples))

"""Video in, a few frames with their timestamps out: `load_video(source, fps=1.0) -> Video`.

Sampling rule (times are seconds from the start of the video stream):

    fps sampling (default)   t_k = k / fps for k = 0, 1, 2, ... while t_k < duration
                             (a 3 s clip at fps=1 gives t = 0, 1, 2)
    uniform fallback         when that gives more than max_frames times, the clip is cut into
                             n = max_frames equal segments and the CENTRE of each is taken:
                             t_i = (i + 0.5) * duration / n
    fps=None, num_frames=n   the same centred uniform rule with n segments (max_frames is not used)

Each time t maps to the frame whose presentation interval contains it: the last frame with pts <= t,
where frame i of a constant-rate video has the interval [i / source_fps, (i + 1) / source_fps).
A time before the first frame maps to the first frame. Two times that land on the same frame give
it once, so fewer frames come back when fps exceeds the source rate. `Video.timestamps` are the
presentation times of the frames returned (where they came from), not the requested times.

Duration: the video stream's own duration when the container states it, else the container's, else
(no metadata, e.g. a raw .h264 stream) the end of the last packet, max(pts + duration), from a
demux-only pass (then the file is opened again). Frames of raw streams carry no pts at all: they are
timed by adding up frame durations from the start, and such streams are decoded forward without seeks.

Time base conventions: PyAV gives every packet and frame an integer `pts` in units of its stream's
`time_base` (a Fraction of a second, e.g. 1/12288 in mp4). We keep pts as integers while decoding,
turn a requested time t into `start_pts + floor(t / time_base + 1e-3)` (the 1e-3 tick absorbs float
error when t falls exactly on a frame boundary), and report seconds as (pts - start_pts) * time_base
with start_pts = the stream's start_time (0 when unset). Container-level durations are in
av.time_base = 1 / 1_000_000 units. Index entries of mp4 files are DTS, which with B-frames run a
couple of frames ahead of pts; `_FrameCursor` shifts them before using them to plan seeks.

Decoding seeks instead of reading every frame: for each target time (ascending), when a keyframe lies
between the current decoding position and the target, seek (backward, to the keyframe at or before
the target) and decode forward; otherwise keep decoding forward. So a few frames from an hour-long
file cost about as much as from a minute-long one. The seek plan only affects speed: the frame
chosen is always the one the rule above names.

Broken input: bytes or a file that FFmpeg cannot open, a file without a video stream, or one in which
no frame decodes raise MediaDecodeError. Packets that fail to decode are skipped (as FFmpeg's own
command-line tool does). A truncated file whose index survives (mp4 with the index at the front) gives
the frames that do decode: a time past the last decodable frame maps to that frame, and its timestamp
says where it came from; `duration` still reports the container's claim.

In-memory sources: numpy or torch uint8 [T, H, W, 3], or a list of anything `load_image` accepts (one
image per frame, loaded only when sampled). Frame i is taken to sit at i / source_fps seconds, with
source_fps=None meaning 1.0 (frames one second apart, i.e. already sampled at 1 fps), and
duration = T / source_fps. The same sampling rule applies.

The loader is per item (no progress bar, no worker pool) and opens every container with `with`, so it
is safe to call from DataLoader workers or threads.

    >>> clip = load_video("clip.mp4", fps=2.0, max_frames=16)
    >>> clip.frames.shape, clip.timestamps[:3]         # [T, H, W, 3] uint8, [T] float32 seconds
    (torch.Size([16, 480, 640, 3]), tensor([0.0000, 0.5000, 1.0000]))
"""

from __future__ import annotations

import io
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from unified.errors import InputError, MediaDecodeError
from unified.media.image import load_image
from unified.media.member import Member, decoded_array

NO_INDEX_FORWARD_S = 2.0  # without a keyframe index, decode forward through gaps shorter than this, else seek
_TICK_TOLERANCE = 1e-3  # in time_base ticks: a time on a frame boundary picks the frame that starts there


@dataclass
class Video:
    """Sampled frames of one video.

    frames:     uint8 [T, H, W, 3] RGB (the same HWC layout as `load_image`)
    timestamps: float32 [T], seconds from the start of the stream at which each frame is presented
    duration:   seconds the whole video lasts (not only the sampled part)
    source_fps: the video's average frame rate, or None when the container does not say
    coded_size: (width, height) of the frames as stored, before `load_video(size=...)` scaled them (None: the
                frames' own size); boxes in pixels refer to it

        >>> Video(torch.zeros(2, 4, 4, 3, dtype=torch.uint8), torch.tensor([0.0, 1.0]), 2.0, 1.0).num_frames
        2
    """

    frames: torch.Tensor
    timestamps: torch.Tensor
    duration: float
    source_fps: float | None = None
    coded_size: tuple[int, int] | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the video as stored."""
        return self.coded_size or (int(self.frames.shape[2]), int(self.frames.shape[1]))


@dataclass(frozen=True)
class Frames:
    """Frames in memory with their rate: a uint8 [T, H, W, 3] array or tensor (or a list of images) shown at
    `fps` frames per second. `Model.generate(video=array, source_fps=...)` wraps arrays in it; `load_video`
    takes it like any source.

        >>> load_video(Frames(np.zeros((6, 8, 8, 3), np.uint8), fps=4.0)).duration
        1.5
    """

    frames: Any
    fps: float

    def __post_init__(self) -> None:
        if not _positive_real(self.fps):
            raise InputError("source_fps", self.fps, "expected a positive, finite number of frames per second")


def sample_times(
    duration: float, *, fps: float | None = 1.0, max_frames: int = 32, num_frames: int | None = None
) -> list[float]:
    """The times (seconds) the sampling rule asks for; see the module docstring.

    >>> sample_times(3.0, fps=1.0)
    [0.0, 1.0, 2.0]
    >>> sample_times(3.0, fps=None, num_frames=2)          # centres of [0, 1.5) and [1.5, 3)
    [0.75, 2.25]
    """
    _check_sampling(fps, max_frames, num_frames)
    if num_frames is None:
        fps, max_frames = float(fps), int(max_frames)  # numpy scalars in, plain floats out
        count = max(1, math.ceil(duration * fps - 1e-6))  # k / fps < duration; at least t = 0
        if count <= max_frames:
            return [k / fps for k in range(count)]
        num_frames = max_frames
    return [(i + 0.5) * float(duration) / int(num_frames) for i in range(int(num_frames))]


def load_video(
    source: Any,
    *,
    fps: float | None = 1.0,
    max_frames: int = 32,
    num_frames: int | None = None,
    source_fps: float | None = None,
    size: int | None = None,
) -> Video:
    """Sample frames from a video file, encoded bytes, a [T, H, W, 3] uint8 array/tensor or a list of images.

    Args:
        source: a path (str or Path), bytes, numpy/torch uint8 [T, H, W, 3], a list of images, or `Frames`.
        fps: frames per second to sample (t = k / fps); None to sample `num_frames` uniformly instead.
        max_frames: most frames fps sampling returns; beyond it, max_frames are spread uniformly.
        num_frames: with fps=None, how many frames to take at the centres of equal segments.
        source_fps: in-memory sources only: the rate of the given frames (None: 1.0).
        size: return frames scaled to size x size (square, as the processor feeds the model). Files and bytes are
            scaled by FFmpeg as each chosen frame is converted to RGB (area averaging), so a 720p frame is never
            materialised; in-memory frames are resized with antialiased bilinear interpolation. `coded_size`
            keeps the stored size.

    Returns a `Video`. Raises InputError for bad arguments, a missing file or a bad array, and
    MediaDecodeError when the source is not a decodable video.

        >>> load_video("clip.mp4", fps=None, num_frames=8).frames.shape
        torch.Size([8, 480, 640, 3])
    """
    if isinstance(source, Member):  # inside a tar shard: its bytes, or frames decoded when it was sharded
        if source.decoded is not None:
            return _decoded_video(source, fps, max_frames, num_frames, size)
        source = source.read()
    _check_sampling(fps, max_frames, num_frames)
    if size is not None and (not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 1):
        raise InputError("size", size, "expected a frame size in pixels >= 1, or None")
    if source_fps is not None and not _positive_real(source_fps):
        raise InputError("source_fps", source_fps, "expected a positive, finite number of frames per second")
    sampling = {"fps": fps, "max_frames": max_frames, "num_frames": num_frames}
    if isinstance(source, (str, Path, bytes, bytearray, memoryview)):
        if source_fps is not None:
            raise InputError("source_fps", source_fps, "only for in-memory frames; a file has its own rate")
        return _load_file(source, sampling, size)
    if isinstance(source, Frames):
        if source_fps is not None and float(source_fps) != float(source.fps):
            raise InputError("source_fps", source_fps, f"the frames already carry fps={source.fps:g}")
        return _resized(_load_frames(source.frames, float(source.fps), sampling), size)
    if isinstance(source, (np.ndarray, torch.Tensor, list, tuple)):
        return _resized(_load_frames(source, 1.0 if source_fps is None else float(source_fps), sampling), size)
    raise InputError(
        "video",
        source,
        f"unsupported type {type(source).__name__}; expected a path, bytes, a uint8 array or tensor "
        "[T, H, W, 3], or a list of images",
    )


def _decoded_video(member: Member, fps, max_frames, num_frames, size) -> Video:
    wanted = {"fps": fps, "max_frames": max_frames, "num_frames": num_frames, "size": size}
    frames = torch.from_numpy(decoded_array(member, "video", wanted))  # uint8 [T, S, S, 3]
    meta = member.decoded
    return Video(frames, torch.tensor(meta["timestamps"], dtype=torch.float32), float(meta["duration"]),
                 meta["source_fps"], tuple(meta["coded_size"]))


def _resized(video: Video, size: int | None) -> Video:
    h, w = video.frames.shape[1:3]
    if size is None or (h, w) == (size, size):
        return video
    x = video.frames.permute(0, 3, 1, 2).float()  # [T, 3, H, W]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    frames = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()  # [T, S, S, 3]
    return Video(frames, video.timestamps, video.duration, video.source_fps, coded_size=(int(w), int(h)))


def _positive_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _check_sampling(fps: Any, max_frames: Any, num_frames: Any) -> None:
    def is_int(x: Any) -> bool:
        return isinstance(x, numbers.Integral) and not isinstance(x, bool)

    if fps is not None and not _positive_real(fps):
        raise InputError("fps", fps, "expected a positive, finite number of frames per second, or None")
    if not is_int(max_frames) or max_frames < 1:
        raise InputError("max_frames", max_frames, "expected an integer >= 1")
    if num_frames is not None and (not is_int(num_frames) or num_frames < 1):
        raise InputError("num_frames", num_frames, "expected an integer >= 1, or None")
    if fps is not None and num_frames is not None:
        raise InputError(
            "num_frames", num_frames, f"fps={fps} is also set; pass fps=None to sample num_frames uniformly"
        )
    if fps is None and num_frames is None:
        raise InputError("fps", None, "give fps (frames per second) or, with fps=None, num_frames")


# ---------------------------------------------------------------------------------------------------------
# In-memory frames


def _load_frames(source: Any, source_fps: float, sampling: dict) -> Video:
    if isinstance(source, (list, tuple)):
        count = len(source)
    else:
        shown = f"{type(source).__name__}(shape={tuple(source.shape)}, dtype={source.dtype})"
        if str(source.dtype) not in ("uint8", "torch.uint8"):
            raise InputError("video", shown, "expected dtype uint8 frames [T, H, W, 3]")
        if source.ndim != 4 or source.shape[3] != 3:
            hint = ""
            if isinstance(source, torch.Tensor) and source.ndim == 4 and source.shape[1] == 3:
                hint = " (this looks like [T, 3, H, W]: use x.permute(0, 2, 3, 1))"
            raise InputError("video", shown, f"expected shape [T, H, W, 3]{hint}")
        count = int(source.shape[0])
    if count == 0:
        raise InputError("video", f"{type(source).__name__} of 0 frames", "expected at least one frame")
    duration = count / source_fps
    indices = []
    for t in sample_times(duration, **sampling):
        index = min(count - 1, math.floor(t * source_fps + 1e-6))  # frame i covers [i, i + 1) / source_fps
        if not indices or indices[-1] != index:
            indices.append(index)
    if isinstance(source, (list, tuple)):
        frames = [load_image(source[i], what=f"video[{i}]") for i in indices]  # [H, W, 3] each
        for i, frame in zip(indices, frames):
            if frame.shape != frames[0].shape:
                raise InputError(
                    f"video[{i}]",
                    f"image of shape {tuple(frame.shape)}",
                    f"all frames must share one size; video[{indices[0]}] is {tuple(frames[0].shape)}",
                )
        stacked = torch.stack(frames)  # [T, H, W, 3]
    else:
        stacked = torch.as_tensor(source[indices]).detach().cpu().clone()  # [T, H, W, 3], a CPU copy
    timestamps = torch.tensor([i / source_fps for i in indices], dtype=torch.float32)
    return Video(stacked.contiguous(), timestamps, duration, source_fps)


# ---------------------------------------------------------------------------------------------------------
# Files and encoded bytes


def _load_file(source: Any, sampling: dict, size: int | None = None) -> Video:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise InputError("video", str(source), "no such file")
        if not path.is_file():
            raise InputError("video", str(source), "not a file")
        shown = str(source)
    else:
        shown = bytes(source)
        if not shown:
            raise MediaDecodeError("video", shown, "empty input, not a video")

    def open_container() -> Any:
        opened = shown if isinstance(shown, str) else io.BytesIO(shown)
        return av.open(opened, mode="r", metadata_errors="ignore")

    try:
        with open_container() as container:
            stream = _video_stream(container, shown)
            duration = _stated_duration(container, stream)
            if duration is not None:
                return _decode(container, stream, duration, shown, sampling, size)
            duration = _scanned_duration(container, stream)  # reads to the end: reopen rather than seek back
        with open_container() as container:
            return _decode(container, _video_stream(container, shown), duration, shown, sampling, size)
    except av.FFmpegError as err:
        raise MediaDecodeError("video", shown, f"not a decodable video ({err})") from err


IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "gif_pipe", "ppm_pipe",
                 "pgm_pipe", "pam_pipe", "qoi_pipe", "j2k_pipe", "jpegxl_pipe")  # still pictures (an animated
# gif is a video)


def _video_stream(container: Any, shown: Any) -> Any:
    if container.format.name in IMAGE_FORMATS:
        raise MediaDecodeError("video", shown, f"a still image ({container.format.name}), not a video; give it as "
                               "image=, or frames in memory as a [T, H, W, 3] array with source_fps=")
    # The first video stream that is not an "attached picture" (album art in mp3/m4a, thumbnails in mp4).
    moving = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not moving:
        kinds = ", ".join(s.type for s in container.streams) or "none"
        art = "; the video stream is an attached picture (cover art)" if container.streams.video else ""
        raise MediaDecodeError("video", shown, f"no video stream (streams found: {kinds}{art})")
    stream = moving[0]
    if stream.time_base is None:
        raise MediaDecodeError("video", shown, "the video stream has no time base")
    return stream


def _stated_duration(container: Any, stream: Any) -> float | None:
    if stream.duration:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base  # container durations are in av.time_base units (1 us)
    return None


def _scanned_duration(container: Any, stream: Any) -> float:
    # No metadata: the end of the last packet, from a demux-only pass (no decoding).
    start_pts = stream.start_time or 0
    end = clock = start_pts
    for packet in container.demux(stream):
        begin = packet.pts if packet.pts is not None else clock  # raw streams carry no pts: add durations
        clock = begin + (packet.duration or 0)
        end = max(end, clock)
    return float((end - start_pts) * stream.time_base)


def _decode(container: Any, stream: Any, duration: float, shown: Any, sampling: dict, size: int | None) -> Video:
    time_base = stream.time_base
    start_pts = stream.start_time or 0
    rate = stream.average_rate or stream.guessed_rate
    cursor = _FrameCursor(container, stream, start_pts)
    # A reformatter of our own, one thread: PyAV's default one is kept per thread across calls and scales with a
    # pool of threads, which a forked DataLoader worker inherits without the threads and then waits on forever.
    reformatter = VideoReformatter()
    chosen: list[Any] = []
    for t in sample_times(duration, **sampling):
        frame = cursor.frame_at(start_pts + math.floor(t / float(time_base) + _TICK_TOLERANCE))
        if frame is None:
            raise MediaDecodeError("video", shown, "no video frame could be decoded")
        if frame.pts is None:
            raise MediaDecodeError("video", shown, "decoded frames carry no timestamps")
        if not chosen or chosen[-1][0] != frame.pts:
            coded = (frame.width, frame.height)
            scale = {} if size is None or coded == (size, size) else {"width": size, "height": size,
                                                                       "interpolation": "AREA"}
            rgb = reformatter.reformat(frame, format="rgb24", threads=1, **scale)
            chosen.append((frame.pts, rgb.to_ndarray()))  # [H, W, 3] or [S, S, 3]
    frames = torch.from_numpy(np.stack([array for _, array in chosen]))  # [T, H, W, 3]
    seconds = [float((pts - start_pts) * time_base) for pts, _ in chosen]
    return Video(frames, torch.tensor(seconds, dtype=torch.float32), duration, float(rate) if rate else None,
                 coded_size=coded)


class _FrameCursor:
    """Walks one video stream forward, seeking only when a keyframe lies between here and the target.

    `frame_at(target_pts)` must be called with non-decreasing targets; it returns the last frame with
    pts <= target (or the first frame, when the target precedes it), or None when nothing decodes.
    """

    def __init__(self, container: Any, stream: Any, start_pts: int):
        self.container, self.stream, self.start_pts = container, stream, start_pts
        self.index = stream.index_entries  # searched in place: an hour of video has ~10^5 entries
        # mp4 index timestamps are DTS; shift them onto pts using the first entry (DTS of the first frame).
        self.shift = max(0, start_pts - self.index[0].timestamp) if len(self.index) else 0
        self.no_index_gap = NO_INDEX_FORWARD_S / float(stream.time_base)  # in ticks
        self.seeks = self.decoded = 0  # work done, for tests and benchmarks
        self.seekable = True
        rate = stream.average_rate or stream.guessed_rate
        self._step = max(1, round(1 / (rate * stream.time_base))) if rate else 1  # one frame, in ticks
        self._clock = start_pts  # where the next frame starts, for streams whose frames carry no pts
        self._start(seek_to=None)

    def _start(self, seek_to: int | None) -> bool:
        # seek_to=None: from the beginning (no seek needed right after opening). False: cannot seek here.
        if seek_to is not None:
            if not self.seekable:
                return False
            try:
                self.container.seek(seek_to, backward=True, stream=self.stream)
            except av.FFmpegError:  # e.g. a raw elementary stream: go on decoding forward instead
                self.seekable = False
                return False
            self.seeks += 1
        self._from_start = seek_to is None or seek_to <= self.start_pts
        self._frames = self._decoded()
        self._last = self._pending = None  # last frame <= target; first frame > target
        self._eof = False
        return True

    def _decoded(self):
        demuxed = self.container.demux(self.stream)
        while True:
            try:
                packet = next(demuxed)
            except StopIteration:
                return
            except av.FFmpegError:  # unreadable container data (e.g. truncated): end of what can be read
                break
            try:
                frames = packet.decode()
            except av.FFmpegError:  # a corrupt packet: skip it, as the ffmpeg CLI does
                continue
            yield from map(self._timed, frames)
        try:
            yield from map(self._timed, self.stream.decode(None))  # drain what the decoder holds (B-frames)
        except av.FFmpegError:
            return

    def _timed(self, frame: Any) -> Any:
        # Raw elementary streams (.h264, .hevc) have no pts: count frame durations from the start. Such a
        # clock is only right without seeks, so seeking stops here (it rarely works on such streams anyway).
        if frame.pts is None and self.seeks == 0:
            self.seekable = False
            frame.pts = self._clock
        if frame.pts is not None:
            self._clock = frame.pts + (frame.duration or self._step)
        return frame

    def _should_seek(self, target: int) -> bool:
        if self._eof:
            return False  # everything decodable up to the end is behind us
        here = self._pending if self._pending is not None else self._last
        position = here.pts if here is not None else self.start_pts
        if target <= position:
            return False
        if not len(self.index):
            return target - position > self.no_index_gap
        # Is there a keyframe k with position < k <= target? Then a seek skips decoding work.
        k = self.index.search_timestamp(target - self.shift, backward=True)  # last keyframe at or before
        return k >= 0 and self.index[k].timestamp + self.shift > position

    def _advance(self, target: int) -> None:
        while True:
            if self._pending is not None:
                frame, self._pending = self._pending, None
            else:
                frame = next(self._frames, None)
                if frame is None:
                    self._eof = True
                    return
                self.decoded += 1
            if frame.pts is not None and frame.pts > target:
                self._pending = frame
                return
            self._last = frame

    def frame_at(self, target: int) -> Any:
        if self._should_seek(target):
            self._start(seek_to=target)
        self._advance(target)
        if self._last is None and not self._from_start and self._start(seek_to=self.start_pts):
            # The seek landed after the target, or nothing after it decodes: walk from the start instead.
            self._advance(target)
        return self._last if self._last is not None else self._pending

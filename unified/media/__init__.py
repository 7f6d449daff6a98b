"""Media loaders: every modality's file or array becomes a tensor in one documented layout.

    load_image(source)                    -> uint8 [H, W, 3]
    load_video(source, fps=1.0, ...)      -> Video(frames uint8 [T, H, W, 3], timestamps float32 [T], ...)
    load_audio(source, sampling_rate=...) -> float32 [N], mono
    log_mel(audio)                        -> float32 [n_mels, N // hop], Whisper's recipe without 30 s padding

Each loader takes a path, bytes, an array, or a `Member` (a file inside a tar shard, read by offset).

Errors a user can cause raise `unified.errors.InputError`; undecodable media raise its subclass
`MediaDecodeError`.
"""

from unified.media.audio import Samples, load_audio
from unified.media.image import load_image
from unified.media.mel import log_mel, mel_filters
from unified.media.member import Member
from unified.media.video import Video, load_video, sample_times

__all__ = ["Member", "Samples", "Video", "load_audio", "load_image", "load_video", "log_mel", "mel_filters",
           "sample_times"]

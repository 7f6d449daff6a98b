"""`Member`: a media file stored inside a tar shard, read by offset when it is decoded.

Rows read from `unified data shard` output name their media this way; every loader (`load_image`, `load_video`,
`load_audio`) and the media cache take one like a path. Reading uses `os.pread` on a descriptor opened once per
process, so DataLoader workers forked from the training process never share a file position.

    >>> clip = Member("/data/shards/vqa-00000.tar", offset=1536, size=20480, name="00000003.video.mp4")
    >>> load_video(clip, fps=4.0).frames.shape

A member written by `unified data shard --decode` holds media already decoded (`decoded` says how: a video's frames
as a uint8 .npy [T, S, S, 3] sampled at a frame rate and size, audio as a float32 .npy waveform at a rate). The
loaders return it as it is when asked for exactly those settings and refuse other settings by name, since frames
sampled once cannot be resampled.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unified.errors import InputError, MediaDecodeError

_FILES: dict[tuple[int, str], int] = {}  # (pid, shard path) -> descriptor


@dataclass(frozen=True)
class Member:
    shard: str
    offset: int
    size: int
    name: str
    decoded: dict[str, Any] | None = field(default=None, compare=False)  # how it was decoded (--decode shards)

    def read(self) -> bytes:
        key = (os.getpid(), self.shard)
        if key not in _FILES:
            try:
                _FILES[key] = os.open(self.shard, os.O_RDONLY)
            except OSError as exc:
                raise MediaDecodeError("shard", self.shard, f"cannot be opened ({exc.strerror})") from exc
        data = os.pread(_FILES[key], self.size, self.offset)
        if len(data) != self.size:
            raise MediaDecodeError(f"{self.shard} member", self.name, f"truncated: {len(data)} of {self.size} "
                                   "bytes (the shard is shorter than its index says)")
        return data

    def __str__(self) -> str:
        return f"{self.shard}#{self.name}"


def decoded_array(member: Member, kind: str, wanted: dict[str, Any]) -> np.ndarray:
    """The decoded array of a `--decode` member, after checking it was decoded as `wanted` asks."""
    meta = member.decoded or {}
    if meta.get("kind") != kind:
        raise InputError(kind, str(member), f"holds decoded {meta.get('kind')}, not {kind}")
    differ = {k: (meta.get(k), v) for k, v in wanted.items() if meta.get(k) != v}
    if differ:
        shown = ", ".join(f"{k}={old} (asked {new})" for k, (old, new) in differ.items())
        raise InputError(kind, str(member), f"was decoded ahead with {shown}; shard again with these settings, "
                         "or without --decode")
    return np.load(io.BytesIO(member.read()), allow_pickle=False)

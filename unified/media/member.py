"""`Member`: a media file stored inside a tar shard, read by offset when it is decoded.

Rows read from `unified data shard` output name their media this way; every loader (`load_image`, `load_video`,
`load_audio`) and the media cache take one like a path. Reading uses `os.pread` on a descriptor opened once per
process, so DataLoader workers forked from the training process never share a file position.

    >>> clip = Member("/data/shards/vqa-00000.tar", offset=1536, size=20480, name="00000003.video.mp4")
    >>> load_video(clip, fps=4.0).frames.shape
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from unified.errors import MediaDecodeError

_FILES: dict[tuple[int, str], int] = {}  # (pid, shard path) -> descriptor


@dataclass(frozen=True)
class Member:
    shard: str
    offset: int
    size: int
    name: str

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

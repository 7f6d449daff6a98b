"""Where a chat message's media come from (a server's request, a conversation file being imported): a `data:` URL
carried in the message, or a file under the media root.

    url (image_url / video_url / audio_url .url)   ->  bytes (a data: URL) or the path of a file under the root
    input_audio {"data": base64, "format"}        ->  bytes

Nothing else is read: the server never fetches from the network (http, https, ftp... are refused) and never opens a
path outside its media root (`..`, absolute paths elsewhere and symbolic links out of it are refused after
resolving). A data: URL or base64 part over `max_bytes` raises `UploadTooLarge` (HTTP 413).

    >>> policy = MediaPolicy(root=Path("clips"), max_bytes=20 * 2**20)
    >>> policy.resolve("data:image/png;base64,iVBORw0...", "messages[0].content[1].image_url")   # bytes
    >>> policy.resolve("train_00001.mp4", "messages[0].content[1].video_url")                   # '/abs/clips/...'
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from unified.errors import InputError

AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg", "m4a", "mp4", "webm")  # OpenAI names wav and mp3; our decoder reads all


class UploadTooLarge(InputError):
    """A media item larger than the server's `--max-upload-mb` (HTTP 413)."""


@dataclass(frozen=True)
class MediaPolicy:
    """What a server may read: `root` (None: no local paths at all) and the largest media item in bytes."""

    root: Path | None
    max_bytes: int

    def resolve(self, url: str, what: str) -> bytes | str:
        """A part's URL -> bytes (data:) or an absolute path inside the root; `what` names the part in errors."""
        if not isinstance(url, str) or not url:
            raise InputError(what, url, "expected a data: URL or a path under the media root")
        if url.startswith("data:"):
            return self._data_url(url, what)
        scheme = urlsplit(url).scheme
        if scheme == "file":
            path = unquote(urlsplit(url).path)
        elif scheme:
            raise InputError(what, url[:80], f"URL scheme {scheme!r} is refused: this server never fetches from the "
                             "network; send the media inline as a data: URL (or a path under its --media-root)")
        else:
            path = url
        return self._local(path, what)

    def decode_base64(self, data: str, what: str) -> bytes:
        """Base64 text -> bytes, refusing what is not base64 or decodes to more than `max_bytes`."""
        if not isinstance(data, str):
            raise InputError(what, type(data).__name__, "expected base64 text")
        if len(data) * 3 // 4 > self.max_bytes + 3:
            raise self._too_large(what, len(data) * 3 // 4)
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(what, data[:40], "not valid base64") from None
        if len(raw) > self.max_bytes:
            raise self._too_large(what, len(raw))
        if not raw:
            raise InputError(what, "", "empty media")
        return raw

    def _data_url(self, url: str, what: str) -> bytes:
        header, comma, payload = url.partition(",")
        if not comma or not header.endswith(";base64"):
            raise InputError(what, url[:40], "expected a base64 data: URL (data:<type>;base64,<data>)")
        return self.decode_base64(payload, what)

    def _local(self, path: str, what: str) -> str:
        if self.root is None:
            raise InputError(what, path[:200], "local paths are refused: this server was started without "
                             "--media-root; send the media inline as a data: URL")
        root = self.root.resolve()
        target = (root / path).resolve()  # an absolute `path` replaces root here, then must still lie inside it
        if not target.is_relative_to(root):
            raise InputError(what, path[:200], "outside the media root (paths are read only under --media-root)")
        if not target.is_file():
            raise InputError(what, path[:200], "no such file under the media root")
        return str(target)

    def _too_large(self, what: str, size: int) -> UploadTooLarge:
        return UploadTooLarge(what, f"{size / 2**20:.1f} MiB", f"larger than this server's --max-upload-mb "
                              f"{self.max_bytes / 2**20:g}")

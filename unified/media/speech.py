"""Speech as text: the words said in a clip's sound, each with its time, for the prompt next to the clip.

    settings = SpeechSettings.parse({"backend": "pocketsphinx", "keywords": ["banana", "window"]})
    transcript = transcribe("clip.mp4", settings, recognizer(settings))
    transcript.words                                   # (Word("banana", 0.51, 1.26), Word("window", 4.62, ...))
    render(transcript, settings.times, time_token)     # "speech: <time_3> banana <time_12> window"

The processor does this for every task whose budget sets `transcribe` (docs/media.md, "Speech as text"): each
`<audio>` item and each `<video>` item with a sound track gets its transcript right after its placeholder.

Back-ends (`unified.media.recognizers`):

    pocketsphinx   CMU PocketSphinx with the English model its wheel ships: works offline. Free decoding, or with
                   `keywords` a closed vocabulary: the sound is cut into voiced segments and each segment is
                   decoded as one of the keywords (or nothing), which is far more exact than free decoding.
    whisper        a local Whisper checkpoint (`model`: its directory) through transformers' speech-recognition
                   pipeline, with word timestamps.

Times are seconds from the start of the clip, the clock of the sampled frames' timestamps. In the prompt they are
written as `<time_k>` tokens of the clip's duration (`times: tokens`, the default: the same token as a frame
sampled at that time, and a token every vocabulary has) or as seconds with one decimal (`times: seconds`, for
tokenizers that hold digits).

Transcripts are cached on disk (`cache_dir`; default `$XDG_CACHE_HOME/unified/transcripts`, else
`~/.cache/unified/transcripts`), keyed by the file (absolute path, size, modification time) or the bytes, and
by the settings that change the words: a clip is transcribed once across runs and processes, and again when
the file or the back-end changes. Entries are written atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from unified.errors import ConfigError
from unified.media.audio import Samples, load_audio
from unified.media.member import Member

BACKENDS = ("pocketsphinx", "whisper")
TIMES = ("tokens", "seconds")
SAMPLING_RATE = 16000  # what both back-ends take
KEY_VERSION = 2  # raised when what a back-end returns for the same sound changes
_TOKEN = re.compile(r"<[^<>]*>")  # inline-token syntax: never let a heard word become a token
_UMASK = os.umask(0o022)  # read once, at import (setting it later would race other threads' files)
os.umask(_UMASK)


@dataclass(frozen=True)
class Word:
    text: str
    start: float  # seconds from the start of the clip
    end: float


@dataclass(frozen=True)
class Transcript:
    words: tuple[Word, ...]
    duration: float  # seconds of sound transcribed


@dataclass(frozen=True)
class SpeechSettings:
    backend: str
    model: str | None = None  # whisper: a local checkpoint directory; pocketsphinx: an acoustic model directory
    keywords: tuple[str, ...] | None = None  # pocketsphinx: the closed vocabulary each voiced segment is one of
    times: str = "tokens"  # how times are written in the prompt: "tokens" (<time_k>) or "seconds"
    cache_dir: str | None = None

    @classmethod
    def parse(cls, value: Any, field: str = "transcribe") -> SpeechSettings | None:
        """`None` (off), a back-end's name, or a mapping of these fields; anything else is a `ConfigError`."""
        if value is None:
            return None
        if isinstance(value, str):
            value = {"backend": value}
        if not isinstance(value, Mapping):
            raise ConfigError(field, value, f"expected null, a back-end name {BACKENDS} or a mapping")
        unknown = sorted(set(value) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"{field}.{unknown[0]}", value[unknown[0]],
                              f"not a transcribe field; fields: {sorted(cls.__dataclass_fields__)}")
        backend = value.get("backend")
        if backend not in BACKENDS:
            raise ConfigError(f"{field}.backend", backend, f"expected one of {BACKENDS}")
        if value.get("times", "tokens") not in TIMES:
            raise ConfigError(f"{field}.times", value["times"], f"expected one of {TIMES}")
        model = value.get("model")
        if backend == "whisper" and model is None:
            raise ConfigError(f"{field}.model", model, "the whisper back-end needs a local checkpoint directory")
        if model is not None and (not isinstance(model, (str, os.PathLike)) or not str(model).strip()):
            raise ConfigError(f"{field}.model", model, "expected a directory path")
        # the directory is checked when a recogniser is built (a saved model loads where it is absent)
        keywords = value.get("keywords")
        if keywords is not None:
            if backend != "pocketsphinx":
                raise ConfigError(f"{field}.keywords", keywords, "keywords are a pocketsphinx setting")
            if (isinstance(keywords, str) or not keywords
                    or not all(isinstance(k, str) and k.strip() for k in keywords)):
                raise ConfigError(f"{field}.keywords", keywords, "expected a non-empty list of words")
            keywords = tuple(k.strip().lower() for k in keywords)
        cache_dir = value.get("cache_dir")
        if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
            raise ConfigError(f"{field}.cache_dir", cache_dir, "expected a directory path")
        return cls(backend, None if model is None else str(model), keywords, value.get("times", "tokens"),
                   None if cache_dir is None else str(cache_dir))

    def words_key(self) -> dict[str, Any]:
        """What changes the words (not how they are written, nor where they are kept)."""
        model: Any = self.model
        if model is not None:  # a checkpoint's files rewritten in place transcribe anew
            folder = Path(model).resolve()
            files = sorted(folder.iterdir()) if folder.is_dir() else []
            model = [str(folder), *[(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]]
        return {"version": KEY_VERSION, "backend": self.backend, "model": model, "keywords": self.keywords}


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "unified" / "transcripts"


def has_sound(source: Any) -> bool:
    """Whether a video source is a file (or bytes, or a shard member) with an audio stream."""
    if isinstance(source, Member):
        source = source.read()
    if not isinstance(source, (str, os.PathLike, bytes)):
        return False  # frames in memory carry no sound
    try:
        opened = av.open(str(source) if not isinstance(source, bytes) else io.BytesIO(source), mode="r",
                         metadata_errors="ignore")
    except (av.FFmpegError, OSError):
        return False  # the video loader reports what is wrong with the file
    with opened as container:
        return bool(container.streams.audio)


def transcribe(source: Any, settings: SpeechSettings, recognize: Callable[[np.ndarray], list[Word]],
               max_seconds: float | None = None) -> Transcript:
    """The words said in `source` (anything `load_audio` takes; its first `max_seconds`), from the disk cache or
    from `recognize` (16 kHz float32 samples [N] -> words; `unified.media.recognizers.recognizer(settings)`).
    An entry that cannot be read is transcribed anew; a cache that cannot be written is passed over with a warning."""
    key = _cache_key(source, settings, max_seconds)
    path = Path(settings.cache_dir or default_cache_dir()) / f"{key}.json" if key else None
    if path is not None:
        try:
            stored = json.loads(path.read_text())
            return Transcript(tuple(Word(**w) for w in stored["words"]), float(stored["duration"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none yet, or a damaged or unreadable entry: transcribed anew and replaced
    samples = load_audio(source, sampling_rate=SAMPLING_RATE).numpy()
    if max_seconds is not None:
        samples = samples[: int(max_seconds * SAMPLING_RATE)]  # what the model hears of it
    duration = len(samples) / SAMPLING_RATE
    words = tuple(_clamped(recognize(samples), duration))
    transcript = Transcript(words, duration)
    if path is not None:
        try:
            _write_atomically(path, {"words": [asdict(w) for w in words], "duration": duration})
        except OSError as err:
            warnings.warn(f"transcript cache {path.parent} not written ({err}); transcribing without it",
                          stacklevel=2)
    return transcript


def _clamped(words: list[Word], duration: float) -> list[Word]:
    """Words with text, inside the clip, in time order (a back-end's times may run past the sound's end)."""
    kept = []
    for w in words:
        text = " ".join(_TOKEN.sub(" ", w.text).split())
        if text:
            start = min(max(float(w.start), 0.0), duration)
            kept.append(Word(text, start, min(max(float(w.end), start), duration)))
    return sorted(kept, key=lambda w: w.start)


def render(transcript: Transcript, times: str, time_token: Callable[[float], str]) -> str:
    """`speech: <time_3> banana <time_12> window` (times: tokens) or `speech: 0.5s banana 2.6s window`."""
    if not transcript.words:
        return ""
    stamp = time_token if times == "tokens" else (lambda t: f"{t:.1f}s")
    return "speech: " + " ".join(f"{stamp(w.start)} {w.text}" for w in transcript.words)


def _cache_key(source: Any, settings: SpeechSettings, max_seconds: float | None) -> str | None:
    if isinstance(source, Member):
        shard = Path(source.shard)
        what: Any = ["member", str(shard.resolve()), shard.stat().st_mtime_ns, source.offset, source.size]
    elif isinstance(source, (str, os.PathLike)):
        try:
            stat = os.stat(source)
        except OSError:
            return None  # the audio loader names the missing file
        what = ["file", str(Path(source).resolve()), stat.st_size, stat.st_mtime_ns]
    elif isinstance(source, bytes):
        what = ["bytes", hashlib.sha256(source).hexdigest()]
    elif isinstance(source, Samples):
        what = ["samples", source.rate, *_array_key(source.samples)]
    else:
        try:
            what = ["array", *_array_key(source)]
        except (TypeError, ValueError):
            return None
    text = json.dumps([what, max_seconds, settings.words_key()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _array_key(array: Any) -> list[Any]:
    values = np.ascontiguousarray(array.detach().cpu().numpy() if hasattr(array, "detach") else np.asarray(array))
    return [str(values.dtype), list(values.shape), hashlib.sha256(values).hexdigest()]


def _write_atomically(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(data, out)
        os.chmod(temporary, 0o666 & ~_UMASK)  # a shared cache stays readable (mkstemp makes it 0600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

"""`UnifiedProcessor`: one example (prompt with media placeholders, media, optional target) -> model-ready tensors.

Axis legend: B batch, L prompt tokens, Lt target tokens, M visual items, T frames, A audio items, F mel frames.

The prompt names where each media item goes with a placeholder token: ``<image>``, ``<video>`` or ``<audio>``.
The j-th ``<image>``/``<video>`` placeholder takes the j-th visual item (images and videos are popped from their own
lists in prompt order), the j-th ``<audio>`` placeholder the j-th audio item. A count mismatch is an `InputError`:
nothing given is silently dropped.

Media budgets: `budgets` maps a task to its own `image_size` (at most the processor's: frames are resized to it; a
batch holds one frame size), `video_fps`, `max_frames`, `num_frames`, `max_audio_seconds`, `max_length` and `fit`
(an example names its task under ``task``; the task zoo adds it). When a row's media exceed the budget, `fit:
"fit"` (the default) fits them, counted per task in `processor.fitted`: a video sampled at `video_fps` that would
give more than `max_frames` frames gets `max_frames` frames spread evenly (each keeps its true timestamp), audio
longer than `max_audio_seconds` is cut there. `fit: "error"` raises `InputError` instead. A prompt longer than
`max_length` always raises (text is never cut). `transcribe` turns speech into text: each audio item's and each
sounding video's transcript goes right after its placeholder (`unified.media.speech`). The budgets are saved with
the processor, so training, evaluation and `Model.generate` sample the same frames at the same times.

Example:
    >>> proc = UnifiedProcessor(tokenizer)
    >>> batch = proc([{"text": "<video> what moves first?", "video": "clip.mp4", "target": "the red square"}])
    >>> batch["pixel_values"].shape        # (B, M, T, 3, H, W)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unified.errors import ConfigError, InputError
from unified.media import Samples, Video, load_audio, load_image, load_video, log_mel
from unified.media.cache import MediaCache
from unified.media.recognizers import recognizer
from unified.media.speech import SpeechSettings, has_sound, render, transcribe
from unified.media.video import sample_times
from unified.tokenizers import UnifiedTokenizer, time_to_token
from unified.tokenizers.backbone import load_tokenizer

PROCESSOR_CONFIG = "processor_config.json"
_MEDIA_KEYS = ("image", "video", "audio")
BUDGET_FIELDS = ("image_size", "video_fps", "max_frames", "num_frames", "max_audio_seconds", "max_length", "fit",
                 "transcribe")
FITS = ("fit", "error")


@dataclass
class ProcessorConfig:
    image_size: int = 224  # frames are resized to a square, as OFA; boxes are relative so stay valid
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    video_fps: float | None = 1.0  # Apollo: fps sampling beats uniform sampling
    max_frames: int = 32
    num_frames: int | None = None  # set with video_fps=None for uniform sampling
    sampling_rate: int = 16000
    n_mels: int = 80
    max_audio_seconds: float = 30.0
    max_length: int | None = None  # prompt tokens; longer prompts raise instead of being cut
    fit: str = "fit"  # media over budget: "fit" (frames spread evenly, audio cut; counted) or "error"
    # speech as text: the transcript of each audio item and sounding video after its placeholder (media/speech.py)
    transcribe: str | dict | None = None
    budgets: dict = field(default_factory=dict)  # task -> its own BUDGET_FIELDS (see the module docstring)

    def validate(self) -> ProcessorConfig:
        if self.fit not in FITS:
            raise ConfigError("fit", self.fit, f"expected one of {FITS}")
        if not isinstance(self.budgets, Mapping):
            raise ConfigError("budgets", self.budgets, "expected {task: {field: value}}")
        for task, budget in self.budgets.items():
            if not isinstance(budget, Mapping):
                raise ConfigError(f"budgets.{task}", budget, f"expected a mapping of {BUDGET_FIELDS}")
            unknown = sorted(set(budget) - set(BUDGET_FIELDS))
            if unknown:
                raise ConfigError(f"budgets.{task}.{unknown[0]}", budget[unknown[0]],
                                  f"not a budget field; budget fields: {BUDGET_FIELDS}")
            try:
                replace(self, **budget, budgets={}).validate()
            except ConfigError as err:
                raise ConfigError(f"budgets.{task}.{err.field}", err.value, err.reason) from None
            if budget.get("image_size", 0) > self.image_size:
                raise ConfigError(f"budgets.{task}.image_size", budget["image_size"],
                                  f"larger than the processor's image_size={self.image_size} (the model's frame size)")
        for name, value, ok, expected in self._ranges():
            if not ok(value):
                raise ConfigError(name, value, expected)
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ConfigError("image_std", self.image_std, "expected three positive numbers (and three means)")
        if self.video_fps is None and not self.num_frames:
            raise ConfigError("num_frames", self.num_frames, "required (>= 1) when video_fps is None")
        SpeechSettings.parse(self.transcribe)
        return self

    def _ranges(self) -> list[tuple[str, Any, Any, str]]:
        """(field, value, test, what is expected) for every number: a negative frame count or a fps of 0 is refused
        when the config is made, not at the first batch."""
        def count(x):
            return isinstance(x, int) and not isinstance(x, bool) and x >= 1

        def positive(x):
            return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0

        return [
            ("image_size", self.image_size, count, "expected pixels, an int >= 1"),
            ("video_fps", self.video_fps, lambda x: x is None or positive(x),
             "expected frames per second > 0, or None (uniform sampling)"),
            ("max_frames", self.max_frames, count, "expected frames, an int >= 1"),
            ("num_frames", self.num_frames, lambda x: x is None or count(x), "expected frames, an int >= 1, or None"),
            ("sampling_rate", self.sampling_rate, count, "expected samples per second, an int >= 1"),
            ("n_mels", self.n_mels, count, "expected mel bands, an int >= 1"),
            ("max_audio_seconds", self.max_audio_seconds, positive, "expected seconds > 0"),
            ("max_length", self.max_length, lambda x: x is None or count(x),
             "expected prompt tokens, an int >= 1, or None (no limit)"),
        ]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessorConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], data[unknown[0]], f"unknown processor field; known: {sorted(known)}")
        values = dict(data)
        for key in ("image_mean", "image_std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values).validate()


class UnifiedProcessor:
    """Turns examples into model inputs and collates batches (padding, masks, labels padded with -100).

    An example is a mapping with ``text`` (the prompt, with placeholders), optional ``image``/``video``/``audio``
    (one source or a list, in prompt order; anything the loaders accept, or an already loaded `Video`) and optional
    ``target`` (the text the decoder must produce).
    """

    def __init__(self, tokenizer: UnifiedTokenizer, config: ProcessorConfig | None = None, **overrides: Any):
        base = asdict(config) if config is not None else {}
        self.config = ProcessorConfig.from_dict({**base, **overrides})
        self.tokenizer = tokenizer
        self.media_cache: MediaCache | None = None  # `cache_media(max_bytes)`; not part of the saved config
        self.fitted: Counter[str] = Counter()  # "task: frames" / "task: audio" -> media items fitted to a budget

    def cache_media(self, max_bytes: int) -> UnifiedProcessor:
        """Keep decoded media files in memory (`unified.media.cache.MediaCache`), up to `max_bytes`."""
        self.media_cache = MediaCache(max_bytes)
        return self

    def _load(self, kind: str, source: Any, settings: tuple, load):
        return load() if self.media_cache is None else self.media_cache.get(kind, source, settings, load)

    def settings(self, task: str | None = None) -> ProcessorConfig:
        """The processor's settings with `task`'s budget applied (no budget: the processor's own)."""
        budget = self.config.budgets.get(task) if task is not None else None
        return replace(self.config, **budget) if budget else self.config

    # ---------------------------------------------------------------- one example
    def process(self, example: Mapping[str, Any]) -> dict[str, Any]:
        """One example -> unpadded tensors (see `collate`)."""
        if not isinstance(example, Mapping):
            raise InputError("example", example, "expected a mapping with 'text' and optional media and 'target'")
        unknown = sorted(set(example) - {"text", "target", "task", *_MEDIA_KEYS})
        if unknown:
            raise InputError("example", unknown, "unknown keys; expected text, target, task, image, video, audio")
        text = example.get("text")
        if not isinstance(text, str):
            raise InputError("text", text, "expected the prompt as a str")
        task = example.get("task")
        c = self.settings(task)
        ids = self.tokenizer.encode(text)
        if c.max_length is not None and len(ids) > c.max_length:
            raise InputError("text", text, f"{len(ids)} tokens exceed max_length={c.max_length}"
                             + (f" (task {task!r})" if task else ""))
        tok = self.tokenizer
        visual_slots = [i for i in ids if i in (tok.image_token_id, tok.video_token_id)]
        n_audio = sum(1 for i in ids if i == tok.audio_token_id)
        images, videos, audios = (_as_list(example.get(key)) for key in _MEDIA_KEYS)
        n_img = sum(1 for i in visual_slots if i == tok.image_token_id)
        for key, given, wanted in (("image", images, n_img), ("video", videos, len(visual_slots) - n_img),
                                   ("audio", audios, n_audio)):
            if len(given) != wanted:
                raise InputError(key, f"{len(given)} item(s)",
                                 f"the prompt has {wanted} <{key}> placeholder(s); give exactly one {key} per "
                                 "placeholder")
        frames, times, time_ids, sounding = [], [], [], []  # sounding: (video source, duration) in prompt order
        img_iter, vid_iter = iter(images), iter(videos)
        for slot in visual_slots:
            if slot == tok.image_token_id:
                source = next(img_iter)
                clip = self._load("image", source, (), lambda s=source: load_image(s))[None]  # (1, H, W, 3)
                stamp, duration = torch.zeros(1), 1.0
            else:
                source = next(vid_iter)
                video = self.video(source, task)
                clip, stamp, duration = video.frames, video.timestamps, max(video.duration, 1e-6)
                sounding.append((source, duration))
            frames.append(self._pixels(clip, c.image_size))
            times.append(stamp.float())
            time_ids.append(torch.tensor([tok.token_to_id(self._time_token(float(t), duration)) for t in stamp]))
        mels = [self._mel(source, task) for source in audios]
        speech = SpeechSettings.parse(c.transcribe)
        if speech is not None:
            ids = self._with_transcripts(ids, speech, sounding, audios, c)
            if c.max_length is not None and len(ids) > c.max_length:
                raise InputError("text", text, f"{len(ids)} tokens with the transcripts exceed max_length="
                                 f"{c.max_length}" + (f" (task {task!r})" if task else ""))
        out: dict[str, Any] = {"input_ids": torch.tensor(ids), "pixel_values": frames, "frame_times": times,
                               "frame_time_ids": time_ids, "audio_features": mels}
        target = example.get("target")
        if target is not None:
            if not isinstance(target, str):
                raise InputError("target", target, "expected the target text as a str")
            out["labels"] = torch.tensor(tok.encode(target, add_eos=True))
        return out

    def _with_transcripts(self, ids: list[int], speech: SpeechSettings, videos: list[tuple[Any, float]],
                          audios: list[Any], c: ProcessorConfig) -> list[int]:
        """`ids` with each sounding item's transcript after its placeholder; times relative to that item's clip.
        An audio item is transcribed as the model hears it: its first max_audio_seconds, arrays at the processor's
        sampling_rate. A video's whole sound track is (the frames span the whole clip)."""
        tok = self.tokenizer
        recognize = lambda samples: recognizer(speech)(samples)  # noqa: E731 (built on the first clip not cached)
        videos_left, audios_left = iter(videos), iter(audios)
        out: list[int] = []
        for i in ids:
            out.append(i)
            transcript, duration = None, 1.0
            if i == tok.video_token_id:
                source, duration = next(videos_left)
                if has_sound(source):
                    transcript = transcribe(source, speech, recognize)
            elif i == tok.audio_token_id:
                source = next(audios_left)
                if isinstance(source, (torch.Tensor, np.ndarray)):  # samples at the processor's rate, as _mel reads
                    source = Samples(source, c.sampling_rate)
                transcript = transcribe(source, speech, recognize, max_seconds=c.max_audio_seconds)
                duration = max(transcript.duration, 1e-6)
            if transcript is not None:
                text = render(transcript, speech.times, lambda t, d=duration: self._time_token(t, d))
                out += tok.encode(text) if text else []
        return out

    def _time_token(self, seconds: float, duration: float) -> str:
        """The time token of `seconds` into a clip of `duration`: a sampled frame's and a heard word's alike."""
        return time_to_token(min(seconds, duration), duration, num_bins=len(self.tokenizer.time_ids))

    # ---------------------------------------------------------------- media as the model sees them
    def video(self, source: Any, task: str | None = None) -> Video:
        """A video source sampled as this processor samples it for `task` (its fps or frame count, its frame
        cap); more frames than the cap are spread evenly and counted, or raise under `fit: "error"`."""
        if isinstance(source, Video):
            return source
        c = self.settings(task)
        size = c.image_size  # frames scaled while decoding: a 720p frame is never materialised
        if c.video_fps is None:
            return self._load("video", source, (None, c.num_frames, size),
                              lambda: load_video(source, fps=None, num_frames=c.num_frames, size=size))
        video = self._load("video", source, (c.video_fps, c.max_frames, size),
                           lambda: load_video(source, fps=c.video_fps, max_frames=c.max_frames, size=size))
        wanted = len(sample_times(video.duration, fps=c.video_fps, max_frames=10**9))
        if wanted > c.max_frames:
            if c.fit == "error":
                raise InputError("video", source, f"{wanted} frames at {c.video_fps:g} fps exceed max_frames="
                                 f"{c.max_frames}" + (f" of task {task!r}" if task else "") +
                                 " (fit: error); raise the budget, or fit: fit to spread the frames evenly")
            self.fitted[f"{task or '-'}: frames"] += 1
        return video

    def frame_size(self, source: Any, modality: str) -> tuple[int, int]:
        """(width, height) in pixels of an image, or of a video's frames, as stored (before resizing)."""
        if modality == "video":
            return self.video(source).size
        h, w = self._load("image", source, (), lambda: load_image(source)).shape[:2]
        return int(w), int(h)

    def duration(self, source: Any) -> float:
        """Seconds a video lasts (the whole stream, not only the sampled part)."""
        return float(self.video(source).duration)

    def _pixels(self, frames: torch.Tensor, size: int | None = None) -> torch.Tensor:
        # (T, H, W, 3) uint8 -> (T, 3, S, S) normalised float, S = `size` (default: the processor's image_size)
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        size = size or self.config.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        mean = torch.tensor(self.config.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.config.image_std).view(1, 3, 1, 1)
        return (x - mean) / std

    def _mel(self, source: Any, task: str | None = None) -> torch.Tensor:
        c = self.settings(task)
        wave = self._load("audio", source, (c.sampling_rate,),
                          lambda: load_audio(source, sampling_rate=c.sampling_rate))
        limit = int(c.max_audio_seconds * c.sampling_rate)
        if wave.numel() > limit:
            if c.fit == "error":
                raise InputError("audio", source, f"{wave.numel() / c.sampling_rate:.1f} s is longer than "
                                 f"max_audio_seconds={c.max_audio_seconds}" + (f" of task {task!r}" if task else "")
                                 + " (fit: error); raise the limit or cut the clip")
            wave = wave[:limit]  # the first max_audio_seconds, counted
            self.fitted[f"{task or '-'}: audio"] += 1
        return log_mel(wave, sampling_rate=c.sampling_rate, n_mels=c.n_mels)  # (n_mels, F)

    # ---------------------------------------------------------------- batches
    def collate(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad processed examples into one batch.

        Returns input_ids/attention_mask (B, L); pixel_values (B, M, T, 3, S, S) with pixel_mask, frame_times and
        frame_time_ids (B, M, T); audio_features (B, A, n_mels, F) with audio_mask (B, A, F); labels (B, Lt) padded
        with -100. Media keys are present only when some example has media of that kind; packed items add
        segment_ids (B, L) and decoder_segment_ids (B, Lt), 0 on padding.
        """
        if not items:
            raise InputError("batch", items, "expected at least one example")
        pad = self.tokenizer.pad_token_id
        batch: dict[str, torch.Tensor] = {}
        batch["input_ids"], batch["attention_mask"] = _pad_1d([it["input_ids"] for it in items], pad)
        if any("labels" in it for it in items):
            if not all("labels" in it for it in items):
                raise InputError("target", "missing in some examples", "give a target for every example or none")
            batch["labels"], _ = _pad_1d([it["labels"] for it in items], -100)
        if any("segment_ids" in it for it in items):  # packed examples (`unified.training.packing.pack_items`)
            for key in ("segment_ids", "decoder_segment_ids"):
                batch[key], _ = _pad_1d([it[key] for it in items], 0)
        n_vis = max(len(it["pixel_values"]) for it in items)
        if n_vis:
            n_frames = max(clip.shape[0] for it in items for clip in it["pixel_values"])
            sizes = {clip.shape[-1] for it in items for clip in it["pixel_values"]}
            if len(sizes) > 1:
                raise InputError("batch", sorted(sizes), "one batch holds one frame size; examples of tasks whose "
                                 "budgets set different image_size cannot share a batch")
            size = sizes.pop()
            pixels = torch.zeros(len(items), n_vis, n_frames, 3, size, size)
            mask = torch.zeros(len(items), n_vis, n_frames, dtype=torch.bool)
            times = torch.zeros(len(items), n_vis, n_frames)
            time_ids = torch.full((len(items), n_vis, n_frames), pad, dtype=torch.long)
            for b, it in enumerate(items):
                for m, (clip, t, tid) in enumerate(zip(it["pixel_values"], it["frame_times"], it["frame_time_ids"])):
                    pixels[b, m, : len(clip)] = clip
                    mask[b, m, : len(clip)] = True
                    times[b, m, : len(t)] = t
                    time_ids[b, m, : len(tid)] = tid
            batch.update(pixel_values=pixels, pixel_mask=mask, frame_times=times, frame_time_ids=time_ids)
        n_aud = max(len(it["audio_features"]) for it in items)
        if n_aud:
            n_mel_frames = max(mel.shape[-1] for it in items for mel in it["audio_features"])
            feats = torch.zeros(len(items), n_aud, self.config.n_mels, n_mel_frames)
            amask = torch.zeros(len(items), n_aud, n_mel_frames, dtype=torch.bool)
            for b, it in enumerate(items):
                for a, mel in enumerate(it["audio_features"]):
                    feats[b, a, :, : mel.shape[-1]] = mel
                    amask[b, a, : mel.shape[-1]] = True
            batch.update(audio_features=feats, audio_mask=amask)
        return batch

    def __call__(self, examples: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Process one example or a list of them and collate into a batch."""
        if isinstance(examples, Mapping):
            examples = [examples]
        return self.collate([self.process(ex) for ex in examples])

    # ---------------------------------------------------------------- persistence
    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        (directory / PROCESSOR_CONFIG).write_text(json.dumps(asdict(self.config), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> UnifiedProcessor:
        path = Path(directory) / PROCESSOR_CONFIG
        if not path.is_file():
            raise InputError("processor directory", str(directory), f"no {PROCESSOR_CONFIG} found there")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(str(path), "<json>", f"not valid JSON ({err.msg} at line {err.lineno})") from None
        if isinstance(data, dict):
            data.pop("auto_map", None)  # transformers' AutoProcessor entry (unified.hub), not a setting

        return cls(load_tokenizer(directory), ProcessorConfig.from_dict(data))


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _pad_1d(seqs: Sequence[torch.Tensor], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Right padding: the model's RoPE positions then start at 0 for every example.
    length = max(len(s) for s in seqs)
    out = torch.full((len(seqs), length), value, dtype=torch.long)
    mask = torch.zeros(len(seqs), length, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return out, mask

"""The speech recognisers behind `unified.media.speech`: 16 kHz float32 samples [N] in, `Word`s with times out.

One recogniser per back-end, checkpoint and keywords in a process, built on first use and used by one thread at a
time; a forked DataLoader worker builds its own.

    pocketsphinx   free decoding with the bundled English model; or, with keywords, PocketSphinx's voice
                   activity segmenter cuts the sound into voiced segments and each is decoded against a grammar
                   of exactly one keyword: a segment becomes that keyword at the segment's start, or nothing.
                   (PocketSphinx's own keyword-spotting search, tried on espeak-ng speech, either missed the
                   words or fired on silence at every threshold from 1e-40 to 1e-5: measured in
                   docs/media.md.)
    whisper        transformers' "automatic-speech-recognition" pipeline over a local checkpoint, 30 s chunks,
                   `return_timestamps="word"`.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

from unified.errors import ConfigError
from unified.media.speech import SAMPLING_RATE, SpeechSettings, Word

_FILLERS = {"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]", "[BREATH]", "[COUGH]", "[UH]", "[UM]"}
_FRAME_RATE = 100  # PocketSphinx frames per second


def recognizer(settings: SpeechSettings) -> Callable[[np.ndarray], list[Word]]:
    """The process's recogniser for what changes the words (not `times` nor `cache_dir`)."""
    return _built(settings.backend, settings.model, settings.keywords)


@cache
def _built(backend: str, model: str | None, keywords: tuple[str, ...] | None):
    if model is not None and not Path(model).is_dir():
        raise ConfigError("transcribe.model", model, "not a directory")
    settings = SpeechSettings(backend, model, keywords)
    return PocketSphinx(settings) if backend == "pocketsphinx" else WhisperPipeline(settings)


os.register_at_fork(after_in_child=_built.cache_clear)  # a forked worker builds its own (Whisper holds torch threads)


def _pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


class PocketSphinx:
    def __init__(self, settings: SpeechSettings):
        try:
            import pocketsphinx
        except ImportError as err:
            raise ConfigError("transcribe.backend", "pocketsphinx",
                              "needs the pocketsphinx package: pip install 'unified[speech]'") from err
        self._segmenter = pocketsphinx.Segmenter
        options = {"samprate": SAMPLING_RATE, "loglevel": "ERROR"}
        if settings.model is not None:
            options["hmm"] = settings.model
        self.decoder = pocketsphinx.Decoder(**options)
        self.lock = threading.Lock()  # one decoder, one utterance at a time (the server prepares rows in threads)
        self.keywords = settings.keywords
        if self.keywords:
            unknown = [w for k in self.keywords for w in k.split() if self.decoder.lookup_word(w) is None]
            if unknown:
                raise ConfigError("transcribe.keywords", unknown[0], "not in the recogniser's pronunciation dictionary")
            grammar = "#JSGF V1.0;\ngrammar keywords;\npublic <keyword> = ( " + " | ".join(self.keywords) + " );\n"
            self.decoder.add_jsgf_string("keywords", grammar)
            self.decoder.activate_search("keywords")

    def __call__(self, samples: np.ndarray) -> list[Word]:
        pcm = _pcm16(samples)
        with self.lock:
            if not self.keywords:
                return self._decode(pcm, offset=0.0)
            words = []
            for segment in self._segmenter(sample_rate=SAMPLING_RATE).segment(io.BytesIO(pcm)):
                found = self._decode(segment.pcm, offset=segment.start_time)
                if found:  # one keyword per voiced segment, its words as one ("red square")
                    words.append(Word(" ".join(w.text for w in found), found[0].start, found[-1].end))
            return words

    def _decode(self, pcm: bytes, offset: float) -> list[Word]:
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        if self.decoder.hyp() is None:
            return []
        words = []
        for seg in self.decoder.seg():
            text = re.sub(r"\(\d+\)$", "", seg.word.strip())  # "on(2)": the dictionary's second pronunciation
            if text and text not in _FILLERS:
                words.append(Word(text, offset + seg.start_frame / _FRAME_RATE, offset + seg.end_frame / _FRAME_RATE))
        return words


class WhisperPipeline:
    def __init__(self, settings: SpeechSettings):
        from transformers import pipeline

        model = str(Path(settings.model))
        self.pipe = pipeline("automatic-speech-recognition", model=model, device="cpu", chunk_length_s=30)
        self.lock = threading.Lock()

    def __call__(self, samples: np.ndarray) -> list[Word]:
        with self.lock:
            out = self.pipe({"raw": samples, "sampling_rate": SAMPLING_RATE}, return_timestamps="word")
        words = []
        for chunk in out.get("chunks", []):
            start, end = chunk["timestamp"]
            if start is not None:
                words.append(Word(chunk["text"], float(start), float(end if end is not None else start)))
        return words

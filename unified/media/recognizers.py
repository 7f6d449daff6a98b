"""The speech recognisers behind `unified.media.speech`: 16 kHz float32 samples [N] in, `Word`s with times out.

One recogniser per settings and process, built on first use (DataLoader workers each build their own).

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
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

from unified.errors import ConfigError
from unified.media.speech import SAMPLING_RATE, SpeechSettings, Word

_FILLERS = {"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]", "[BREATH]", "[COUGH]", "[UH]", "[UM]"}
_FRAME_RATE = 100  # PocketSphinx frames per second


@cache
def recognizer(settings: SpeechSettings) -> Callable[[np.ndarray], list[Word]]:
    if settings.backend == "pocketsphinx":
        return PocketSphinx(settings)
    return WhisperPipeline(settings)


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
        if not self.keywords:
            return self._decode(pcm, offset=0.0)
        words = []
        for segment in self._segmenter(sample_rate=SAMPLING_RATE).segment(io.BytesIO(pcm)):
            words += self._decode(segment.pcm, offset=segment.start_time)[:1]  # one keyword per voiced segment
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

    def __call__(self, samples: np.ndarray) -> list[Word]:
        out = self.pipe({"raw": samples, "sampling_rate": SAMPLING_RATE}, return_timestamps="word")
        words = []
        for chunk in out.get("chunks", []):
            start, end = chunk["timestamp"]
            if start is not None:
                words.append(Word(chunk["text"], float(start), float(end if end is not None else start)))
        return words

"""Speech as text against the truth: espeak-ng says known words at known times; PocketSphinx (with the keywords)
must find them there, the processor must put them after their placeholder at their time tokens, and the disk cache
must transcribe a clip once. Whisper is checked for its plumbing on a tiny random checkpoint against the
transformers pipeline called directly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from media_fixtures import speak, write_index_video

from unified.errors import ConfigError
from unified.media.recognizers import PocketSphinx, WhisperPipeline, recognizer
from unified.media.speech import SpeechSettings, Transcript, Word, has_sound, render, transcribe
from unified.tokenizers.times import time_to_token

pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (make test installs it: extra 'speech')")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (the Makefile installs it with apt where it can)")

KEYWORDS = ["banana", "green", "window", "yellow", "circle"]
SAID = [("banana", 0.5), ("window", 2.5), ("yellow", 4.5)]  # word, second it starts being said


def _counting(settings):
    calls = []

    def recognize(samples):
        calls.append(len(samples))
        return recognizer(settings)(samples)
    return recognize, calls


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return speak(SAID, 6.0)


@needs_espeak
def test_keywords_are_found_at_the_times_they_are_said(speech, tmp_path):
    """Each word within 0.35 s after it starts (espeak-ng opens every word with a short silence), nothing else."""
    settings = SpeechSettings.parse({"backend": "pocketsphinx", "keywords": KEYWORDS, "cache_dir": str(tmp_path)})
    transcript = transcribe(speech, settings, recognizer(settings))
    assert [w.text for w in transcript.words] == [w for w, _ in SAID]
    for word, (_, start) in zip(transcript.words, SAID, strict=True):
        assert start - 0.05 <= word.start <= start + 0.35 and word.end > word.start
    assert transcript.duration == pytest.approx(6.0)


@needs_espeak
def test_a_clip_is_transcribed_once_and_again_when_it_changes(speech, tmp_path):
    settings = SpeechSettings.parse({"backend": "pocketsphinx", "keywords": KEYWORDS,
                                     "cache_dir": str(tmp_path / "cache")})
    clip = write_index_video(tmp_path / "said.mp4", 60, 10, audio_samples=speech, audio_rate=16000)
    recognize, calls = _counting(settings)
    first = transcribe(clip, settings, recognize)
    again = transcribe(clip, settings, recognize)
    assert first == again and [w.text for w in first.words] == [w for w, _ in SAID] and len(calls) == 1
    entries = list((tmp_path / "cache").glob("*.json"))
    assert len(entries) == 1 and not list((tmp_path / "cache").glob(".*"))  # no temporary file left
    other = SpeechSettings.parse({"backend": "pocketsphinx", "keywords": ["banana"],
                                  "cache_dir": str(tmp_path / "cache")})
    transcribe(clip, other, _counting(other)[0])  # other keywords: other words, another entry
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    entries[0].write_text("{not json")  # a damaged entry is transcribed anew and replaced
    assert transcribe(clip, settings, recognize) == first and len(calls) == 2
    assert json.loads(entries[0].read_text())["words"][0]["text"] == "banana"
    write_index_video(clip, 60, 10, audio_samples=speak(SAID[:1], 6.0), audio_rate=16000)  # rewritten in place
    assert [w.text for w in transcribe(clip, settings, recognize).words] == ["banana"] and len(calls) == 3


@needs_espeak
def test_the_processor_puts_each_transcript_after_its_placeholder_at_time_tokens(speech, tmp_path):
    """A row with a sounding video and an audio item, under a task whose budget sets `transcribe`: the prompt's ids
    are the prompt with `speech: <time_k> word ...` after each placeholder, each time token within one bin of
    the time the word is said (in the clip's own time, as the frames' time tokens)."""
    from unified import Model

    model = Model.from_pretrained("unified/default_model")
    processor = model.processor
    tok = processor.tokenizer
    processor.config.budgets["vqa"] = {"transcribe": {"backend": "pocketsphinx", "keywords": KEYWORDS,
                                                      "cache_dir": str(tmp_path / "cache")}}
    processor.config.validate()
    clip = write_index_video(tmp_path / "said.mp4", 60, 10, audio_samples=speech, audio_rate=16000)
    silent = write_index_video(tmp_path / "silent.mp4", 20, 10)
    picture = np.zeros((32, 32, 3), np.uint8)  # an image between the videos takes no transcript and no video's
    row = {"text": "<video> <image> <video> <audio> what is said?", "video": [clip, silent], "image": picture,
           "audio": speak([("green", 0.3)], 1.5), "task": "vqa"}
    ids = processor.process(row)["input_ids"].tolist()
    plain = processor.process({**row, "task": "caption"})["input_ids"].tolist()
    bins = len(tok.time_ids)
    after_clip = ids[1:ids.index(tok.image_token_id)]
    text = tok.decode(after_clip, skip_special_tokens=False)
    assert text.split()[0] == "speech:" and [w for w in text.split() if not w.startswith("<")][1:] == \
        [w for w, _ in SAID]
    stamps = [tok.id_to_token(i) for i in after_clip if i in tok.time_ids]
    for stamp, (_, start) in zip(stamps, SAID, strict=True):
        truth = [time_to_token(t, 6.0, num_bins=bins) for t in (start, start + 0.35)]
        low, high = (int(s.strip("<>").split("_")[1]) for s in truth)
        assert low <= int(stamp.strip("<>").split("_")[1]) <= high + 1
    # the silent video gets nothing; the audio item gets its word; the rest of the prompt is unchanged
    image, audio = ids.index(tok.image_token_id), ids.index(tok.audio_token_id)
    plain_image, plain_audio = plain.index(tok.image_token_id), plain.index(tok.audio_token_id)
    assert ids[image:audio] == plain[plain_image:plain_audio]  # the image, the silent video: nothing added
    assert tok.decode(ids[audio + 1:], skip_special_tokens=False).split()[:3][::2] == ["speech:", "green"]
    media = (tok.video_token_id, tok.image_token_id, tok.audio_token_id)
    assert [i for i in ids if i in media] == [i for i in plain if i in media]
    assert tok.decode(ids[-6:]) == tok.decode(plain[-6:])
    assert has_sound(clip) and not has_sound(silent)


@needs_espeak
def test_a_keyword_of_two_words_is_one_word_and_audio_is_heard_as_cut(tmp_path):
    """A keyword phrase comes back whole at the time its first word starts; an audio item is transcribed as far as
    the model hears it (max_audio_seconds), an array at the processor's sampling rate."""
    settings = SpeechSettings.parse({"backend": "pocketsphinx", "keywords": ["red square", "banana"],
                                     "cache_dir": str(tmp_path)})
    sound = speak([("red square", 0.4), ("banana", 2.4)], 3.5)
    words = transcribe(sound, settings, recognizer(settings)).words
    assert [w.text for w in words] == ["red square", "banana"] and 0.35 <= words[0].start <= 0.75
    cut = transcribe(sound, settings, recognizer(settings), max_seconds=2.0)
    assert [w.text for w in cut.words] == ["red square"] and cut.duration == pytest.approx(2.0)
    from unified import Model

    processor = Model.from_pretrained("unified/default_model").processor
    processor.config.budgets["vqa"] = {"transcribe": {"backend": "pocketsphinx", "keywords": ["red square", "banana"],
                                                      "cache_dir": str(tmp_path)}, "max_audio_seconds": 2.0}
    said = processor.tokenizer.decode(processor.process({"text": "<audio> what is said?", "audio": sound,
                                                         "task": "vqa"})["input_ids"].tolist())
    assert "red square" in said and "banana" not in said


def test_heard_words_never_become_tokens_and_an_unwritable_cache_is_passed_over(tmp_path):
    (tmp_path / "file").write_text("")
    settings = SpeechSettings.parse({"backend": "pocketsphinx", "cache_dir": str(tmp_path / "file" / "cache")})
    heard = [Word("<image> hello</s>", 0.2, 0.4), Word("  ", 0.1, 0.2), Word("late", 9.0, 9.5)]
    with pytest.warns(UserWarning, match="not written"):
        transcript = transcribe(np.zeros(16000, np.float32), settings, lambda samples: heard)
    assert transcript.words == (Word("hello", 0.2, 0.4), Word("late", 1.0, 1.0))  # inside the 1 s clip


def test_a_saved_whisper_setting_loads_where_its_checkpoint_is_absent_and_fails_when_used(tmp_path):
    from unified.processing import ProcessorConfig

    config = ProcessorConfig.from_dict({"budgets": {"vqa": {"transcribe": {"backend": "whisper",
                                                                           "model": str(tmp_path / "gone")}}}})
    settings = SpeechSettings.parse(config.budgets["vqa"]["transcribe"])
    with pytest.raises(ConfigError, match="not a directory"):
        recognizer(settings)


def test_packing_to_a_token_budget_is_refused_with_transcripts():
    from unified.training import load_config

    with pytest.raises(ConfigError) as caught:
        load_config(None, ["data.pack=true", "data.pack_length=128", "data.synthetic={n_train: 4, n_eval: 0}",
                           "budgets={vqa: {transcribe: pocketsphinx}}", "data.tasks=[vqa]"])
    assert caught.value.field == "data.pack_length"


def test_render_writes_time_tokens_or_seconds():
    transcript = Transcript((Word("banana", 0.7, 1.0), Word("window", 2.54, 3.0)), 6.0)  # bins at 0, 1, ..., 6 s
    assert render(transcript, "seconds", str) == "speech: 0.7s banana 2.5s window"
    assert render(transcript, "tokens", lambda t: time_to_token(t, 6.0, num_bins=7)) == \
        "speech: <time_1> banana <time_3> window"
    assert render(Transcript((), 1.0), "tokens", str) == ""


@pytest.mark.parametrize("value, field", [
    ("kaldi", "transcribe.backend"),
    ({"backend": "whisper"}, "transcribe.model"),
    ({"backend": "pocketsphinx", "keywords": "banana"}, "transcribe.keywords"),
    ({"backend": "pocketsphinx", "times": "frames"}, "transcribe.times"),
    ({"backend": "pocketsphinx", "language": "fr"}, "transcribe.language"),
    (3, "transcribe"),
])
def test_bad_settings_name_the_field(value, field):
    with pytest.raises(ConfigError) as caught:
        SpeechSettings.parse(value)
    assert caught.value.field == field


def test_a_keyword_the_recogniser_cannot_say_is_refused_by_name():
    with pytest.raises(ConfigError, match="pronunciation dictionary") as caught:
        PocketSphinx(SpeechSettings.parse({"backend": "pocketsphinx", "keywords": ["banana", "qzxv"]}))
    assert caught.value.value == "qzxv"


def test_a_budget_with_a_bad_transcribe_names_the_task():
    from unified.processing import ProcessorConfig

    with pytest.raises(ConfigError) as caught:
        ProcessorConfig(budgets={"vqa": {"transcribe": {"backend": "whisper"}}}).validate()
    assert caught.value.field == "budgets.vqa.transcribe.model"


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A random Whisper with a byte-level vocabulary and Whisper's special and timestamp tokens, saved locally."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    root = tmp_path_factory.mktemp("whisper")
    (root / "vocab.json").write_text(json.dumps({ch: i for i, ch in enumerate(bytes_to_unicode().values())}))
    (root / "merges.txt").write_text("#version: 0.2\n")
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
                "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
    tok = WhisperTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), unk_token=specials[0],
                           bos_token=specials[0], eos_token=specials[0], pad_token=specials[0])
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(1501)])
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    end, start = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, num_mel_bins=80, max_target_positions=64, pad_token_id=end,
                           bos_token_id=end, eos_token_id=end, decoder_start_token_id=start)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start, eos_token_id=end, pad_token_id=end, max_length=24,
        no_timestamps_token_id=ids["<|notimestamps|>"], alignment_heads=[[0, 0], [0, 1]], is_multilingual=False,
        begin_suppress_tokens=[], suppress_tokens=[], max_initial_timestamp_index=50)
    model.save_pretrained(root)
    tok.save_pretrained(root)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(root)
    return root


@pytest.mark.slow
def test_whisper_words_are_the_pipelines_words_inside_the_clip(tiny_whisper, tmp_path):
    """Random weights say nothing real: the words must be what transformers' pipeline gives for the same samples
    (word timestamps), trimmed of empty text and kept inside the clip's duration; the cache keys on the checkpoint's
    files, so one rewritten in place transcribes anew."""
    from transformers import pipeline

    settings = SpeechSettings.parse({"backend": "whisper", "model": str(tiny_whisper), "cache_dir": str(tmp_path)})
    assert isinstance(recognizer(settings), WhisperPipeline)
    samples = np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32) * 0.1
    transcript = transcribe(samples, settings, recognizer(settings))
    direct = pipeline("automatic-speech-recognition", model=str(tiny_whisper), device="cpu", chunk_length_s=30)(
        {"raw": samples, "sampling_rate": 16000}, return_timestamps="word")
    expected = [(c["text"].strip(), min(c["timestamp"][0], 3.0)) for c in direct["chunks"] if c["text"].strip()]
    assert [(w.text, w.start) for w in transcript.words] == sorted(expected, key=lambda e: e[1])
    assert len(transcript.words) >= 3 and all(0 <= w.start <= w.end <= 3.0 for w in transcript.words)
    assert transcript.duration == 3.0
    assert len(list(tmp_path.glob("*.json"))) == 1
    calls = []
    transcribe(samples, settings, lambda x: calls.append(1) or [])
    assert calls == []  # cached
    weights = next(tiny_whisper.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes())  # the checkpoint rewritten in place: transcribed anew
    import os

    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    transcribe(samples, settings, lambda x: calls.append(1) or [])
    assert calls == [1]

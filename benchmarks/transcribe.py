"""Speech as text measured: a spoken word classified from its sound, trained with and without its transcript.

    .venv/bin/python benchmarks/transcribe.py                    # 240 + 60 clips, 300 steps, tiny preset, CPU
    .venv/bin/python benchmarks/transcribe.py --steps 600 --clips 480

Each clip is 2 s of faint noise with one word from WORDS said by espeak-ng (one of three voices, a random speed,
pitch and onset). The rows are `classify` rows over `<audio>` with the eight words as labels. Both runs train the
tiny preset from scratch on the same rows with the same seed, steps and vocabulary; one sets
`budgets: {classify: {transcribe: {backend: pocketsphinx, keywords: WORDS}}}`, so its prompts carry what
PocketSphinx heard. Prints the held-out accuracy of each, how often the transcript alone names the right word,
and the time the transcripts took (once; the second run reads them from the disk cache). Outside CI.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from self_supervised import BUILD, LOOP

from unified import Model
from unified.data import load_data_dir
from unified.media import load_audio
from unified.media.recognizers import recognizer
from unified.media.speech import SpeechSettings, transcribe
from unified.task_zoo import fit_tasks
from unified.tokenizers import UnifiedTokenizer
from unified.training import load_config, train
from unified.training.data import tokenizer_corpus

WORDS = ["banana", "green", "window", "yellow", "circle", "orange", "table", "purple"]
VOICES = ["en-us", "en-us+m3", "en-us+f2"]
RATE = 16000


def said(word: str, rng: np.random.Generator) -> np.ndarray:
    """2 s [32000] float32: noise at -46 dBFS, the word from a random onset, voice, speed and pitch."""
    voice, speed, pitch = rng.choice(VOICES), int(rng.integers(110, 171)), int(rng.integers(20, 81))
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
                         capture_output=True, check=True).stdout
    speech = load_audio(wav, sampling_rate=RATE).numpy()[: int(1.4 * RATE)]
    out = (rng.standard_normal(2 * RATE) * 0.005).astype(np.float32)
    at = int(rng.uniform(0.0, 2.0 - len(speech) / RATE) * RATE)
    out[at:at + len(speech)] += speech
    return np.clip(out, -1, 1)


def write_wav(path: Path, samples: np.ndarray) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray((samples * 32767).astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = RATE
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def write_rows(directory: Path, n: int, rng: np.random.Generator) -> None:
    (directory / "clips").mkdir(parents=True, exist_ok=True)
    with open(directory / "classify.jsonl", "w") as rows:
        for i in range(n):
            word = WORDS[i % len(WORDS)]
            write_wav(directory / "clips" / f"{i:05d}.wav", said(word, rng))
            rows.write(json.dumps({"audio": f"clips/{i:05d}.wav", "labels": WORDS, "label": word}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=240)
    parser.add_argument("--test-clips", type=int, default=60)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is needed to say the words: apt-get install espeak-ng")
    out = args.out or Path(tempfile.mkdtemp(prefix="unified-transcribe-"))
    rng = np.random.default_rng(args.seed)
    write_rows(out / "data" / "train", args.clips, rng)
    write_rows(out / "data" / "test", args.test_clips, rng)
    rows, _ = load_data_dir(out / "data" / "train", ["classify"])
    corpus = tokenizer_corpus(rows, fit_tasks(rows, {})[0], seed=args.seed)
    UnifiedTokenizer.train(corpus, text_vocab_size=400, hard_vocab_limit=False).save_pretrained(out / "vocabulary")

    speech = {"backend": "pocketsphinx", "keywords": WORDS, "cache_dir": str(out / "transcripts")}
    settings = SpeechSettings.parse(speech)
    started = time.perf_counter()
    heard = {}
    for split in ("train", "test"):
        for row in load_data_dir(out / "data" / split, ["classify"])[0]["classify"]:
            words = transcribe(row["audio"], settings, recognizer(settings)).words
            heard[row["audio"]] = (" ".join(w.text for w in words), row["label"])
    seconds = time.perf_counter() - started
    right = sum(text == label for text, label in heard.values())

    scores = {}
    for name, budgets in (("without transcript", None), ("with transcript", {"classify": {"transcribe": speech}})):
        run = out / name.replace(" ", "-")
        overrides = [*BUILD, *LOOP, f"output_dir={run}", f"data.train_dir={out / 'data' / 'train'}",
                     "data.tasks=[classify]", f"tokenizer.path={out / 'vocabulary'}", f"seed={args.seed}",
                     f"optim.max_steps={args.steps}", f"optim.batch_size={args.batch_size}"]
        if budgets:
            overrides.append(f"budgets={json.dumps(budgets)}")
        started_run = time.perf_counter()
        train(load_config(None, overrides), progress=False)
        test, _ = load_data_dir(out / "data" / "test", ["classify"])
        result = Model.from_pretrained(run / "final").evaluate(test)
        scores[name] = (result.scores["classify"], time.perf_counter() - started_run)
    print(f"{len(heard)} clips transcribed in {seconds:.1f} s ({1000 * seconds / len(heard):.0f} ms each); "
          f"the transcript alone names the word in {right}/{len(heard)} ({right / len(heard):.1%})")
    for name, (score, run_seconds) in scores.items():
        print(f"classify {name}: held-out accuracy {score:.3f} ({run_seconds:.0f} s to train and evaluate)")
    print(f"runs and data in {out}")


if __name__ == "__main__":
    main()

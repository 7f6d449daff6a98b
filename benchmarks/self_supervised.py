"""Does pretraining on unlabelled clips with their captions help a fine-tune on few labels? (issue 41, item 3)

    .venv/bin/python benchmarks/self_supervised.py                         # small: tiny preset, CPU, minutes
    .venv/bin/python benchmarks/self_supervised.py --clips 400 --pretrain-steps 2000 --finetune-steps 600
    .venv/bin/python benchmarks/self_supervised.py --backbone models/flan-t5-small   # a pretrained language model

On the synthetic world (`unified.data.synthetic`):
1. pretrain on the training clips with their captions only, through the self-supervised tasks: `span_corruption`
   (each caption), `clip_text_match` (clip and caption; the batch's hardest other caption as the negative) and
   `tags` (the caption's content words as the clip's tags), and `masked_frames` (the frames alone);
2. fine-tune on 10 % of every labelled task's training rows (`--fraction`), starting from that model;
3. the same fine-tune from scratch: the same rows, steps, seed and vocabulary;
4. evaluate both on the held-out clips: the table gives each task's normalised score and the integral.

One vocabulary, trained once on the texts of every run, serves all three runs, so the two fine-tunes differ only in
their starting weights. With `--backbone DIR` (a local T5 / BART / T5Gemma directory) every run starts from that
language model with its own tokenizer instead of the tiny preset. Outside CI: the small setting takes minutes on 2
CPU cores; numbers go to docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unified import Model
from unified.data import load_data_dir
from unified.data.synthetic import write_split
from unified.task_zoo import fit_tasks
from unified.tokenizers import UnifiedTokenizer
from unified.training import load_config, train
from unified.training.data import tokenizer_corpus

STOPWORDS = {"a", "an", "the", "and", "then", "is", "are", "to", "of", "in", "on", "it", "its", "from", "at", "one",
             "two", "three", "there", "with", "while", "as", "by", "into", "out"}
BUILD = ["model.preset=tiny", "processor.image_size=32", "processor.max_frames=8"]  # a fine-tune takes the model's
LOOP = ["eval.every=0", "checkpoint.every=100000", "optim.warmup_steps=10", "optim.lr=0.003", "data.check_media=false"]


def pretraining_rows(train: dict[str, list]) -> dict[str, list]:
    """The clips with their captions only, as rows of the self-supervised tasks."""
    rows = {"span_corruption": [], "clip_text_match": [], "tags": [], "masked_frames": []}
    for row in train["caption"]:
        video, captions = row["video"], row.get("captions") or [row["caption"]]
        words = [w for w in re.findall(r"[a-z]+", " ".join(captions).lower()) if w not in STOPWORDS]
        for caption in captions:
            rows["span_corruption"].append({"video": video, "text": caption})
        rows["clip_text_match"].append({"video": video, "text": captions[0]})
        rows["tags"].append({"video": video, "tags": list(dict.fromkeys(words))})
        rows["masked_frames"].append({"video": video})
    return rows


def labelled_rows(train: dict[str, list], fraction: float, seed: int) -> dict[str, list]:
    """`fraction` of each labelled task's rows (at least 2), drawn with `seed`."""
    kept = {}
    for task, rows in train.items():
        n = max(2, round(fraction * len(rows)))
        kept[task] = random.Random(f"{seed}:{task}").sample(list(rows), min(n, len(rows)))
    return kept


def write_dir(directory: Path, rows: dict[str, list]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for task, task_rows in rows.items():
        with open(directory / f"{task}.jsonl", "w") as handle:
            for row in task_rows:
                handle.write(json.dumps({k: v for k, v in row.items() if not k.startswith("_")}) + "\n")
    return directory


def shared_vocabulary(rows: dict[str, list], directory: Path, size: int, seed: int) -> Path:
    corpus = tokenizer_corpus(rows, fit_tasks(rows)[0], seed=seed)
    UnifiedTokenizer.train(corpus, text_vocab_size=size, hard_vocab_limit=False).save_pretrained(directory)
    return directory


def run(name: str, out: Path, data: Path, steps: int, batch: int, seed: int, extra: list[str]) -> Path:
    cfg = load_config(None, [*LOOP, f"output_dir={out / name}", f"data.train_dir={data}", f"seed={seed}",
                             f"optim.max_steps={steps}", f"optim.batch_size={batch}", *extra])
    train(cfg, progress=False)
    return out / name / "final"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=120, help="training clips (each gives rows for every task)")
    parser.add_argument("--test-clips", type=int, default=30)
    parser.add_argument("--fraction", type=float, default=0.1, help="labelled rows kept for the fine-tunes")
    parser.add_argument("--pretrain-steps", type=int, default=150)
    parser.add_argument("--finetune-steps", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--backbone", type=Path, default=None, help="a local pretrained language model directory")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="unified-selfsup-"))
    train_dir = out / "data" / "train"
    test_dir = out / "data" / "test"
    write_split(train_dir, args.clips, seed=args.seed, split="train", progress=False)
    write_split(test_dir, args.test_clips, seed=args.seed, split="test", progress=False)
    train_rows, _ = load_data_dir(train_dir)
    labelled = {t: r for t, r in train_rows.items() if t != "retrieval"}  # retrieval ranks the split: kept out
    pretrain = write_dir(out / "pretrain", pretraining_rows(train_rows))
    finetune = write_dir(out / "finetune", labelled_rows(labelled, args.fraction, args.seed))
    if args.backbone is None:
        vocabulary = shared_vocabulary({**pretraining_rows(train_rows), **labelled}, out / "vocabulary", 400,
                                       args.seed)
        common = [*BUILD, f"tokenizer.path={vocabulary}"]
    else:  # the backbone's own tokenizer; our media encoders at the tiny preset's frame size
        common = [*BUILD, f"model.text.pretrained_path={args.backbone}"]
    start = run("pretrain", out, pretrain, args.pretrain_steps, args.batch_size, args.seed, common)
    from_pretrained = run("from-pretrained", out, finetune, args.finetune_steps, args.batch_size, args.seed,
                          [f"model.init_from={start}"])
    scratch = run("from-scratch", out, finetune, args.finetune_steps, args.batch_size, args.seed, common)
    test_rows, _ = load_data_dir(test_dir, list(labelled))
    results = {name: Model.from_pretrained(path).evaluate(test_rows, max_rows=args.test_clips)
               for name, path in (("pretrained", from_pretrained), ("scratch", scratch))}
    print(f"{'task':<20} {'scratch':>8} {'pretrained':>11}")
    for task in labelled:
        print(f"{task:<20} {results['scratch'].scores[task]:>8.3f} {results['pretrained'].scores[task]:>11.3f}")
    print(f"{'integral':<20} {results['scratch'].integral:>8.3f} {results['pretrained'].integral:>11.3f}")
    ahead = sum(results["pretrained"].scores[t] > results["scratch"].scores[t] for t in labelled)
    print(f"pretrained start ahead on {ahead} of {len(labelled)} tasks; runs and data in {out}")


if __name__ == "__main__":
    main()

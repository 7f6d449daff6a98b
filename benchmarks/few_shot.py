"""Few-shot prompts measured: one task trained and evaluated with 0 and with k demonstrations (issue 41, item 4).

    .venv/bin/python benchmarks/few_shot.py                       # vqa, 0 vs 2 demos, tiny preset, CPU
    .venv/bin/python benchmarks/few_shot.py --task text2text --demos 4 --steps 400

Both runs train the tiny preset from scratch on the same synthetic rows of `--task` with the same seed, steps and
vocabulary (trained once on the rows' texts with their demonstrations); one sets `task_options: {TASK: {demos: k}}`,
so its training prompts carry k demonstrations drawn from the other training rows and its evaluation prompts the k
saved with the model. Prints the held-out score of each. Outside CI.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from self_supervised import BUILD, LOOP

from unified import Model
from unified.data import load_data_dir
from unified.data.synthetic import write_split
from unified.task_zoo import fit_tasks
from unified.tokenizers import UnifiedTokenizer
from unified.training import load_config, train
from unified.training.data import tokenizer_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="vqa")
    parser.add_argument("--demos", type=int, default=2)
    parser.add_argument("--clips", type=int, default=120)
    parser.add_argument("--test-clips", type=int, default=30)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="unified-fewshot-"))
    write_split(out / "data" / "train", args.clips, seed=args.seed, split="train", progress=False)
    write_split(out / "data" / "test", args.test_clips, seed=args.seed, split="test", progress=False)
    rows, _ = load_data_dir(out / "data" / "train", [args.task])
    options = {args.task: {"demos": args.demos}}
    corpus = tokenizer_corpus(rows, fit_tasks(rows, options)[0], seed=args.seed)
    UnifiedTokenizer.train(corpus, text_vocab_size=400, hard_vocab_limit=False).save_pretrained(out / "vocabulary")
    scores = {}
    for k in (0, args.demos):
        overrides = [*BUILD, *LOOP, f"output_dir={out / f'demos-{k}'}", f"data.train_dir={out / 'data' / 'train'}",
                     f"data.tasks=[{args.task}]", f"tokenizer.path={out / 'vocabulary'}", f"seed={args.seed}",
                     f"optim.max_steps={args.steps}", f"optim.batch_size={args.batch_size}"]
        if k:
            overrides.append(f"task_options={{{args.task}: {{demos: {k}}}}}")
        train(load_config(None, overrides), progress=False)
        test, _ = load_data_dir(out / "data" / "test", [args.task])
        result = Model.from_pretrained(out / f"demos-{k}" / "final").evaluate(test)
        scores[k] = (result.scores[args.task], result.metrics[args.task])
    for k, (score, metrics) in scores.items():
        print(f"{args.task} with {k} demonstration(s): score {score:.3f}  {metrics}")
    print(f"runs and data in {out}")


if __name__ == "__main__":
    main()

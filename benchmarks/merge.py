"""Which merge keeps most of two models: A trained on some tasks, B continued from A on others (it forgets A's),
and their merges, each scored on both task sets.

    python benchmarks/merge.py [--steps 150] [--clips 60] [--rank 16]
    python benchmarks/merge.py --smoke           # untrained tiny models, one clip, one merge: the plumbing

P (a stand-in for a pretrained model) trains on both task sets; A continues from P on SET_A; B continues from A
on SET_B. Merged with `unified.merge`: linear (A, B), slerp (t 0.5), ties and dare (task vectors from P), and the
winners' svd-delta (SLERP(A, P + rank-r SVD of (B - P), 0.5)). Each model is evaluated on held-out rows of both
sets; the table gives each set's integral and their mean (docs/results.md keeps the latest).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SET_A = ["video_mcqa", "classify"]
SET_B = ["vqa", "grounding"]
MERGES = {  # label -> unified.merge arguments (models A, B; base P where it takes one)
    "linear 0.5 / 0.5": dict(method="linear"),
    "slerp t 0.5": dict(method="slerp", t=0.5),
    "ties (density 0.5)": dict(method="ties", density=0.5, base=True),
    "dare (density 0.5)": dict(method="dare", density=0.5, base=True),
    "svd-delta (t 0.5)": dict(method="svd-delta", t=0.5, base=True),  # rank: --rank
}


def _train(work: Path, name: str, tasks: list[str], steps: int, data: Path, init_from: Path | None) -> Path:
    from unified.training import load_config, train

    config = {"output_dir": str(work / name), "seed": 0, "data": {"train_dir": str(data), "tasks": tasks},
              "mixture": {"strategy": "uniform"},
              "optim": {"lr": 0.003, "warmup_steps": 10, "max_steps": steps, "batch_size": 8},
              "eval": {"every": 0}, "checkpoint": {"every": steps, "keep": 1},
              "task_options": {"video_mcqa": {"mode": "rank"}} if "video_mcqa" in tasks else {}}
    if init_from is None:
        config.update(model={"preset": "tiny"}, tokenizer={"text_vocab_size": 300},
                      processor={"image_size": 32, "video_fps": 4.0, "max_frames": 8})
    else:
        config["model"] = {"init_from": str(init_from)}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    train(load_config(path), progress=False)
    return work / name / "final"


def _untrained(work: Path) -> tuple[Path, Path, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from task_rows import tiny_stack

    from unified import Model

    _, processor, first = tiny_stack()
    paths = []
    for seed, (name, tasks) in enumerate((("P", SET_A + SET_B), ("A", SET_A), ("B", SET_B))):
        torch.manual_seed(seed)
        network = type(first)(first.config)  # one vocabulary, three initialisations
        short = {"video_mcqa": {"mode": "rank"}, "vqa": {"max_new_tokens": 4}}  # an untrained model's answers
        options = {t: short.get(t, {}) for t in tasks}
        Model(network, processor, options).save_pretrained(work / name)
        paths.append(work / name)
    return paths[0], paths[1], paths[2]


def run(work: Path, steps: int, clips: int, rank: int, max_rows: int, smoke: bool) -> list[dict]:
    sets = {"A": SET_A[:1], "B": SET_B[:1]} if smoke else {"A": SET_A, "B": SET_B}  # smoke: one task a side
    merges = {k: MERGES[k] for k in ("ties (density 0.5)",)} if smoke else MERGES
    from unified import Model, merge
    from unified.data.synthetic import write_split

    write_split(work / "test", max(1, clips // 4), seed=5, split="test", progress=False)
    if smoke:
        p, a, b = _untrained(work)
    else:
        write_split(work / "train", clips, seed=0, split="train", progress=False)
        p = _train(work, "P", SET_A + SET_B, steps, work / "train", None)
        a = _train(work, "A", SET_A, steps, work / "train", p)
        b = _train(work, "B", SET_B, steps, work / "train", a)
    candidates = {"A (older: trained on set A)": a, "B (newer: A continued on set B)": b}
    for label, kwargs in merges.items():
        kwargs = dict(kwargs)
        base = p if kwargs.pop("base", False) else None
        candidates[label] = merge([a, b], work / label.split()[0], base=base, rank=rank, **kwargs)
    rows = []
    for label, path in candidates.items():
        model = Model.from_pretrained(path)
        scores = {}
        for name, tasks in sets.items():
            data, _ = model.evaluation_data(work / "test", tasks)
            scores[name] = model.evaluate(data, max_rows=max_rows, progress=False, allow_untrained=True).integral
        rows.append({"model": label, "set_a": scores["A"], "set_b": scores["B"],
                     "mean": (scores["A"] + scores["B"]) / 2})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps of each of P, A and B")
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--rank", type=int, default=16, help="svd-delta's rank")
    parser.add_argument("--max-rows", type=int, default=32, help="held-out rows per task")
    parser.add_argument("--smoke", action="store_true", help="untrained tiny models, one clip, one merge")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(Path(tmp), args.steps, 1 if args.smoke else args.clips, args.rank,
                   1 if args.smoke else args.max_rows, args.smoke)
    print(f"| model | set A integral ({', '.join(SET_A)}) | set B integral ({', '.join(SET_B)}) | mean |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['set_a']:.3f} | {r['set_b']:.3f} | {r['mean']:.3f} |")
    return rows


if __name__ == "__main__":
    main()

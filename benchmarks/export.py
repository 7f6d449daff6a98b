"""What `unified export` costs and saves: directory size, CPU latency of `generate` and the evaluation's integral
for the saved model and its bf16, int8 and int4 exports, on the same synthetic rows.

    python benchmarks/export.py [--model unified/default_model] [--clips 24] [--max-rows 24] [--repeats 3]
    python benchmarks/export.py --smoke          # a tiny untrained model, one clip, int8: the plumbing

For each variant: the directory's size, the median seconds of one `generate(task="caption")` call on one clip
(after a warm-up), and `evaluate` on a test split of the synthetic world (every task the model was trained on, at
most `--max-rows` rows each, the same rows for every variant): the integral and the largest per-task change from
the saved model. Prints a Markdown table (docs/results.md keeps the latest).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # label -> export arguments (None: the saved model as it loads)
    "saved (fp32 on load)": None,
    "bf16": dict(dtype="bf16"),
    "int8 linears, bf16": dict(dtype="bf16", quantize="int8"),
    "int4 linears, bf16": dict(dtype="bf16", quantize="int4"),
}


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _tiny_model(directory: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from task_rows import tiny_stack

    from unified import Model

    _, processor, network = tiny_stack(0)
    Model(network, processor, {"caption": {}, "video_mcqa": {"mode": "rank"}}).save_pretrained(directory)
    return directory


def run(model_dir: Path, clips: int, max_rows: int, repeats: int, work: Path, variants: dict = VARIANTS,
        tasks: list[str] | None = None) -> list[dict]:
    from unified import Model, export
    from unified.data.synthetic import write_split

    data_dir = work / "data"
    write_split(data_dir, clips, seed=11, split="test", progress=False)
    clip = str(next((data_dir / "clips").glob("*.mp4")))
    rows = []
    reference = None
    for label, kwargs in variants.items():
        path = model_dir if kwargs is None else export(model_dir, work / label.replace(" ", "_"), **kwargs)
        model = Model.from_pretrained(path)
        if repeats > 1:
            model.generate(task="caption", video=clip, max_new_tokens=16)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.generate(task="caption", video=clip, max_new_tokens=16)
            times.append(time.perf_counter() - start)
        result = model.evaluate(data_dir, tasks=tasks, max_rows=max_rows, progress=False)
        reference = reference or result
        worst = max(((abs(d), d, t) for t, d in ((t, result.scores[t] - reference.scores[t]) for t in result.scores)),
                    default=(0.0, 0.0, "-"))
        rows.append({"variant": label, "size_mb": _size(path) / 1e6, "latency_s": statistics.median(times),
                     "integral": result.integral, "worst_task": f"{worst[2]} {worst[1]:+.3f}" if worst[0] else "-"})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "unified" / "default_model")
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--max-rows", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a tiny untrained model, one clip, int8 only")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = _tiny_model(work / "tiny") if args.smoke else args.model
        if args.smoke:  # the saved model and one quantised export, one ranked question
            smoke = {k: VARIANTS[k] for k in ("saved (fp32 on load)", "int8 linears, bf16")}
            rows = run(model_dir, 1, 1, 1, work, smoke, ["video_mcqa"])
        else:
            rows = run(model_dir, args.clips, args.max_rows, args.repeats, work)
    print(f"| {model_dir.name}: variant | size MB | CPU s per caption | integral | largest task change |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['size_mb']:.2f} | {r['latency_s']:.3f} | {r['integral']:.3f} | "
              f"{r['worst_task']} |")
    return rows


if __name__ == "__main__":
    main()

"""HL-Gauss on the synthetic world: the default model's recipe (`training/configs/shapes-small.yaml`) trained on the
tasks whose answers are numbered tokens (grounding: location bins; temporal grounding: time bins; regress:
trajectories as value bins), once with plain cross-entropy and once per `text.ordinal_loss_sigma`, same seed, data
and steps; each scored on 100 fresh clips (seed 1, as the default model's card).

    python benchmarks/ordinal_loss.py [--steps 2000] [--n-train 1000] [--sigmas 0 0.75] [--tasks ...]

Prints one row per sigma: grounding accuracy at IoU 0.5 and mean IoU, temporal grounding's mean IoU, regress MAE.
The results page's ordinal-loss rows come from it (docs/results.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

RECIPE = Path(__file__).parents[1] / "training" / "configs" / "shapes-small.yaml"
TASKS = ["grounding", "temporal_grounding", "regress"]
COLUMNS = {"grounding acc@0.5": ("grounding", "accuracy_at_iou"), "grounding mIoU": ("grounding", "mean_iou"),
           "temporal mIoU": ("temporal_grounding", "mean_temporal_iou"), "regress MAE": ("regress", "mae")}


def run(steps: int, n_train: int, sigmas: list[float], tasks: list[str], seed: int = 0) -> dict[float, dict]:
    from unified import Model
    from unified.data import load_data_dir
    from unified.data.synthetic import write_split
    from unified.training import load_config, train

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_split(root / "train", n_train, seed=0, split="train", progress=False)
        write_split(root / "test", 100, seed=1, split="test", progress=False)
        test, _ = load_data_dir(root / "test", tasks)
        for sigma in sigmas:
            out = root / f"sigma-{sigma}"
            cfg = load_config(RECIPE, [
                f"output_dir={out}", f"data.train_dir={root / 'train'}", "data.synthetic=null",
                f"data.tasks=[{', '.join(tasks)}]", f"optim.max_steps={steps}", "eval.every=0",
                "checkpoint.every=0", "log_with=none", "task_options={}", f"seed={seed}",
                f"model.text.ordinal_loss_sigma={sigma}"])
            start = time.time()
            train(cfg, progress=False)
            model = Model.from_pretrained(out / "final")
            metrics = model.evaluate(test, progress=False).metrics
            results[sigma] = {"metrics": metrics, "seconds": time.time() - start}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.75])
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = run(args.steps, args.n_train, args.sigmas, args.tasks, args.seed)
    print(f"\n{args.steps} steps, {args.n_train} training clips, tasks {args.tasks}, seed {args.seed}; 100 test clips")
    print(f"{'sigma':>6} " + " ".join(f"{name:>18}" for name in COLUMNS) + "  seconds")
    for sigma, r in results.items():
        cells = [r["metrics"].get(t, {}).get(m, float("nan")) for t, m in COLUMNS.values()]
        print(f"{sigma:>6} " + " ".join(f"{v:>18.3f}" for v in cells) + f"  {r['seconds']:.0f}")


if __name__ == "__main__":
    main()

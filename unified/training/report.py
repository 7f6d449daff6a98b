"""What a run reports: accelerate trackers, the per-task summary and its table, the loss plot, and the per-rank
report a multi-process run is checked with.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any


def trackers(log_with: str) -> list[str] | None:
    """The accelerate trackers for `log_with`: "auto" = TensorBoard when it is installed, "none" = none."""
    if log_with == "none":
        return None
    if log_with == "auto":
        from accelerate.utils import is_tensorboard_available

        return ["tensorboard"] if is_tensorboard_available() else None
    return [log_with]


def flat_config(data: dict, prefix: str = "") -> dict[str, Any]:
    # TensorBoard's hparams take scalars and strings only
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value, default=str)
    return out


def plot_losses(history: list[dict], path: Path) -> bool:
    """`path` (loss.png): each task's training loss, smoothed, on a log scale. Without matplotlib (a core
    dependency, so only where it was removed) one warning says the plot was not written, and False is returned."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        warnings.warn(f"{path.name} not written: matplotlib cannot be imported ({err}); "
                      "pip install matplotlib", stacklevel=2)
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for task in sorted({h["task"] for h in history}):
        points = [(h["step"], h["loss"]) for h in history if h["task"] == task and math.isfinite(h["loss"])]
        smooth, xs, ys = None, [], []
        for step, loss in points:
            smooth = loss if smooth is None else 0.9 * smooth + 0.1 * loss
            xs.append(step)
            ys.append(smooth)
        ax.plot(xs, ys, label=task)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (EMA)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_rank_report(out: Path, accelerator, checksum: float, seen: list[str], **extra: Any) -> None:
    """OUTPUT/ranks/rank-R.json: the world size, the rows this rank trained on and the model's parameter checksum
    (`unified.training.sharding.param_checksum`), so a multi-process run can be checked (ranks saw different rows
    and ended with the same weights); `extra` adds fields (how DDP or FSDP was set up)."""
    folder = out / "ranks"
    folder.mkdir(parents=True, exist_ok=True)
    report = {"rank": accelerator.process_index, "world_size": accelerator.num_processes, "rows": seen,
              "param_checksum": checksum, **extra}
    (folder / f"rank-{accelerator.process_index}.json").write_text(json.dumps(report))


def summarise(history, sampler, skipped, seconds, final, best) -> dict[str, Any]:
    per_task = {}
    for task in sampler.tasks:
        losses = [h["loss"] for h in history if h["task"] == task]
        k = max(1, len(losses) // 10)
        per_task[task] = {"batches": len(losses), "first_loss": sum(losses[:k]) / k if losses else None,
                          "last_loss": sum(losses[-k:]) / k if losses else None}
    return {"steps": len({h["step"] for h in history}), "skipped_steps": skipped, "seconds": round(seconds, 1),
            "tasks": per_task,
            "final_integral": final, "best_integral": best if best >= 0 else None}


def summary_table(summary: dict[str, Any]) -> str:
    lines = [f"{'task':<20} {'batches':>8} {'first loss':>11} {'last loss':>10}"]
    for task, t in summary["tasks"].items():
        first = "-" if t["first_loss"] is None else f"{t['first_loss']:.3f}"
        last = "-" if t["last_loss"] is None else f"{t['last_loss']:.3f}"
        lines.append(f"{task:<20} {t['batches']:>8} {first:>11} {last:>10}")
    lines.append(f"{summary['steps']} steps in {summary['seconds']} s, {summary['skipped_steps']} skipped; "
                 f"final integral {summary['final_integral']}, best {summary['best_integral']}")
    return "\n".join(lines)

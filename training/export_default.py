"""Copy a trained model into the package as the built-in default model, in bf16 (half the bytes of fp32).

    python training/export_default.py runs/shapes-small/best [--out unified/default_model]

Writes config.json, model.safetensors (bf16), the vocabulary, processor and task_options.json files next to the model card
(README.md, written by hand from `unified eval` numbers), and the run's provenance beside them: its resolved training
config (`training_config.json`), its run summary (`run_summary.json`) and its held-out evaluations during training
(`eval_history.jsonl`), read from the run directory (the parent of `best/` or `final/`). `Model.default()` loads it
back in fp32.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

LIMIT_MB = 25.0
PROVENANCE = {"config.json": "training_config.json", "summary.json": "run_summary.json",
              "eval.jsonl": "eval_history.jsonl"}  # run directory file -> name beside the default model


def main() -> None:
    from unified.model import UnifiedModel
    from unified.processing import UnifiedProcessor

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a saved model directory (OUTPUT/best or OUTPUT/final)")
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "unified" / "default_model"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = UnifiedModel.from_pretrained(args.run).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    UnifiedProcessor.from_pretrained(args.run).save_pretrained(out)
    options = Path(args.run) / "task_options.json"  # how the model answers (e.g. multiple choice by ranking)
    if options.is_file():
        (out / options.name).write_text(options.read_text())
    run_dir = Path(args.run).resolve().parent
    for name, target in PROVENANCE.items():
        if (run_dir / name).is_file():
            (out / target).write_text((run_dir / name).read_text())
        else:
            print(f"warning: {run_dir / name} is missing; {target} not written")
    size = (out / "model.safetensors").stat().st_size / 2**20
    params = sum(p.numel() for p in model.parameters())
    print(f"{out}: {params / 1e6:.2f} M parameters, model.safetensors {size:.1f} MiB")
    if size > LIMIT_MB:
        raise SystemExit(f"model.safetensors is {size:.1f} MiB, over the {LIMIT_MB} MiB the package allows")


if __name__ == "__main__":
    main()

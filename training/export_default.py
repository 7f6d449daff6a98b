"""Copy a trained model into the package as the built-in default model, in bf16 (half the bytes of fp32).

    python training/export_default.py runs/shapes-small/best [--out unified/default_model]

Writes what `unified.saving.write_servable` writes (config.json, model.safetensors in bf16, the vocabulary, the
processor, task_options.json and the shim transformers' Auto classes load it through) next to the model card
(README.md, written by hand from `unified eval` numbers), and the run's provenance beside them: its resolved training
config (`training_config.json`), its run summary (`run_summary.json`) and its held-out evaluations during training
(`eval_history.jsonl`), read from the run directory (the parent of `best/` or `final/`). `Model.default()` loads it
back in fp32.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

LIMIT_MB = 25.0
PROVENANCE = {"config.json": "training_config.json", "summary.json": "run_summary.json",
              "eval.jsonl": "eval_history.jsonl"}  # run directory file -> name beside the default model


def main() -> None:
    from unified.model import UnifiedModel
    from unified.processing import UnifiedProcessor
    from unified.saving import write_servable

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a saved model directory (OUTPUT/best or OUTPUT/final)")
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "unified" / "default_model"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = UnifiedModel.from_pretrained(args.run).to(torch.bfloat16)
    options = Path(args.run) / "task_options.json"  # how the model answers (e.g. multiple choice by ranking)
    write_servable(out, model, UnifiedProcessor.from_pretrained(args.run),
                   json.loads(options.read_text()) if options.is_file() else None, safe_serialization=True)
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

"""`benchmarks/gpu.py --smoke`: the GPU run's code on the CPU with tiny models, so the script cannot rot before a GPU
is at hand. Every row it prints on a GPU is printed here too, and the xformers entry (its SDPA fallback here) gives
the sdpa logits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_the_gpu_script_runs_its_smoke_mode():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke"], capture_output=True,
                          text=True, timeout=300, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("|")]
    for model in ("base", "t5-base"):
        assert any(row.startswith(f"| {model} (") for row in rows)
    for what in ("train step, sdpa", "FLOP/s", "generate", "xformers", "packing", "torch.compile"):
        assert sum(row.startswith(f"| {what}") for row in rows) == 2, what
    diffs = [float(row.split("logits max diff ")[1].split()[0]) for row in rows if "logits max diff" in row]
    assert len(diffs) == 2 and max(diffs) < 1e-4  # xformers (here SDPA's fallback) = sdpa, T5's bias included

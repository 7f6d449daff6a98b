"""Distributed engines: the shipped accelerate configs, and the model sharded with FSDP2 over two gloo ranks
(torch's `fully_shard` by the model's `_no_split_modules`, since accelerate on CPU wraps every model in DDP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "training" / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.distributed_type.value == "MULTI_GPU" and config.num_processes >= 1


@pytest.mark.slow
def test_fsdp2_shards_the_model_and_matches_one_process_and_resumes_sharded(tmp_path):
    """Two ranks, each a different row: after three AdamW steps the sharded model equals an unsharded copy stepped
    on the mean of both rows' losses; each rank holds half the parameters; a sharded checkpoint written after step 2
    (torch.distributed.checkpoint) loaded into a model with other weights gives bitwise the same step 3."""
    out = tmp_path / "result.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          str(ROOT / "tests" / "fsdp_worker.py"), str(out), str(tmp_path / "checkpoint")],
                         env=env, capture_output=True, text=True, timeout=600, cwd=ROOT / "tests", check=False)
    assert out.is_file(), run.stderr[-3000:]  # written before teardown, so a gloo abort at exit cannot hide it
    result = json.loads(out.read_text())
    assert result["wrapped"] == 6  # tiny: 2 encoder layers (each inside a FusedLayer) + 2 decoder layers
    assert result["local_fraction"] == pytest.approx(0.5, abs=0.01)
    assert result["moved"] > 0.01 and result["max_diff_vs_reference"] < 5e-4, result
    assert result["max_diff_resumed"] == 0.0

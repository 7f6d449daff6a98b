"""Distributed engines: the shipped accelerate configs, what an FSDP launch config asks of the training loop, the
optimizer state converted between the sharded and the unsharded layout, and the model sharded with FSDP2 over two
gloo ranks (torch's `fully_shard` by the model's `_no_split_modules`). The training loop under FSDP, against DDP:
`tests/test_training_run.py`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]


CONFIGS = sorted((ROOT / "training" / "accelerate").glob("*.yaml"))
STRATEGY = {"ddp.yaml": None, "fsdp.yaml": "full_shard", "fsdp-grad-op.yaml": "shard_grad_op"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_accelerate_configs_load_and_ask_for_what_the_loop_does(path, monkeypatch):
    """Each file goes through accelerate's own launcher code to the environment it sets; an FSDP file's plugin, built
    from that environment, asks for the strategy its name says and for nothing the loop refuses."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    from unified.training.launch import launched_strategy

    assert set(STRATEGY) == {p.name for p in CONFIGS}
    config = load_config_from_file(str(path))
    assert config.num_processes >= 1
    if STRATEGY[path.name] is None:
        assert config.distributed_type.value == "MULTI_GPU"
        return
    assert config.distributed_type.value == "FSDP"
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(path), "x.py"]))
    for key, value in prepare_multi_gpu_env(args).items():
        if key.startswith(("FSDP_", "ACCELERATE_USE_FSDP")):
            monkeypatch.setenv(key, value)
    assert launched_strategy(FullyShardedDataParallelPlugin()) == STRATEGY[path.name]


def test_an_fsdp_launch_config_the_loop_does_not_carry_out_is_refused_naming_each_setting():
    from accelerate.utils import FullyShardedDataParallelPlugin as Plugin

    from unified.training import TrainingError
    from unified.training.launch import launched_strategy

    with pytest.raises(TrainingError) as caught:
        launched_strategy(Plugin(fsdp_version=2, cpu_offload=True, activation_checkpointing=True,
                                 auto_wrap_policy="size_based_wrap"))
    for setting in ("fsdp_offload_params", "fsdp_activation_checkpointing", "SIZE_BASED_WRAP",
                    "model.gradient_checkpointing"):
        assert setting in str(caught.value)
    with pytest.raises(TrainingError, match="fsdp_version 1"):
        launched_strategy(Plugin(fsdp_version=1))
    with pytest.raises(TrainingError, match="_no_split_modules"):
        launched_strategy(Plugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                 transformer_cls_names_to_wrap=["T5Block"]))


@pytest.mark.parametrize("overrides, field", [
    (["fsdp.enabled=true", "fsdp.strategy=hybrid_shard"], "fsdp.strategy"),
    (["fsdp.strategy=shard_grad_op"], "fsdp.strategy"),  # inert: nothing is sharded
])
def test_fsdp_settings_are_checked(overrides, field):
    from unified.errors import ConfigError
    from unified.training import load_config

    with pytest.raises(ConfigError) as caught:
        load_config(ROOT / "training" / "configs" / "tiny-smoke.yaml", overrides)
    assert caught.value.field == field


@pytest.mark.parametrize("overrides, field", [
    (["mixture.strategy=dynamic", "data.synthetic={n_train: 10, n_eval: 0}"], "mixture.strategy"),
    (["optim.mixed_precision=fp16"], "optim.mixed_precision"),
    (["lora.enabled=true", "stages=[{name: lora, train: [lora]}]"], "lora.enabled"),
])
def test_what_fsdp_cannot_keep_in_step_across_ranks_is_refused(overrides, field):
    """Every rank must run the same modules at each step: a dynamic mixture draws from each rank's own losses, and
    per-task adapters are not sharded; fp16's gradient scaler does not reach sharded gradients here."""
    from unified.errors import ConfigError
    from unified.training import load_config
    from unified.training.launch import check_fsdp as _check_fsdp

    _check_fsdp(load_config(ROOT / "training" / "configs" / "tiny-smoke.yaml", ["fsdp.enabled=true"]))
    with pytest.raises(ConfigError) as caught:
        _check_fsdp(load_config(ROOT / "training" / "configs" / "tiny-smoke.yaml", ["fsdp.enabled=true", *overrides]))
    assert caught.value.field == field


def test_the_optimizer_state_by_name_is_torchs_own_by_index_and_back():
    """torch's `state_dict()` numbers the parameters over its groups; keyed by name, each entry's moments have the
    shape of the parameter of that name, and converting back gives torch's dict again."""
    from model_fixtures import media_batch, tiny_model

    from unified.training.sharding import by_index, by_name, parameter_names, shard_units
    from unified.training.stages import param_groups

    model = tiny_model(0)
    optimizer = torch.optim.AdamW(param_groups(model, 1e-3, {"media": 0.5}), lr=1e-3)
    model(**media_batch()).loss.backward()
    optimizer.step()
    state = optimizer.state_dict()
    assert len(state["param_groups"]) > 1 and 0 < len(state["state"]) < len(parameter_names(model, optimizer))
    names = parameter_names(model, optimizer)
    named = by_name(state, names)
    shapes = dict(model.named_parameters())
    assert all(s["exp_avg"].shape == shapes[n].shape for n, s in named["state"].items())
    assert [len(g["params"]) for g in named["param_groups"]] == [len(g["params"]) for g in state["param_groups"]]
    again = by_index(named, names)
    assert again["param_groups"] == state["param_groups"]
    assert again["state"].keys() == state["state"].keys()
    assert all(again["state"][i]["exp_avg"] is state["state"][i]["exp_avg"] for i in state["state"])
    assert len(shard_units(model)) == 6  # 2 encoder layers (each inside a FusedLayer) + 2 decoder layers


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

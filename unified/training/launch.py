"""How a run was launched, checked before it builds anything: one process or several, DDP or FSDP, and the
accelerate settings this loop does not carry out (refused by name, never ignored).

    strategy = fsdp_strategy(cfg, accelerator)   # "full_shard" | "shard_grad_op" | None (whole model, DDP)
"""

from __future__ import annotations

import os

from unified.errors import ConfigError, TrainingError
from unified.training.config import TrainConfig


def check_fsdp(cfg: TrainConfig) -> None:
    """Under FSDP every rank must run the same modules each step (the shards are gathered module by module)."""
    if cfg.mixture.strategy == "dynamic":
        raise ConfigError("mixture.strategy", "dynamic", "under FSDP every rank must draw the same tasks, and a "
                          "dynamic mixture reads each rank's own losses; use another strategy, or DDP")
    if cfg.optim.mixed_precision == "fp16":
        raise ConfigError("optim.mixed_precision", "fp16", "under FSDP use bf16: fp16's gradient scaler is not "
                          "applied to sharded gradients here")
    if cfg.lora.enabled:
        raise ConfigError("lora.enabled", True, "per-task LoRA adapters are not trained under FSDP; train them "
                          "with DDP")
    if cfg.optim.ema:
        raise ConfigError("optim.ema", cfg.optim.ema, "the average of the weights is kept whole beside the model, "
                          "which FSDP shards; train with DDP to keep one")


def fsdp_strategy(cfg: TrainConfig, accelerator) -> str | None:
    """How this run shards the model: `fsdp.strategy` when `fsdp.enabled`, what an accelerate FSDP launch config
    says (its settings this loop does not carry out are refused, not ignored), or None (whole, DDP across ranks).
    Stops a DeepSpeed or Megatron launch, and a launch whose processes each think they are alone."""
    engine = accelerator.distributed_type.value
    if engine in ("DEEPSPEED", "MEGATRON_LM"):
        raise TrainingError(f"accelerate launched this run with {engine}, which this training loop does not drive: "
                            "launch with DDP (training/accelerate/ddp.yaml) or FSDP (training/accelerate/fsdp.yaml)")
    check_world(accelerator)
    if engine != "FSDP":
        return cfg.fsdp.strategy if cfg.fsdp.enabled else None
    plugin = accelerator.state.fsdp_plugin
    strategy = launched_strategy(plugin)
    if cfg.fsdp.enabled and cfg.fsdp.strategy != strategy:
        raise ConfigError("fsdp.strategy", cfg.fsdp.strategy, f"the accelerate launch config asks for {strategy!r}")
    return strategy


def launched_strategy(plugin) -> str:
    """An accelerate `FullyShardedDataParallelPlugin` -> "full_shard" or "shard_grad_op"; a setting this loop does
    not carry out raises `TrainingError` naming it and what to use instead."""
    from torch.distributed.fsdp import CPUOffloadPolicy

    refused = []
    if plugin.fsdp_version != 2:
        refused.append(f"fsdp_version {plugin.fsdp_version} (this loop shards with FSDP2: fsdp_version: 2)")
    if isinstance(plugin.cpu_offload, CPUOffloadPolicy) or getattr(plugin.cpu_offload, "offload_params", False):
        refused.append("fsdp_offload_params (parameters stay on the accelerator)")
    if plugin.activation_checkpointing:
        refused.append("fsdp_activation_checkpointing (use model.gradient_checkpointing: true)")
    if getattr(plugin.auto_wrap_policy, "__name__", "") == "size_based_auto_wrap_policy":
        refused.append("fsdp_auto_wrap_policy SIZE_BASED_WRAP (the model is sharded by its _no_split_modules)")
    if plugin.transformer_cls_names_to_wrap:
        refused.append(f"fsdp_transformer_layer_cls_to_wrap {plugin.transformer_cls_names_to_wrap} (the model is "
                       "sharded by its _no_split_modules)")
    if refused:
        raise TrainingError("the accelerate FSDP launch config asks for what this training loop does not do: "
                            + "; ".join(refused))
    return "full_shard" if plugin.reshard_after_forward else "shard_grad_op"


def check_world(accelerator) -> None:
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise TrainingError(f"the launcher started {launched} processes but this one sees a world of "
                            f"{accelerator.num_processes}: each process would train alone on the same data. On CPU "
                            "use `ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N ...`")

"""FSDP2 inside the training loop: the model sharded over the ranks by its `_no_split_modules`, and the full weights
and optimizer state gathered for what the main process does alone (evaluate, save a checkpoint, write `final/`).

    sharding = Sharding.apply(model, "full_shard", device, keep_copy=main)   # before the optimizer is made
    optimizer = AdamW(model.parameters())                # over each rank's shards
    full = sharding.full_model(model)      # collective: every rank calls it; the main process gets an unsharded
                                           # copy holding the current weights (None elsewhere)
    state = sharding.optimizer_state(model, optimizer)   # collective: the full state on the main process, keyed
                                                         # like `optimizer.state_dict()` (None elsewhere)
    sharding.load_optimizer_state(model, optimizer, state)   # every rank takes its shards of a full state

Checkpoints are the unsharded ones a one-process or DDP run writes (the same files, the optimizer state keyed by
parameter index), so a run resumes under either engine. The main process keeps one unsharded copy of the model in
host memory for this; FSDP here saves each rank's accelerator memory, not the main process's host memory.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from unified.model.nf4 import dequantized, is_nf4
from unified.training.config import FSDP_STRATEGIES


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The submodules each sharded as a unit: instances of the model's `_no_split_modules` (its layers)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if m is not model and type(m).__name__ in names]


@dataclass
class Sharding:
    strategy: str
    units: int  # submodules sharded as units (the root holds the rest)
    whole: nn.Module | None  # the main process's unsharded copy, for evaluating and saving

    @classmethod
    def apply(cls, model: nn.Module, strategy: str, device: torch.device, *, keep_copy: bool) -> Sharding:
        """Shard `model` in place over the default process group: each unit, innermost first (a fused layer holds
        an encoder layer), then the root. `keep_copy`: keep an unsharded copy (the main process)."""
        from torch.distributed import get_world_size
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        if strategy not in FSDP_STRATEGIES:
            raise ValueError(f"strategy {strategy!r}: expected one of {FSDP_STRATEGIES}")
        kept = copy.deepcopy(model).cpu().eval() if keep_copy else None
        model.to(device)
        mesh = init_device_mesh(device.type, (get_world_size(),))
        units = shard_units(model)
        reshard = strategy == "full_shard"
        for unit in reversed(units):
            fully_shard(unit, mesh=mesh, reshard_after_forward=reshard)
        fully_shard(model, mesh=mesh, reshard_after_forward=reshard)
        return cls(strategy, len(units), kept)

    def full_model(self, model: nn.Module) -> nn.Module | None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.whole is None:
            return None
        self.whole.load_state_dict(state)
        return self.whole

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        state = get_optimizer_state_dict(model, optimizer,
                                         options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return by_index(state, parameter_names(model, optimizer)) if self.whole is not None else None

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                             state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        names = parameter_names(model, optimizer)
        held = sum(len(g["params"]) for g in state["param_groups"])
        if held != len(names):
            raise ValueError(f"the state holds {held} parameters, the optimizer {len(names)}")
        # strict=False: a parameter no batch has reached yet (the audio encoder of a video-only run) has no state
        set_optimizer_state_dict(model, optimizer, by_name(state, names),
                                 options=StateDictOptions(full_state_dict=True, strict=False))


def parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The optimizer's parameters by name, in the order `optimizer.state_dict()` numbers them."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def by_index(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """An optimizer state keyed by parameter name -> keyed by index in `names` (what `state_dict()` writes)."""
    index = {n: i for i, n in enumerate(names)}
    return {"state": {index[n]: s for n, s in state["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]]}


def by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The inverse of `by_index`."""
    return {"state": {names[int(i)]: s for i, s in state["state"].items()},
            "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]]}


def _plain(p: torch.Tensor) -> torch.Tensor:
    # a QLoRA base's int8 weight (a torchao tensor, `model.quantize`) or nf4 weight (bitsandbytes) counts with the
    # values it stands for
    if is_nf4(p):
        return dequantized(p)
    data = p.data
    return data.dequantize() if type(data) is not torch.Tensor and hasattr(data, "dequantize") else p


def param_checksum(model: nn.Module) -> float:
    """Sum of |parameter| over the whole model, the same number on every rank whether its parameters are sharded
    (each rank sums its shards, then all ranks add up) or replicated."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    with torch.no_grad():
        local = [(p.to_local() if isinstance(p, DTensor) else _plain(p)) for p in model.parameters()]
        total = torch.tensor(float(sum(p.double().abs().sum() for p in local)), dtype=torch.float64,
                             device=local[0].device)  # NCCL reduces accelerator tensors only
    if any(isinstance(p, DTensor) for p in model.parameters()):
        dist.all_reduce(total)
    return float(total)

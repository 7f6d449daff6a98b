"""One rank of the FSDP2 check (`tests/test_distributed.py` launches two over gloo): the tiny model sharded by its
`_no_split_modules`, three AdamW steps on one row per rank, against an unsharded copy stepped on the mean of the two
rows' losses (what averaging the ranks' gradients computes); then a sharded checkpoint written after step 2 and
loaded into a fresh sharded model, whose step 3 must equal the uninterrupted one. Rank 0 writes the result as JSON.

    python -m torch.distributed.run --nproc_per_node 2 tests/fsdp_worker.py OUT.json CHECKPOINT_DIR
"""

import json
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from model_fixtures import media_batch, tiny_model
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def sharded(seed: int = 0):
    model = tiny_model(seed)
    wrapped = [m for m in model.modules() if type(m).__name__ in model._no_split_modules]
    for module in reversed(wrapped):  # innermost first (a FusedLayer holds an EncoderLayer)
        fully_shard(module)
    fully_shard(model)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2), len(wrapped)


def row(batch, i):
    return {k: v[i:i + 1] for k, v in batch.items()}


def main(out: str, checkpoint: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    batch = media_batch()
    batch["audio_mask"][1] = True  # both rows with audio: FSDP ranks must run the same modules (see test_distributed)
    model, optimizer, wrapped = sharded()
    reference = tiny_model(0)
    ref_optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2)
    for step in range(3):
        if step == 2:
            dcp.save({"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)},
                     checkpoint_id=checkpoint)
        model(**row(batch, rank)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        ((reference(**row(batch, 0)).loss + reference(**row(batch, 1)).loss) / 2).backward()
        ref_optimizer.step()
        ref_optimizer.zero_grad()
    full = get_model_state_dict(model, options=FULL)
    local = sum(p.to_local().numel() for p in model.parameters())
    resumed, resumed_optimizer, _ = sharded(seed=1)  # other weights: the checkpoint must overwrite them
    state = {"model": get_model_state_dict(resumed), "optim": get_optimizer_state_dict(resumed, resumed_optimizer)}
    # Parameters that never had a gradient (the contrastive head here) have no optimizer state in the checkpoint.
    dcp.load(state, checkpoint_id=checkpoint, planner=DefaultLoadPlanner(allow_partial_load=True))
    set_model_state_dict(resumed, state["model"])
    set_optimizer_state_dict(resumed, resumed_optimizer, state["optim"])
    resumed(**row(batch, rank)).loss.backward()
    resumed_optimizer.step()
    again = get_model_state_dict(resumed, options=FULL)
    if rank == 0:
        ref = reference.state_dict()
        result = {
            "wrapped": wrapped,
            "local_fraction": local / sum(p.numel() for p in reference.parameters()),
            "max_diff_vs_reference": max(float((full[k] - ref[k]).abs().max()) for k in ref),
            "max_diff_resumed": max(float((again[k] - full[k]).abs().max()) for k in full),
            "moved": max(float((full[k] - tiny_model(0).state_dict()[k]).abs().max()) for k in ref),
        }
        with open(out, "w") as f:
            json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

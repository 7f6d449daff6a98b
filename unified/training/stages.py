"""Stages and the schedule: which parameter group a parameter is in, which stage a step is in, what trains then,
and the learning-rate factor (linear warmup, cosine decay, the stage's scale).

    groups    media, resampler, xattn, gates, encoder, decoder, embeddings, heads, lora   (`group_of`)
    stages    [{name, steps, train: [groups], lr_scale, tasks}]                           (`stage_at`, `apply_stage`)

`gates` are the tanh gates of the gated cross-attention blocks, a group apart from the rest of `xattn` so they may
take their own learning rate (`optim.lr_scale.gates`, else xattn's); a stage that trains `xattn` trains them too.
"""

from __future__ import annotations

import math

from unified.errors import ConfigError
from unified.model.encoders import FrozenBackbone
from unified.training.config import GROUPS, TrainConfig


def group_of(name: str) -> str:
    """The parameter group a parameter belongs to (what stages freeze and unfreeze)."""
    if "lora_" in name:
        return "lora"
    if name.startswith("lm."):  # a pretrained backbone (unified.model.backbone): its own names under `lm.`
        rest = "." + name[3:]
        if "embed_tokens" in rest or ".shared." in rest:
            return "embeddings"
        if ".lm_head" in rest:
            return "heads"
        return "encoder" if ".encoder." in rest else "decoder"
    if ".xattn." in name:
        return "gates" if name.endswith(("attn_gate", "ff_gate")) else "xattn"
    if "resampler" in name:
        return "resampler"
    if name.startswith(("encoder.media", "encoder.time")):
        return "media"
    if name.startswith(("shared", "encoder.embed_tokens", "decoder.embed_tokens")):
        return "embeddings"
    if name.startswith(("lm_head", "embed_head")):
        return "heads"
    return "encoder" if name.startswith("encoder") else "decoder"


def stage_at(cfg: TrainConfig, step: int):
    end = 0
    for stage in cfg.stages:
        end = math.inf if stage.steps is None else end + stage.steps
        if step < end:
            return stage
    return cfg.stages[-1]


def apply_stage(model, stage) -> int:
    """Set requires_grad by group; returns how many parameters train. A pretrained backbone configured with
    `freeze: true` stays frozen whatever the stage trains (its projection trains with the `media` group)."""
    frozen = {id(p) for module in model.modules() if isinstance(module, FrozenBackbone) and module.freeze
              for p in module.backbone.parameters()}
    groups = set(stage.train) | ({"gates"} if "xattn" in stage.train else set())
    trained = 0
    for name, param in model.named_parameters():
        param.requires_grad_(group_of(name) in groups and id(param) not in frozen)
        trained += param.numel() if param.requires_grad else 0
    return trained


def decays(param) -> bool:
    """Whether AdamW's weight decay applies: to weight matrices (and embedding tables, conv kernels) only, never to
    norms, biases, gates, scales or the contrastive temperature, which are vectors or scalars (decaying them pulls
    norms and gates towards 0 rather than regularising)."""
    return param.ndim >= 2


def param_groups(model, lr: float, scales: dict[str, float], weight_decay: float = 0.0) -> list[dict]:
    """The optimizer's parameter groups, in a fixed order so a resumed optimizer state fits: per parameter group
    (`group_of`; learning rate lr x `optim.lr_scale`, 1 for groups not listed, `gates` as `xattn` unless listed;
    one group "all" without `lr_scale`), its matrices with `weight_decay` and its other parameters without
    (`decays`). Each group records its `name` and `decay`."""
    grouped: dict[str, list] = {}
    for name, param in model.named_parameters():
        grouped.setdefault(group_of(name) if scales else "all", []).append(param)

    def scale(group: str) -> float:
        return float(scales.get(group, scales.get("xattn", 1.0) if group == "gates" else 1.0))

    groups = []
    for g in sorted(grouped):
        for decay in (True, False):
            params = [p for p in grouped[g] if decays(p) == decay]
            if params:
                groups.append({"params": params, "lr": lr * scale(g), "name": g, "decay": decay,
                               "weight_decay": weight_decay if decay else 0.0})
    return groups


def _legacy_groups(model, scales: dict[str, float]) -> list[list]:
    """The parameter groups optimizer states were saved with before weight decay was split off: one list of every
    parameter without `lr_scale`, else one per parameter group in name order."""
    if not scales:
        return [list(model.parameters())]
    grouped: dict[str, list] = {}
    for name, param in model.named_parameters():
        grouped.setdefault(group_of(name), []).append(param)
    return [grouped[g] for g in sorted(grouped)]


def adapt_optimizer_state(state: dict, model, cfg: TrainConfig) -> dict:
    """An optimizer state saved with the earlier groups (weight decay on every parameter) mapped onto today's
    (`param_groups`): each parameter keeps its moments, step count and current learning rate; from here on only
    matrices decay. A state already in today's layout is returned as it is."""
    if all("decay" in g for g in state["param_groups"]):
        return state
    old = _legacy_groups(model, cfg.optim.lr_scale)
    if [len(g) for g in old] != [len(g["params"]) for g in state["param_groups"]]:
        return state  # not the layout this model had: loading it fails and names the mismatch
    where = {}  # id(param) -> (old group, old index)
    index = 0
    for k, params in enumerate(old):
        for param in params:
            where[id(param)] = (k, index)
            index += 1
    new_groups, new_state, index = [], {}, 0
    for group in param_groups(model, cfg.optim.lr, cfg.optim.lr_scale, cfg.optim.weight_decay):
        ids = []
        for param in group["params"]:
            k, old_index = where[id(param)]
            if old_index in state["state"]:
                new_state[index] = state["state"][old_index]
            ids.append(index)
            index += 1
        first = state["param_groups"][where[id(group["params"][0])][0]]
        new_groups.append({**first, "params": ids, "name": group["name"], "decay": group["decay"],
                           "weight_decay": group["weight_decay"], "initial_lr": group["lr"]})
    return {"state": new_state, "param_groups": new_groups}


def check_stage_groups(stages, model) -> None:
    """A stage that names parameter groups the model has no parameters in would train less than it says (the
    Flamingo recipe's `[resampler, xattn]` on a concat-fusion model trains no cross-attention): `ConfigError` naming
    the stage and the groups, before step 0. The default stage (every group) is exempt."""
    present = {group_of(name) for name, _ in model.named_parameters()}
    for i, stage in enumerate(stages):
        if sorted(stage.train) == sorted(GROUPS):
            continue
        absent = sorted(set(stage.train) - present)
        if absent:
            raise ConfigError(f"stages[{i}].train", absent, f"the model has no parameters in these groups (it has "
                              f"{sorted(present)}): a recipe for another architecture?")


def lr_factor(cfg: TrainConfig, step: int) -> float:
    o = cfg.optim
    warm = min(1.0, (step + 1) / max(1, o.warmup_steps))
    progress = min(1.0, max(0, step - o.warmup_steps) / max(1, o.max_steps - o.warmup_steps))
    return warm * 0.5 * (1 + math.cos(math.pi * progress)) * stage_at(cfg, step).lr_scale

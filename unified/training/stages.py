"""Stages and the schedule: which parameter group a parameter is in, which stage a step is in, what trains then,
and the learning-rate factor (linear warmup, cosine decay, the stage's scale).

    groups    media, resampler, xattn, gates, encoder, decoder, embeddings, heads, lora   (`group_of`)
    stages    [{name, steps, train: [groups], lr_scale, tasks}]                           (`stage_at`, `apply_stage`)

`gates` are the tanh gates of the gated cross-attention blocks, a group apart from the rest of `xattn` so they may
take their own learning rate (`optim.lr_scale.gates`, else xattn's); a stage that trains `xattn` trains them too.
"""

from __future__ import annotations

import math

from unified.training.config import TrainConfig


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
    from unified.model.encoders import FrozenBackbone

    frozen = {id(p) for module in model.modules() if isinstance(module, FrozenBackbone) and module.freeze
              for p in module.backbone.parameters()}
    groups = set(stage.train) | ({"gates"} if "xattn" in stage.train else set())
    trained = 0
    for name, param in model.named_parameters():
        param.requires_grad_(group_of(name) in groups and id(param) not in frozen)
        trained += param.numel() if param.requires_grad else 0
    return trained


def param_groups(model, lr: float, scales: dict[str, float]) -> list[dict]:
    """The optimizer's parameter groups: one per parameter group with its own learning rate (`optim.lr_scale`:
    lr x scale; 1 for groups not listed, `gates` as `xattn` unless listed), in a fixed order so a resumed optimizer
    state fits."""
    if not scales:
        return list(model.parameters())  # one group, as before per-group rates existed (resumes stay compatible)
    grouped: dict[str, list] = {}
    for name, param in model.named_parameters():
        grouped.setdefault(group_of(name), []).append(param)

    def scale(group: str) -> float:
        return float(scales.get(group, scales.get("xattn", 1.0) if group == "gates" else 1.0))

    return [{"params": grouped[g], "lr": lr * scale(g), "name": g} for g in sorted(grouped)]


def check_stage_groups(stages, model) -> None:
    """A stage that names parameter groups the model has no parameters in would train less than it says (the
    Flamingo recipe's `[resampler, xattn]` on a concat-fusion model trains no cross-attention): `ConfigError` naming
    the stage and the groups, before step 0. The default stage (every group) is exempt."""
    from unified.errors import ConfigError
    from unified.training.config import GROUPS

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

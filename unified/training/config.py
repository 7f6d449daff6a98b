"""The training config: nested dataclasses read from YAML (safe-loaded) with dotted `key=value` overrides.

    >>> cfg = load_config("training/configs/tiny-smoke.yaml", ["optim.max_steps=20", "mixture.strategy=uniform"])
    >>> cfg.optim.max_steps
    20

Unknown keys and values of the wrong type raise `ConfigError` naming the dotted key, before anything trains; so
does a setting that would be accepted and do nothing (`inert_settings`): model, tokenizer or processor settings next
to `model.init_from` (the saved model brings its own), cross-attention knobs under concat fusion, perceiver fields
under 3-D pooling, a dynamic mixture that never sees a held-out score.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from unified.errors import ConfigError
from unified.model.configuration import PRESETS
from unified.tokenizers.layout import VocabLayout

STRATEGIES = ("proportional", "temperature", "uniform", "weights", "annealed", "dynamic")
TRACKERS = ("auto", "none", "tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive")
FSDP_STRATEGIES = ("full_shard", "shard_grad_op")  # resharded after each forward, or kept gathered until backward
GROUPS = ("media", "resampler", "xattn", "gates", "encoder", "decoder", "embeddings", "heads", "lora")


@dataclass
class ModelSection:
    preset: str = "tiny"
    text: dict = field(default_factory=dict)  # overrides of the preset's sub-configs
    vision: dict = field(default_factory=dict)
    audio: dict = field(default_factory=dict)
    resampler: dict = field(default_factory=dict)
    fusion: dict = field(default_factory=dict)
    init_from: str | None = None  # a saved model directory to start from (its vocabulary and processor too)
    gradient_checkpointing: bool = False
    compile: bool = False


@dataclass
class SyntheticSection:
    n_train: int = 200
    n_eval: int = 40
    seed: int = 0


@dataclass
class DataSection:
    train_dir: str | None = None
    eval_dir: str | None = None
    # hold back this fraction of each task's training rows (seeded by `seed`) as the evaluation set when there is no
    # eval_dir: in-loop evaluation, `best/` and the dynamic mixture then read rows the model never trained on
    validation_split: float = 0.0
    synthetic: SyntheticSection | None = None  # written under output_dir/data when no train_dir is given
    tasks: list | None = None  # default: every task with a file
    budget: dict = field(default_factory=dict)  # media budget of every task of this data (`budgets` per task wins)
    skip_bad_rows: bool = False
    allow_outside_paths: bool = False  # relative media paths may leave the data file's directory (../x.mp4)
    check_media: bool = True  # decode every media file before step 0 (`unified data check`, cached beside the data)
    media_cache_mb: int = 2048  # decoded media kept in memory across epochs (`UnifiedProcessor.cache_media`); 0 = off
    num_workers: int = 0  # DataLoader processes that decode and collate batches (0: the training process does)
    prefetch: int = 2  # batches each worker prepares ahead
    length_buckets: int = 0  # sort rows by text length within chunks of this many steps' rows (0 = off)
    pack: bool = False  # several short rows per sequence, block-diagonal attention (`unified.packing`)


@dataclass
class TokenizerSection:
    path: str | None = None
    text_vocab_size: int = 400
    layout: dict = field(default_factory=dict)  # `VocabLayout` sizes: num_loc_bins, num_value_bins, ...


@dataclass
class ProcessorSection:
    image_size: int = 64
    video_fps: float = 4.0
    max_frames: int = 8
    fit: str = "fit"  # media over a budget: "fit" (frames spread evenly, audio cut; counted) or "error"


@dataclass
class MixtureSection:
    strategy: str = "proportional"
    temperature: float = 2.0  # "temperature": p ~ size ** (1 / T)
    weights: dict = field(default_factory=dict)  # "weights": explicit per-task sampling weights
    anneal_steps: int = 1000  # "annealed": proportional -> uniform over this many steps
    loss_weights: dict = field(default_factory=dict)  # per-task loss multipliers
    mixed_batches: bool = False  # True: each row's task drawn from the mixture (one forward for generative rows)


@dataclass
class OptimSection:
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    max_steps: int = 200
    batch_size: int = 8
    grad_accum: int = 1
    clip: float = 1.0
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    max_bad_steps: int = 5  # non-finite losses in a row before the run stops
    lr_scale: dict = field(default_factory=dict)  # parameter group -> lr multiplier, e.g. {encoder: 0.1, decoder: 0.1}
    ema: float = 0.0  # decay of an average of the weights served by evaluation, best/ and final/ (0 = off)


@dataclass
class Stage:
    name: str = "all"
    steps: int | None = None  # None: until max_steps
    train: list = field(default_factory=lambda: list(GROUPS))
    lr_scale: float = 1.0
    tasks: list | None = None  # None: the whole mixture; else batches come only from these tasks (a curriculum)


@dataclass
class LoraSection:
    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list = field(default_factory=list)  # [] = the model's own (`backbone.lora_targets`)
    groups: dict = field(default_factory=dict)  # task -> adapter name; a task not listed gets its own adapter


@dataclass
class FsdpSection:
    # shard the model over the ranks with FSDP2 (`unified.training.sharding`); accelerate's FSDP launch config
    # sets it too (training/accelerate/fsdp.yaml)
    enabled: bool = False
    strategy: str = "full_shard"  # or "shard_grad_op": parameters stay gathered from forward to backward


@dataclass
class EvalSection:
    every: int = 0  # 0: only at the end
    max_rows: int = 32
    batch_size: int = 16


@dataclass
class CheckpointSection:
    every: int = 100
    keep: int = 2


@dataclass
class TrainConfig:
    output_dir: str = "runs/default"
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    processor: ProcessorSection = field(default_factory=ProcessorSection)
    mixture: MixtureSection = field(default_factory=MixtureSection)
    optim: OptimSection = field(default_factory=OptimSection)
    stages: list = field(default_factory=lambda: [Stage()])
    eval: EvalSection = field(default_factory=EvalSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    lora: LoraSection = field(default_factory=LoraSection)  # per-task adapters (peft); "lora" is their stage group
    task_options: dict = field(default_factory=dict)  # e.g. {video_mcqa: {mode: rank, labels: [P, Q, R, S]}}
    ddp_find_unused_parameters: bool | None = None  # None: on only when some task leaves parameters unused
    fsdp: FsdpSection = field(default_factory=FsdpSection)
    budgets: dict = field(default_factory=dict)  # per task: {video_fps, max_frames, num_frames, max_audio_seconds, ...}
    log_every: int = 10
    log_with: str = "auto"  # accelerate trackers: "auto" (TensorBoard when installed), "none", or a tracker name

    def validate(self) -> TrainConfig:
        m, o = self.mixture, self.optim
        for key, value, ok, reason in number_rules(self):
            if value is not None and not ok(value):
                raise ConfigError(key, value, reason)
        cache = self.data.media_cache_mb
        if isinstance(cache, bool) or not isinstance(cache, int) or cache < 0:
            raise ConfigError("data.media_cache_mb", cache, "expected megabytes >= 0 (0 = no cache)")
        if m.strategy not in STRATEGIES:
            raise ConfigError("mixture.strategy", m.strategy, f"expected one of {STRATEGIES}")
        if m.strategy == "weights" and not m.weights:
            raise ConfigError("mixture.weights", m.weights, "strategy 'weights' needs a weight per task")
        if m.temperature <= 0:
            raise ConfigError("mixture.temperature", m.temperature, "expected > 0")
        for name, value in (("optim.max_steps", o.max_steps), ("optim.batch_size", o.batch_size),
                            ("optim.grad_accum", o.grad_accum), ("checkpoint.keep", self.checkpoint.keep)):
            if value < 1:
                raise ConfigError(name, value, "expected >= 1")
        if o.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError("optim.mixed_precision", o.mixed_precision, "expected 'no', 'bf16' or 'fp16'")
        bad = sorted(set(o.lr_scale) - set(GROUPS))
        if bad:
            raise ConfigError("optim.lr_scale", bad, f"unknown parameter groups; known: {GROUPS}")
        for group, scale in o.lr_scale.items():
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0:
                raise ConfigError(f"optim.lr_scale.{group}", scale, "expected a number >= 0")
        for i, stage in enumerate(self.stages):
            bad = sorted(set(stage.train) - set(GROUPS))
            if bad:
                raise ConfigError(f"stages[{i}].train", bad, f"unknown parameter groups; known: {GROUPS}")
        if self.mixture.mixed_batches and self.lora.enabled:
            raise ConfigError("mixture.mixed_batches", True, "per-task LoRA switches adapters per batch; use one task "
                              "per batch (mixed_batches: false) with lora.enabled")
        if self.fsdp.strategy not in FSDP_STRATEGIES:
            raise ConfigError("fsdp.strategy", self.fsdp.strategy, f"expected one of {FSDP_STRATEGIES}")
        if self.log_with not in TRACKERS:
            raise ConfigError("log_with", self.log_with, f"expected one of {TRACKERS}")
        if self.lora.enabled and self.lora.r < 1:
            raise ConfigError("lora.r", self.lora.r, "expected a rank >= 1")
        uses_lora = any("lora" in stage.train for stage in self.stages)
        if self.lora.enabled and not uses_lora:
            raise ConfigError("stages", [s.train for s in self.stages],
                              "lora.enabled but no stage trains the 'lora' group")
        d = self.data
        synthetic_eval = d.train_dir is None and d.synthetic is not None and d.synthetic.n_eval > 0
        if d.validation_split and (d.eval_dir is not None or synthetic_eval):
            raise ConfigError("data.validation_split", d.validation_split, "the run already has held-out rows ("
                              + ("data.eval_dir" if d.eval_dir is not None else "data.synthetic.n_eval")
                              + "): use one or the other")
        if self.data.train_dir is None and self.data.synthetic is None and self.model.init_from is None:
            raise ConfigError("data", "train_dir/synthetic", "give data.train_dir or a data.synthetic section")

        try:
            VocabLayout.from_dict(self.tokenizer.layout)
        except ConfigError as err:
            raise ConfigError(f"tokenizer.layout.{err.field}", err.value, err.reason) from None
        for name, value, reason in inert_settings(self):
            raise ConfigError(name, value, reason)
        return self


# ------------------------------------------------------------------------------------------------ number ranges
def number_rules(cfg: TrainConfig) -> list[tuple[str, Any, Any, str]]:
    """(dotted key, value, test, what is expected) for every number whose range is known: a negative learning
    rate or a dropout of 1.5 is refused before anything trains."""
    positive, at_least_0, at_least_1 = (lambda x: x > 0), (lambda x: x >= 0), (lambda x: x >= 1)
    o, d, p, lo = cfg.optim, cfg.data, cfg.processor, cfg.lora
    rules = [
        ("optim.lr", o.lr, positive, "expected a learning rate > 0"),
        ("optim.weight_decay", o.weight_decay, at_least_0, "expected >= 0"),
        ("optim.warmup_steps", o.warmup_steps, at_least_0, "expected steps >= 0"),
        ("optim.clip", o.clip, at_least_0, "expected a gradient-norm limit >= 0 (0 = no clipping)"),
        ("optim.max_bad_steps", o.max_bad_steps, at_least_1, "expected >= 1"),
        ("optim.ema", o.ema, lambda x: _real(x) and 0 <= x < 1, "expected a decay in [0, 1) (0 = no average)"),
        ("processor.image_size", p.image_size, at_least_1, "expected pixels >= 1"),
        ("processor.video_fps", p.video_fps, positive, "expected frames per second > 0"),
        ("processor.max_frames", p.max_frames, at_least_1, "expected >= 1"),
        ("tokenizer.text_vocab_size", cfg.tokenizer.text_vocab_size, lambda x: x >= 8, "expected >= 8 pieces"),
        ("mixture.anneal_steps", cfg.mixture.anneal_steps, at_least_1, "expected steps >= 1"),
        ("data.num_workers", d.num_workers, at_least_0, "expected worker processes >= 0 (0 = none)"),
        ("data.prefetch", d.prefetch, at_least_1, "expected batches per worker >= 1"),
        ("data.length_buckets", d.length_buckets, at_least_0, "expected steps per bucket >= 0 (0 = off)"),
        ("data.validation_split", d.validation_split, lambda x: _real(x) and 0 <= x < 1,
         "expected a fraction of the training rows in [0, 1) (0 = none)"),
        ("eval.every", cfg.eval.every, at_least_0, "expected steps >= 0 (0 = only at the end)"),
        ("eval.max_rows", cfg.eval.max_rows, at_least_1, "expected >= 1"),
        ("eval.batch_size", cfg.eval.batch_size, at_least_1, "expected >= 1"),
        ("checkpoint.every", cfg.checkpoint.every, at_least_0, "expected steps >= 0 (0 = only at the end)"),
        ("log_every", cfg.log_every, at_least_1, "expected steps >= 1"),
        ("lora.alpha", lo.alpha, positive, "expected > 0"),
        ("lora.dropout", lo.dropout, lambda x: 0 <= x < 1, "expected a probability in [0, 1)"),
        *[(f"mixture.loss_weights.{k}", v, lambda x: _real(x) and x >= 0, "expected a number >= 0")
          for k, v in cfg.mixture.loss_weights.items()],
        *[(f"mixture.weights.{k}", v, lambda x: _real(x) and x >= 0, "expected a number >= 0")
          for k, v in cfg.mixture.weights.items()],
    ]
    if d.synthetic is not None:
        rules += [("data.synthetic.n_train", d.synthetic.n_train, at_least_1, "expected rows >= 1"),
                  ("data.synthetic.n_eval", d.synthetic.n_eval, at_least_0, "expected rows >= 0")]
    for i, stage in enumerate(cfg.stages):
        rules += [(f"stages[{i}].steps", stage.steps, at_least_1, "expected steps >= 1 (or null: until the end)"),
                  (f"stages[{i}].lr_scale", stage.lr_scale, at_least_0, "expected a multiplier >= 0")]
    return rules


def _real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# ------------------------------------------------------------------------------------------------ inert settings
FUSION_XATTN_KNOBS = ("gate_init", "every_k_layers")  # act only where gated cross-attention blocks exist
RESAMPLER_FIELDS = {  # visual resampler mode -> the resampler fields it uses
    "global": {"mode", "num_latents", "depth", "num_heads", "head_dim"},
    "per_frame": {"mode", "latents_per_frame", "depth", "num_heads", "head_dim"},
    "pool3d": {"mode", "pool_frames", "pool_hw"},
}


def inert_settings(cfg: TrainConfig) -> list[tuple[str, Any, str]]:
    """(dotted key, value, why it would do nothing) for each setting this config gives that cannot act."""
    found = []
    if not cfg.fsdp.enabled and cfg.fsdp.strategy != FsdpSection.strategy:
        found.append(("fsdp.strategy", cfg.fsdp.strategy, "fsdp.enabled is false: nothing is sharded"))
    m = cfg.model
    if m.init_from:
        why = f"model.init_from={m.init_from!r} brings its own architecture, vocabulary and processor"
        acting = {"init_from", "gradient_checkpointing", "compile"}
        for section, default in (("model", ModelSection()), ("tokenizer", TokenizerSection()),
                                 ("processor", ProcessorSection())):
            given = getattr(cfg, section)
            for f in dataclasses.fields(given):
                value = getattr(given, f.name)
                if (section != "model" or f.name not in acting) and value != getattr(default, f.name):
                    found.append((f"{section}.{f.name}", value, f"{why}; remove it (or drop init_from)"))
        return found

    preset = PRESETS.get(m.preset, {})
    fusion = {**preset.get("fusion", {}), **m.fusion}
    if fusion.get("mode", "xattn") == "concat" and not fusion.get("in_decoder", False):
        for knob in FUSION_XATTN_KNOBS:
            if knob in m.fusion:
                reason = ("fusion.mode 'concat' builds no gated cross-attention (nor does the decoder without "
                          "fusion.in_decoder)")
                found.append((f"model.fusion.{knob}", m.fusion[knob], reason))
    mode = {**preset.get("resampler", {}), **m.resampler}.get("mode", "global")
    audio_perceiver = {**preset.get("audio", {}), **m.audio}.get("resampler", "perceiver") == "perceiver"
    used = set(RESAMPLER_FIELDS.get(mode, RESAMPLER_FIELDS["global"]))
    if audio_perceiver:
        used |= {"depth", "num_heads", "head_dim"}  # the audio perceiver shares them
    for key in sorted(set(m.resampler) - used):
        reason = f"resampler.mode {mode!r} does not use it" + ("" if audio_perceiver else
                                                                " (nor does audio.resampler 'pool')")
        found.append((f"model.resampler.{key}", m.resampler[key], reason))
    held_out = (cfg.data.eval_dir is not None or cfg.data.validation_split > 0
                or (cfg.data.synthetic is not None and cfg.data.synthetic.n_eval > 0))
    if cfg.mixture.strategy == "dynamic" and held_out and not cfg.eval.every:
        reason = ("mixture.strategy 'dynamic' follows held-out scores, measured every eval.every steps; with 0 it "
                  "would stay uniform: set eval.every")
        found.append(("eval.every", cfg.eval.every, reason))
    vocab_default = TokenizerSection.text_vocab_size
    if m.text.get("pretrained_path") and cfg.tokenizer.text_vocab_size != vocab_default:
        reason = ("a pretrained text backbone keeps its own tokenizer (tokenizer.path may name another directory "
                  "holding one)")
        found.append(("tokenizer.text_vocab_size", cfg.tokenizer.text_vocab_size, reason))
    elif cfg.tokenizer.path and (cfg.tokenizer.layout or cfg.tokenizer.text_vocab_size != vocab_default):
        reason = ("a saved tokenizer brings its own vocabulary size and layout: remove tokenizer.text_vocab_size / "
                  "tokenizer.layout")
        found.append(("tokenizer.path", cfg.tokenizer.path, reason))
    return found


# ------------------------------------------------------------------------------------------------ building
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_type(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        if value is None:
            return None
        return _check_type(key, value, options[0])
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is list and key.endswith("stages"):
        if not isinstance(value, list):
            raise ConfigError(key, value, "expected a list of stages")
        return [_build(Stage, v, f"{key}[{i}]") for i, v in enumerate(value)]
    expected = origin or hint
    if expected in (int, float, str, bool, list, dict) and (not isinstance(value, expected) or
                                                            (expected is int and isinstance(value, bool))):
        raise ConfigError(key, value, f"expected {expected.__name__}, got {type(value).__name__}")
    return value


def _build(cls, data: Any, prefix: str = ""):
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(prefix or "config", data, "expected a mapping")
    hints = _hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(", ".join(where + k for k in unknown), data[unknown[0]],
                          f"unknown key; known: {sorted(hints)}")
    values = {k: _check_type(f"{prefix}.{k}" if prefix else k, v, hints[k]) for k, v in data.items()}
    return cls(**values)


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(key, value, f"{part} is not a section")
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """YAML file (optional) + `key=value` overrides (values parsed as YAML: 3, 0.1, true, [a, b]) -> validated."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("config", str(path), "no such file")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:  # an object tag (!!python/object...) is refused here: safe_load builds none
            raise ConfigError("config", str(path), f"not valid YAML (object tags such as !!python are refused): "
                              f"{' '.join(str(err).split())}") from None
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError("override", item, "expected key=value, e.g. optim.lr=3e-4")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(key.strip(), raw, f"not a YAML value (tags such as !!python are refused): "
                              f"{' '.join(str(err).split())}") from None
        _set_dotted(data, key.strip(), value)
    return _build(TrainConfig, data).validate()


def to_dict(config: TrainConfig) -> dict:
    return dataclasses.asdict(config)


def add_resume_flags(parser) -> None:
    """--resume / --overwrite / --allow-changes, shared by `unified train` and `training/multitask.py`."""
    parser.add_argument("--resume", default="auto", help="'auto' (default: the latest checkpoint under output_dir, "
                        "if any), 'never' (refuse an output_dir holding a run), or a checkpoint directory")
    parser.add_argument("--overwrite", action="store_true", help="remove an earlier run's checkpoints and final/ "
                        "under output_dir and start afresh")
    parser.add_argument("--allow-changes", action="store_true", help="resume even though the config or the data "
                        "changed since the checkpoint (the changes are logged)")

"""The training config: nested dataclasses read from YAML (safe-loaded) with dotted `key=value` overrides.

    >>> cfg = load_config("training/configs/tiny-smoke.yaml", ["optim.max_steps=20", "mixture.strategy=uniform"])
    >>> cfg.optim.max_steps
    20

Unknown keys and values of the wrong type raise `ConfigError` naming the dotted key, before anything trains; so
does a setting that would be accepted and do nothing (`inert_settings`): model, tokenizer or processor settings next
to `model.init_from` (the saved model brings its own), cross-attention knobs under concat fusion, perceiver fields
under 3-D pooling, a dynamic mixture that never sees a held-out score, mixture settings the chosen strategy does
not read, `lora.*` without `lora.enabled`.

Each field is declared once with `unified.settings.setting(default, meaning)`; a `Literal[...]` annotation lists its
allowed values, which `validate` enforces and the generated configuration reference shows.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from unified.errors import ConfigError
from unified.model.configuration import PRESETS, PresetName
from unified.processing import ProcessorConfig
from unified.settings import check_choices, setting
from unified.tokenizers.layout import VocabLayout

Strategy = Literal["proportional", "temperature", "uniform", "weights", "annealed", "dynamic"]
Tracker = Literal["auto", "none", "tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive"]
FsdpStrategy = Literal["full_shard", "shard_grad_op"]  # resharded after each forward, or kept gathered until backward
DataFormat = Literal["tasks", "sharegpt", "openai", "llava"]
Group = Literal["media", "resampler", "xattn", "gates", "encoder", "decoder", "embeddings", "heads", "lora"]
FSDP_STRATEGIES, GROUPS = typing.get_args(FsdpStrategy), typing.get_args(Group)


@dataclass
class ModelSection:
    """`model`: which model to build (a preset with overrides) or to start from (`init_from`)."""

    preset: PresetName = setting("tiny", "the named size the model starts from (`UnifiedConfig.preset`)")
    text: dict = setting(doc="overrides of the preset's text settings (`model.text.*` below)", factory=dict)
    vision: dict = setting(doc="overrides of the preset's vision settings (`model.vision.*`)", factory=dict)
    audio: dict = setting(doc="overrides of the preset's audio settings (`model.audio.*`)", factory=dict)
    resampler: dict = setting(doc="overrides of the preset's resampler settings (`model.resampler.*`)",
                              factory=dict)
    fusion: dict = setting(doc="overrides of the preset's fusion settings (`model.fusion.*`)", factory=dict)
    init_from: str | None = setting(None, "a saved model directory to start from; it brings its architecture, "
                                          "vocabulary and processor")
    gradient_checkpointing: bool = setting(False, "recompute activations in the backward pass to save memory")
    compile: bool = setting(False, "`torch.compile` the training step (with graph breaks where media are spliced)")
    quantize: Literal["none", "int8", "nf4"] = setting("none", "QLoRA: the frozen base's encoder and decoder linears "
                                                               "in int8 (torchao) or nf4 (bitsandbytes), CPU or CUDA, "
                                                               "under LoRA adapters")


@dataclass
class SyntheticSection:
    """`data.synthetic`: clips of the synthetic world, written under `output_dir/data` when no `train_dir` is given."""

    n_train: int = setting(200, "training clips (each gives rows for every task)")
    n_eval: int = setting(40, "held-out clips (the test split: new clips of the same world)")
    seed: int = setting(0, "seed of the clips; the same seed writes the same clips")


@dataclass
class DataSection:
    """`data`: where rows come from and how batches are prepared."""

    train_dir: str | None = setting(None, "a data directory (one file per task: vqa.jsonl, grounding.csv...) or "
                                          "tar shards from `unified data shard`")
    eval_dir: str | None = setting(None, "held-out rows in the same layout, for in-loop evaluation and `best/`")
    validation_split: float = setting(0.0, "without an eval_dir: hold back this fraction of each task's training "
                                           "rows (drawn with `seed`) as the held-out set")
    synthetic: SyntheticSection | None = setting(None, "write synthetic-world clips when no train_dir is given")
    tasks: list[str] | None = setting(None, "the tasks to train; null: every task with a file in train_dir")
    format: DataFormat = setting("tasks", "what train_dir / eval_dir are: data directories (tasks), or one "
                                          "conversation file each, mapped to rows by `unified data import`'s rule")
    media_root: str | None = setting(None, "the folder a conversation file's media paths are relative to "
                                           "(default: the file's folder)")
    budget: dict = setting(doc="a media budget for every task of the data (`video_fps`, `max_frames`...); a task's "
                               "own `budgets` entry wins", factory=dict)
    skip_bad_rows: bool = setting(False, "leave out bad rows and undecodable media (reported) instead of stopping")
    allow_outside_paths: bool = setting(False, "relative media paths may leave the data file's directory (../x.mp4)")
    check_media: bool = setting(True, "decode every media file once before step 0 (cached beside the data)")
    media_cache_mb: int = setting(2048, "decoded media kept in memory across epochs, in MiB (0 = off)")
    num_workers: int = setting(0, "DataLoader processes that decode and collate batches (0: the training process)")
    prefetch: int = setting(2, "batches each worker prepares ahead")
    length_buckets: int = setting(0, "sort rows by text length within chunks of this many steps' rows (0 = off)")
    pack: bool = setting(False, "pack several short rows per sequence with block-diagonal attention")
    pack_length: int | None = setting(None, "token-budget packing: prompt tokens of one pack (the encoder length "
                                            "before media are spliced in); null packs within each batch")
    pack_target_length: int | None = setting(None, "token-budget packing: target tokens of one pack (the decoder "
                                                   "length)")
    pack_max_visual: int = setting(4, "token-budget packing: most images and videos in one pack")
    pack_max_audio: int = setting(4, "token-budget packing: most audio items in one pack")


@dataclass
class TokenizerSection:
    """`tokenizer`: a saved vocabulary, or one trained on the run's rows."""

    path: str | None = setting(None, "a saved tokenizer directory (or a text backbone's tokenizer to wrap)")
    text_vocab_size: int = setting(400, "SentencePiece pieces when the vocabulary is trained on the rows")
    layout: dict = setting(doc="bin counts of the numbered tokens (`VocabLayout`: num_loc_bins, num_value_bins, "
                               "num_int_tokens, num_time_bins)", factory=dict)


@dataclass
class ProcessorSection:
    """`processor`: how media become tensors (per-task overrides: `budgets`)."""

    image_size: int = setting(64, "frame side in pixels (a pretrained vision encoder fixes it)")
    video_fps: float = setting(4.0, "frames sampled per second of video")
    max_frames: int = setting(8, "most frames per video; longer clips are fitted (see `fit`)")
    fit: Literal["fit", "error"] = setting("fit", "media over a budget: fitted (frames spread evenly, audio cut; "
                                                  "counted) or an error")


@dataclass
class MixtureSection:
    """`mixture`: how often each task is drawn, and how its loss is weighted."""

    strategy: Strategy = setting("proportional", "how a batch's task is drawn (see Training: the mixture)")
    temperature: float = setting(2.0, "strategy temperature (p ~ size ** (1 / T)) and dynamic (softmax "
                                      "temperature of the losses)")
    weights: dict[str, float] = setting(doc="strategy weights: the sampling weight of every task", factory=dict)
    anneal_steps: int = setting(1000, "strategy annealed: steps from proportional to uniform")
    loss_weights: dict[str, float] = setting(doc="per-task loss multipliers", factory=dict)
    mixed_batches: bool = setting(False, "draw each row's task from the mixture (one forward pass for generative "
                                         "rows) instead of one task per batch")


@dataclass
class OptimSection:
    """`optim`: AdamW, linear warmup then cosine decay."""

    lr: float = setting(1e-3, "peak learning rate")
    weight_decay: float = setting(0.01, "AdamW weight decay of weight matrices (norms, biases, gates and scales "
                                        "take none)")
    warmup_steps: int = setting(50, "steps of linear warmup before the cosine decay")
    max_steps: int = setting(200, "optimizer steps of the run")
    batch_size: int = setting(8, "rows per batch on each process")
    grad_accum: int = setting(1, "batches whose gradients are added before each optimizer step")
    clip: float = setting(1.0, "gradient-norm limit (0 = no clipping)")
    mixed_precision: Literal["no", "bf16", "fp16"] = setting("no", "autocast dtype of the training step")
    max_bad_steps: int = setting(5, "non-finite losses in a row before the run stops with a checkpoint")
    lr_scale: dict[Group, float] = setting(doc="parameter group -> learning-rate multiplier, e.g. {encoder: 0.1}; "
                                               "gates follow xattn unless given", factory=dict)
    ema: float = setting(0.0, "decay of an average of the weights that evaluation, best/ and final/ serve "
                              "(0 = off; `unified.training.ema`)")


@dataclass
class Stage:
    """One entry of `stages`: which parameter groups train, for how long, on which tasks."""

    name: str = setting("all", "shown in logs")
    steps: int | None = setting(None, "steps of this stage (null: until max_steps)")
    train: list[Group] = setting(doc="parameter groups that train; the others are frozen", factory=lambda: list(GROUPS))
    lr_scale: float = setting(1.0, "learning-rate multiplier of the whole stage")
    tasks: list[str] | None = setting(None, "draw batches only from these tasks (a curriculum); null: the mixture")


@dataclass
class LoraSection:
    """`lora`: per-task LoRA adapters through peft (a stage with `train: [lora]` keeps the base frozen)."""

    enabled: bool = setting(False, "attach adapters; the other lora.* settings act only with it")
    r: int = setting(8, "adapter rank")
    alpha: int = setting(16, "adapter scaling numerator (scale = alpha / r)")
    dropout: float = setting(0.0, "dropout on the adapter's input")
    target_modules: list[str] = setting(doc="module names to adapt ([] = the model's own projections, a text "
                                            "backbone's by its family)", factory=list)
    groups: dict[str, str] = setting(doc="task -> adapter name; tasks sharing a name share an adapter, a task "
                                         "not listed gets its own", factory=dict)


@dataclass
class FsdpSection:
    """`fsdp`: shard the model over the ranks with FSDP2 (or launch with training/accelerate/fsdp.yaml)."""

    enabled: bool = setting(False, "shard parameters, gradients and optimizer state over the ranks")
    strategy: FsdpStrategy = setting("full_shard", "full_shard: reshard after each forward; shard_grad_op: keep "
                                                   "parameters gathered until the backward")


@dataclass
class EvalSection:
    """`eval`: in-loop evaluation on the held-out rows."""

    every: int = setting(0, "steps between evaluations (0 = only at the end); the best model goes to `best/`")
    max_rows: int = setting(32, "held-out rows per task at each evaluation")
    batch_size: int = setting(16, "rows per evaluation batch")


@dataclass
class CheckpointSection:
    """`checkpoint`: resumable checkpoints under `output_dir/checkpoints`."""

    every: int = setting(100, "steps between checkpoints (0 = only at the end)")
    keep: int = setting(2, "newest checkpoints kept")


@dataclass
class TrainConfig:
    """The whole training config; `load_config` reads it from YAML with dotted overrides and validates it."""

    output_dir: str = setting("runs/default", "where checkpoints, best/, final/ and the run's reports go")
    seed: int = setting(0, "seed of initialisation, sampling and the validation split")
    model: ModelSection = setting(doc="the model", factory=ModelSection)
    data: DataSection = setting(doc="the rows", factory=DataSection)
    tokenizer: TokenizerSection = setting(doc="the vocabulary", factory=TokenizerSection)
    processor: ProcessorSection = setting(doc="media to tensors", factory=ProcessorSection)
    mixture: MixtureSection = setting(doc="task sampling", factory=MixtureSection)
    optim: OptimSection = setting(doc="the optimizer and schedule", factory=OptimSection)
    stages: list[Stage] = setting(doc="training stages, run in order", factory=lambda: [Stage()])
    eval: EvalSection = setting(doc="in-loop evaluation", factory=EvalSection)
    checkpoint: CheckpointSection = setting(doc="checkpoints", factory=CheckpointSection)
    lora: LoraSection = setting(doc="per-task adapters (\"lora\" is their stage group)", factory=LoraSection)
    task_options: dict = setting(doc="each task's constructor options, e.g. {video_mcqa: {mode: rank}}; saved with "
                                     "the model", factory=dict)
    ddp_find_unused_parameters: bool | None = setting(None, "DDP's unused-parameter search (null: on only when "
                                                            "some task leaves parameters without a gradient)")
    fsdp: FsdpSection = setting(doc="sharding", factory=FsdpSection)
    budgets: dict = setting(doc="per-task media budgets: {task: {video_fps, max_frames, num_frames, "
                                "max_audio_seconds, image_size, max_length, fit, transcribe}}", factory=dict)
    log_every: int = setting(10, "steps between updates of the progress bar's per-task losses")
    log_with: Tracker = setting("auto", "accelerate trackers: auto (TensorBoard when installed), none, or a name")

    def validate(self) -> TrainConfig:
        m, o = self.mixture, self.optim
        check_choices(self)  # every Literal field, stages included: the allowed values are declared once, above
        for key, value, ok, reason in number_rules(self):
            if value is not None and not ok(value):
                raise ConfigError(key, value, reason)
        check_budgets(self)
        cache = self.data.media_cache_mb
        if isinstance(cache, bool) or not isinstance(cache, int) or cache < 0:
            raise ConfigError("data.media_cache_mb", cache, "expected megabytes >= 0 (0 = no cache)")
        if m.strategy == "weights" and not m.weights:
            raise ConfigError("mixture.weights", m.weights, "strategy 'weights' needs a weight per task")
        if m.temperature <= 0:
            raise ConfigError("mixture.temperature", m.temperature, "expected > 0")
        for name, value in (("optim.max_steps", o.max_steps), ("optim.batch_size", o.batch_size),
                            ("optim.grad_accum", o.grad_accum), ("checkpoint.keep", self.checkpoint.keep)):
            if value < 1:
                raise ConfigError(name, value, "expected >= 1")
        for group, scale in o.lr_scale.items():
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0:
                raise ConfigError(f"optim.lr_scale.{group}", scale, "expected a number >= 0")
        if self.mixture.mixed_batches and self.lora.enabled:
            raise ConfigError("mixture.mixed_batches", True, "per-task LoRA switches adapters per batch; use one task "
                              "per batch (mixed_batches: false) with lora.enabled")
        if self.data.pack and self.data.pack_length is not None and self.lora.enabled:
            raise ConfigError("data.pack_length", self.data.pack_length, "per-task LoRA switches adapters per batch, "
                              "and a token-budget batch mixes the tasks its packs hold; pack within batches "
                              "(no pack_length) with lora.enabled")
        if self.lora.enabled and self.lora.r < 1:
            raise ConfigError("lora.r", self.lora.r, "expected a rank >= 1")
        uses_lora = any("lora" in stage.train for stage in self.stages)
        if self.lora.enabled and not uses_lora:
            raise ConfigError("stages", [s.train for s in self.stages],
                              "lora.enabled but no stage trains the 'lora' group")
        check_quantize(self)
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


# ------------------------------------------------------------------------------------------------ QLoRA
QUANTIZED_GROUPS = ("encoder", "decoder", "xattn")  # the groups holding the linears `model.quantize` freezes


def check_quantize(cfg: TrainConfig) -> None:
    """`model.quantize` trains LoRA adapters on a frozen quantised base: it needs adapters, stages that leave the
    quantised groups frozen, and the library (and device) of its scheme. `ConfigError` naming what is missing."""
    scheme = cfg.model.quantize
    if scheme == "none":
        return
    if not cfg.lora.enabled:
        raise ConfigError("model.quantize", scheme, "quantises the frozen base that LoRA adapters train on: set "
                          "lora.enabled: true and a stage training [lora]")
    trained = sorted({g for stage in cfg.stages for g in stage.train if g in QUANTIZED_GROUPS})
    if trained:
        raise ConfigError("stages", trained, f"model.quantize: {scheme} keeps the encoder and decoder linears frozen "
                          f"in {scheme}; stages may train {', '.join(g for g in GROUPS if g not in QUANTIZED_GROUPS)}")
    if cfg.fsdp.enabled:
        raise ConfigError("fsdp.enabled", True, f"model.quantize: {scheme} is not sharded; train it with DDP or "
                          "one process")
    if scheme == "nf4":
        if not _importable("bitsandbytes"):
            raise ConfigError("model.quantize", scheme, "QLoRA's 4-bit NormalFloat base needs bitsandbytes "
                              "(pip install 'unified[quant]'); int8 (torchao) is the other choice")
        return
    if not _importable("torchao"):
        raise ConfigError("model.quantize", scheme, "needs torchao (pip install 'unified[quant]')")


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


# ------------------------------------------------------------------------------------------------ number ranges
def check_budgets(cfg: TrainConfig) -> None:
    """Each media budget's fields and values, as the processor will read them, when the config loads (not at the
    first batch, after the model was built): `ConfigError` naming `budgets.<task>.<field>` or `data.budget.<field>`."""
    if not isinstance(cfg.budgets, dict) or not all(isinstance(b, dict) for b in cfg.budgets.values()):
        raise ConfigError("budgets", cfg.budgets, "expected {task: {budget field: value}}")
    p = cfg.processor
    base = dict(image_size=p.image_size, video_fps=p.video_fps, max_frames=p.max_frames, fit=p.fit)
    checks = [("data.budget", {"all tasks": cfg.data.budget})]
    checks += [("budgets", {task: {**cfg.data.budget, **b}}) for task, b in cfg.budgets.items()]
    for prefix, budgets in checks:
        try:
            ProcessorConfig(**base, budgets=budgets).validate()
        except ConfigError as err:
            field = err.field.removeprefix("budgets.all tasks.") if prefix == "data.budget" else \
                err.field.removeprefix("budgets.")
            raise ConfigError(f"{prefix}.{field}", err.value, err.reason) from None
    speech = sorted(task for task, b in cfg.budgets.items() if b.get("transcribe", cfg.data.budget.get("transcribe")))
    if cfg.data.pack_length and (speech or cfg.data.budget.get("transcribe")):
        raise ConfigError("data.pack_length", cfg.data.pack_length,
                          "token-budget packing measures a row by its prompt text, before transcripts are added "
                          f"(transcribe in the budget of {speech or 'every task'}): pack without transcribe, or "
                          "batch rows unpacked")



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
        ("data.pack_max_visual", d.pack_max_visual, at_least_1, "expected items per pack >= 1"),
        ("data.pack_max_audio", d.pack_max_audio, at_least_1, "expected items per pack >= 1"),
        *[(f"data.{key}", getattr(d, key), at_least_1, "expected tokens per pack >= 1")
          for key in ("pack_length", "pack_target_length") if getattr(d, key) is not None],
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
MIXTURE_READERS = {  # mixture setting -> the strategies that read it (`unified.training.mixture.TaskSampler`)
    "temperature": ("temperature", "dynamic"),
    "weights": ("weights",),
    "anneal_steps": ("annealed",),
}
RESAMPLER_FIELDS = {  # visual resampler mode -> the resampler fields it uses
    "global": {"mode", "num_latents", "depth", "num_heads", "head_dim"},
    "per_frame": {"mode", "latents_per_frame", "depth", "num_heads", "head_dim"},
    "pool3d": {"mode", "pool_frames", "pool_hw"},
}


def inert_settings(cfg: TrainConfig) -> list[tuple[str, Any, str]]:
    """(dotted key, value, why it would do nothing) for each setting this config gives that cannot act."""
    found = []
    if cfg.data.format == "tasks" and cfg.data.media_root is not None:
        found.append(("data.media_root", cfg.data.media_root, "data.format is 'tasks': data files hold media paths "
                      "relative to themselves"))
    if not cfg.fsdp.enabled and cfg.fsdp.strategy != FsdpSection.strategy:
        found.append(("fsdp.strategy", cfg.fsdp.strategy, "fsdp.enabled is false: nothing is sharded"))
    strategy, default_mixture = cfg.mixture.strategy, MixtureSection()
    for key, readers in MIXTURE_READERS.items():
        value = getattr(cfg.mixture, key)
        if strategy not in readers and value != getattr(default_mixture, key):
            reason = f"mixture.strategy {strategy!r} does not read it (only {' / '.join(readers)} do)"
            found.append((f"mixture.{key}", value, reason))
    d, default_data = cfg.data, DataSection()
    budget = ("pack_length", "pack_target_length", "pack_max_visual", "pack_max_audio")
    for key in budget:
        value = getattr(d, key)
        if value != getattr(default_data, key) and not (d.pack and d.pack_length is not None):
            found.append((f"data.{key}", value, "token-budget packing is off: it needs data.pack: true with "
                                                "data.pack_length and data.pack_target_length"))
    if d.pack and (d.pack_length is None) != (d.pack_target_length is None):
        given, missing = ("pack_length", "pack_target_length") if d.pack_length is not None else (
            "pack_target_length", "pack_length")
        found.append((f"data.{given}", getattr(d, given), f"token-budget packing needs data.{missing} too"))
    if not cfg.lora.enabled:
        default_lora = LoraSection()
        for f in dataclasses.fields(LoraSection):
            value = getattr(cfg.lora, f.name)
            if f.name != "enabled" and value != getattr(default_lora, f.name):
                found.append((f"lora.{f.name}", value, "lora.enabled is false: no adapter is attached"))
    m = cfg.model
    if m.init_from:
        why = f"model.init_from={m.init_from!r} brings its own architecture, vocabulary and processor"
        acting = {"init_from", "gradient_checkpointing", "compile", "quantize"}
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
    """`value` as the annotation `hint` wants it (sections built, ints where floats go made floats), or a
    `ConfigError` naming `key`. Literal values are checked by `validate` (`check_choices`), once for every path."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        return _check_type(key, value, next(h for h in args if h is not type(None)))
    if origin is Literal:
        return value
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    expected = origin or hint
    if expected in (int, float, str, bool, list, dict) and (not isinstance(value, expected) or
                                                            (expected is int and isinstance(value, bool))):
        raise ConfigError(key, value, f"expected {expected.__name__}, got {type(value).__name__}")
    if expected is list and args and dataclasses.is_dataclass(args[0]):  # stages: a list of sections
        return [_build(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
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
                        "if any; a damaged one stops the run, naming its file), 'last-intact' (the newest checkpoint "
                        "that is intact, saying which step it restarts from), 'never' (refuse an output_dir holding "
                        "a run), or a checkpoint directory")
    parser.add_argument("--overwrite", action="store_true", help="remove an earlier run's checkpoints and final/ "
                        "under output_dir and start afresh")
    parser.add_argument("--allow-changes", action="store_true", help="resume even though the config or the data "
                        "changed since the checkpoint (the changes are logged)")

"""What a run trains: the vocabulary, the processor and the model, from `model.init_from` or built fresh, and the
checks that need them before step 0 (`preflight`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from unified.data.files import SUFFIXES
from unified.errors import ConfigError, InputError
from unified.local_dirs import check_saved_model
from unified.model import UnifiedConfig, UnifiedModel
from unified.model.adapters import load_saved_adapters
from unified.model.pretrained import image_processor_settings
from unified.model.quantization import describe, load_quantized, quantize_linears, read_quantization
from unified.processing import PROCESSOR_CONFIG, ProcessorConfig, UnifiedProcessor
from unified.task_zoo import fit_tasks
from unified.task_zoo.base import NthPrompt
from unified.task_zoo.decoding import constraint
from unified.tokenizers import UnifiedTokenizer, VocabLayout
from unified.tokenizers.backbone import BackboneTokenizer, load_tokenizer
from unified.training.batches import Plan, prepare
from unified.training.checkpoint import rng_state, set_rng_state
from unified.training.config import TrainConfig, load_config
from unified.training.data import tokenizer_corpus
from unified.training.loss import batch_loss
from unified.training.stages import group_of


def build_stack(cfg: TrainConfig, train_rows: dict[str, list], log=print, weights_from: str | Path | None = None):
    """(tokenizer, processor, model) from `weights_from` (a checkpoint being resumed), else `model.init_from`, else
    built fresh (vocabulary trained on the rows). The config is read, never changed."""
    budgets = media_budgets(cfg, train_rows)
    source = weights_from or cfg.model.init_from
    if source:
        if not weights_from:  # a resumed checkpoint was checked whole by the run (`checkpoint_damage`)
            check_saved_model(source, "model.init_from", model_type=UnifiedModel.config_class.model_type)
        processor = UnifiedProcessor.from_pretrained(source)
        if budgets:  # the run's budgets replace the saved ones (a fine-tune may sample differently)
            processor.config = replace(processor.config, budgets=budgets).validate()
        quantized = read_quantization(source)
        if quantized and quantized.get("scheme") != cfg.model.quantize:
            raise ConfigError("model.init_from", str(source), f"is quantised ({quantized.get('scheme')}): train "
                              f"adapters on it with model.quantize: {quantized.get('scheme')} (QLoRA), or start from "
                              "the unquantised model")
        if quantized:
            model = load_quantized(source, torch.float32, UnifiedModel)
        else:  # float32 master weights whatever the saved dtype (the shipped model is bf16); autocast does the rest
            model = UnifiedModel.from_pretrained(source, dtype=torch.float32)
        load_saved_adapters(model, source)
        return processor.tokenizer, processor, quantize_base(model, cfg.model.quantize)
    backbone = cfg.model.text.get("pretrained_path")
    if cfg.model.text.get("backbone") and not backbone:
        raise ConfigError("model.text.backbone", "...", "set model.text.pretrained_path (the backbone's directory); "
                          "text.backbone is filled from it")
    if backbone:  # the backbone's own tokenizer, its ids kept, our ranges appended (`BackboneTokenizer`)
        tokenizer = BackboneTokenizer.from_backbone(backbone, VocabLayout.from_dict(cfg.tokenizer.layout),
                                                    tokenizer_path=cfg.tokenizer.path)
        log(f"vocabulary: the backbone's {tokenizer.base} ids + {tokenizer.vocab_size - tokenizer.base} appended")
    elif cfg.tokenizer.path:
        tokenizer = load_tokenizer(cfg.tokenizer.path)
    else:
        layout = VocabLayout.from_dict(cfg.tokenizer.layout)
        corpus = tokenizer_corpus(train_rows, fit_tasks(train_rows, cfg.task_options, layout)[0], seed=cfg.seed)
        tokenizer = UnifiedTokenizer.train(corpus, text_vocab_size=cfg.tokenizer.text_vocab_size, layout=layout,
                                           hard_vocab_limit=False)
        log(f"vocabulary: {tokenizer.vocab_size} ids, trained on {len(corpus)} texts")
    p, m = cfg.processor, cfg.model
    config = UnifiedConfig.preset(
        m.preset,
        text={"ordinal_ranges": tokenizer.ordinal_ranges,
              "value_ids": [tokenizer.val_ids.start, tokenizer.val_ids.stop],
              **m.text, "vocab_size": tokenizer.vocab_size,
              "image_token_id": tokenizer.image_token_id, "video_token_id": tokenizer.video_token_id,
              "audio_token_id": tokenizer.audio_token_id},
        vision={"image_size": p.image_size, "max_frames": max(p.max_frames, 8, *_budget_frames(budgets)), **m.vision},
        audio=m.audio, resampler=m.resampler, fusion=m.fusion)
    config.validate()
    audio_settings = {"n_mels": int(config.audio.backbone["num_mel_bins"])} if config.audio.backbone else {}
    processor = UnifiedProcessor(tokenizer, image_size=p.image_size, video_fps=p.video_fps, max_frames=p.max_frames,
                                 fit=p.fit, budgets=budgets, **audio_settings,  # the audio encoder's mel bins
                                 **vision_processor_settings(config, p.image_size, log))
    torch.manual_seed(cfg.seed)
    model = UnifiedModel.from_pretrained_parts(config)  # weights of each configured pretrained_path copied in
    return tokenizer, processor, quantize_base(model, cfg.model.quantize)


def quantize_base(model: UnifiedModel, scheme: str) -> UnifiedModel:
    """QLoRA's frozen base (`model.quantize`): the encoder and decoder linears quantised in place, before adapters
    are attached over them; recorded in the config so checkpoints save and load it quantised."""
    if scheme == "none" or getattr(model.config, "quantization", None):
        return model
    model.config.quantization = describe(scheme, quantize_linears(model, scheme))
    return model


def media_budgets(cfg: TrainConfig, train_rows: dict[str, list]) -> dict[str, dict[str, Any]]:
    """{task: its media budget}: `data.budget` for every task of the data, each task's `budgets` entry on top.
    A budget for a task the run does not train raises `ConfigError`; field values are checked by the processor."""
    stray = sorted(set(cfg.budgets) - set(train_rows))
    if stray:
        raise ConfigError("budgets", stray, f"budgets for tasks this run does not have; it has {sorted(train_rows)}")
    budgets = {name: {**cfg.data.budget, **cfg.budgets.get(name, {})} for name in train_rows}
    budgets = {name: b for name, b in budgets.items() if b}
    ProcessorConfig(image_size=cfg.processor.image_size, budgets=budgets).validate()  # names budgets.<task>.<field>
    sized = sorted(name for name, b in budgets.items() if "image_size" in b)
    if sized and cfg.mixture.mixed_batches:
        raise ConfigError("budgets", sized, "a per-task image_size needs one task per batch (a batch holds one frame "
                          "size); set mixture.mixed_batches: false")
    patch = int(cfg.model.vision.get("patch_size", 16))
    for name in sized:
        size = budgets[name]["image_size"]
        if cfg.model.vision.get("pretrained_path") or size % patch:
            raise ConfigError(f"budgets.{name}.image_size", size, f"the vision encoder takes frames of "
                              f"{cfg.processor.image_size} px or any smaller multiple of its patch size {patch} "
                              "(a pretrained encoder: only its own size)")
    return budgets


def _budget_frames(budgets: dict[str, dict[str, Any]]) -> list[int]:
    return [int(b.get("num_frames") or b.get("max_frames") or 0) for b in budgets.values()]


def vision_processor_settings(config, image_size: int, log=print) -> dict[str, Any]:
    """A pretrained vision encoder's own normalisation (its `preprocessor_config.json`), for the processor; a
    processor frame size the encoder does not take raises `ConfigError` before anything trains."""
    v = config.vision
    if not v.backbone:
        return {}
    wanted = int(v.backbone.get("image_size", image_size))
    if image_size != wanted:
        raise ConfigError("processor.image_size", image_size,
                          f"the vision encoder ({v.backbone.get('model_type')}) takes {wanted} px frames; "
                          f"set processor.image_size={wanted}")
    settings = image_processor_settings(v.pretrained_path) if v.pretrained_path else {}
    if "image_mean" not in settings:
        log(f"vision encoder: no image_mean/std in {v.pretrained_path}/preprocessor_config.json; using 0.5 / 0.5")
    return {key: settings[key] for key in ("image_mean", "image_std") if key in settings}


def preflight(tasks, rows: dict[str, list], processor) -> None:
    """What would otherwise fail mid-run or at the first evaluation, hours in, checked before step 0; each raises
    `ConfigError` naming the task and the row:
    - every row of a task answered under its grammar gets a decoding constraint from this vocabulary (two options
      that encode alike raise);
    - under a `max_length` budget (prompt tokens; text is never cut), every row's longest prompt fits it;
    - fields a task reads from the media agree with them (`Task.complete`: a grounding row's `image_size` and its
      image), the media read once into the processor's cache, which training then reads from."""
    tokenizer = processor.tokenizer
    for name, task in tasks.items():
        limit = processor.settings(name).max_length
        for row in rows.get(name, []):
            where = f"task {name!r} ({row.get('_source', 'a row')})"
            try:
                task.complete(row, processor)
            except InputError as err:
                raise ConfigError(where, err.value, f"{err.what}: {err.reason} (found before training)") from err
            if task.answer_mode == "generate":
                try:
                    constraint(task, row, tokenizer)
                except InputError as err:
                    raise ConfigError(where, err.value, f"{err.reason} (found before training)") from err
            if limit is not None:
                longest = max(len(tokenizer.encode(task.prompt(row, task.media_of(row), NthPrompt(i))))
                              for i in range(len(task.prompts)))
                if longest > limit:
                    raise ConfigError(where, longest, f"its longest prompt has {longest} tokens, over the budget's "
                                      f"max_length={limit}; raise it (prompts are never cut)")



def unused_parameters(cfg: TrainConfig, model: torch.nn.Module, tasks: dict[str, Any], rows: dict[str, list],
                      processor: Any) -> dict[str, list[str]]:
    """{task: trainable parameters its batches leave without a gradient}, from one forward and backward pass of
    one row of each task (the media a task has not, the contrastive head under a generative task...). DDP must
    look for unused parameters every step when any task leaves some out; when none does it need not. The global
    RNG, the gradients and the processor's counters are as they were afterwards."""
    device = next(model.parameters()).device
    state, fitted = rng_state(), processor.fitted.copy()  # every generator, the GPU's too
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    unused = {}
    try:
        for name in sorted(tasks):
            if not rows.get(name):
                continue
            prepared = prepare(tasks, processor, [(name, rows[name][0])] * 2, None, Plan(0, 0, ((name, 0),) * 2))
            loss, _ = batch_loss(cfg, tasks, prepared, model, device)
            loss.backward()
            unused[name] = sorted(n for n, p in trainable.items() if p.grad is None)
            model.zero_grad(set_to_none=True)
    finally:
        set_rng_state(state)
        processor.fitted.clear()
        processor.fitted.update(fitted)
    return unused


def processor_settings(source: str | Path, data_dir: str | Path, tasks: Sequence[str] | None = None) -> Any:
    """The `ProcessorConfig` that `--decode` samples with: a saved model's or processor's directory, or a training
    YAML (its `processor` section and media budgets over the data's tasks, as training builds it)."""
    source = Path(source)
    if source.is_dir():
        if not (source / PROCESSOR_CONFIG).is_file():
            raise InputError("--decode", str(source), f"no {PROCESSOR_CONFIG} in this directory")
        return UnifiedProcessor.from_pretrained(source).config
    cfg = load_config(source)
    names = list(tasks) if tasks is not None else sorted(p.stem for p in Path(data_dir).iterdir()
                                                         if p.suffix in SUFFIXES)
    p = cfg.processor
    return ProcessorConfig(image_size=p.image_size, video_fps=p.video_fps, max_frames=p.max_frames, fit=p.fit,
                           budgets=media_budgets(cfg, {n: [] for n in names})).validate()


def check_run_settings(cfg: TrainConfig, model: Any, tasks: dict[str, Any]) -> None:
    """Settings that would be accepted and do nothing in this run, found once the model and the tasks are known:
    `ConfigError` naming each, before step 0."""
    unknown = sorted(set(cfg.mixture.loss_weights) - set(tasks))
    if unknown:
        raise ConfigError("mixture.loss_weights", unknown, f"names no task of this run; it trains {sorted(tasks)}")
    present = {group_of(name) for name, _ in model.named_parameters()}
    empty = sorted(set(cfg.optim.lr_scale) - present)
    if empty:
        raise ConfigError("optim.lr_scale", empty, f"the model has no parameters in these groups (it has "
                          f"{sorted(present)}): the rate would apply to nothing")
    for i, stage in enumerate(cfg.stages):
        unknown = sorted(set(stage.tasks or []) - set(tasks))
        if unknown or stage.tasks == []:
            raise ConfigError(f"stages[{i}].tasks", stage.tasks, f"not in the training data's tasks {sorted(tasks)}")
    if cfg.data.pack and all(task.own_loss for task in tasks.values()):
        raise ConfigError("data.pack", True, f"nothing to pack: every task of this run ({sorted(tasks)}) has its "
                          "own loss, trained on whole batches of its rows that are never packed")


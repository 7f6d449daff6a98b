"""The multitask training loop, written once: `accelerate launch training/multitask.py --config C` and
`unified train C` both run `train(config)`.

    for step in range(start, max_steps):
        stage = the stage this step is in (its tasks, which parameter groups train, its learning-rate scale)
        task  = sampler.sample(step, only=stage.tasks)     # the mixture strategy; one task per batch
                (mixture.mixed_batches: a task per row, contrastive tasks still a whole batch)
        rows  = stream.batch(task, batch_size, rank, world)
        loss  = loss_weight[task] * task_loss(task, model, processor, rows)   (optim.grad_accum such batches)
        backward, clip, AdamW step, warmup + cosine schedule  (a non-finite loss skips the step and is counted)
        every eval.every steps: task metrics + integral score on held-out rows; the best is kept in best/
        every checkpoint.every steps: an atomic checkpoint (model, optimizer, scheduler, sampler, rows, RNG)

A run whose output directory holds checkpoints resumes from the newest one and follows the same trajectory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from unified.errors import ConfigError, InputError, UnifiedError
from unified.model.adapters import TaskAdapters, load_saved_adapters
from unified.saving import write_servable
from unified.training.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from unified.training.config import TrainConfig, to_dict
from unified.training.data import RowStream, load_training_data, tokenizer_corpus
from unified.training.mixture import TaskSampler


class TrainingError(UnifiedError):
    """The run cannot go on (non-finite losses, a mis-launched multi-process run); the message says why."""


# ------------------------------------------------------------------------------------------------ pieces
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
        return "xattn"
    if "resampler" in name:
        return "resampler"
    if name.startswith("encoder.media") or name.startswith("encoder.time"):
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
    trained = 0
    for name, param in model.named_parameters():
        param.requires_grad_(group_of(name) in stage.train and id(param) not in frozen)
        trained += param.numel() if param.requires_grad else 0
    return trained


def lr_factor(cfg: TrainConfig, step: int) -> float:
    o = cfg.optim
    warm = min(1.0, (step + 1) / max(1, o.warmup_steps))
    progress = min(1.0, max(0, step - o.warmup_steps) / max(1, o.max_steps - o.warmup_steps))
    return warm * 0.5 * (1 + math.cos(math.pi * progress)) * stage_at(cfg, step).lr_scale


def build_stack(cfg: TrainConfig, train_rows: dict[str, list], log=print):
    """(tokenizer, processor, model) from `model.init_from` or built fresh (vocabulary trained on the rows)."""
    from unified.model import UnifiedConfig, UnifiedModel
    from unified.processing import UnifiedProcessor
    from unified.task_zoo import build_tasks
    from unified.tokenizers import UnifiedTokenizer, VocabLayout

    if cfg.model.init_from:
        processor = UnifiedProcessor.from_pretrained(cfg.model.init_from)
        # float32 master weights whatever the saved dtype (the shipped model is bf16); autocast does the rest
        model = UnifiedModel.from_pretrained(cfg.model.init_from, dtype=torch.float32)
        load_saved_adapters(model, cfg.model.init_from)
        return processor.tokenizer, processor, model
    if cfg.model.text.get("pretrained_path") or cfg.model.text.get("backbone"):
        # Our vocabulary would give the backbone's embedding rows other texts' ids: refuse rather than train that.
        raise ConfigError("model.text.pretrained_path", cfg.model.text.get("pretrained_path"),
                          "training on a pretrained text backbone needs a vocabulary that keeps its tokenizer's ids, "
                          "which the training loop does not build yet; use UnifiedModel.from_pretrained_parts from "
                          "Python with your own ids")
    if cfg.tokenizer.path:
        tokenizer = UnifiedTokenizer.from_pretrained(cfg.tokenizer.path)
    else:
        layout = VocabLayout.from_dict(cfg.tokenizer.layout)
        corpus = tokenizer_corpus(train_rows, build_tasks(train_rows, cfg.task_options, layout), seed=cfg.seed)
        tokenizer = UnifiedTokenizer.train(corpus, text_vocab_size=cfg.tokenizer.text_vocab_size, layout=layout,
                                           hard_vocab_limit=False)
        log(f"vocabulary: {tokenizer.vocab_size} ids, trained on {len(corpus)} texts")
    p, m = cfg.processor, cfg.model
    config = UnifiedConfig.preset(
        m.preset,
        text={"ordinal_ranges": tokenizer.ordinal_ranges, **m.text, "vocab_size": tokenizer.vocab_size,
              "image_token_id": tokenizer.image_token_id, "video_token_id": tokenizer.video_token_id,
              "audio_token_id": tokenizer.audio_token_id},
        vision={"image_size": p.image_size, "max_frames": max(p.max_frames, 8), **m.vision},
        audio=m.audio, resampler=m.resampler, fusion=m.fusion)
    config.validate()
    processor = UnifiedProcessor(tokenizer, image_size=p.image_size, video_fps=p.video_fps, max_frames=p.max_frames,
                                 **vision_processor_settings(config, p.image_size, log))
    torch.manual_seed(cfg.seed)
    model = UnifiedModel.from_pretrained_parts(config)  # weights of each configured pretrained_path copied in
    return tokenizer, processor, model


def vision_processor_settings(config, image_size: int, log=print) -> dict[str, Any]:
    """A pretrained vision encoder's own normalisation (its `preprocessor_config.json`), for the processor; a
    processor frame size the encoder does not take raises `ConfigError` before anything trains."""
    from unified.model.pretrained import image_processor_settings

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


def preflight(tasks, rows: dict[str, list], tokenizer) -> None:
    """What would otherwise fail at the first evaluation, hours in, checked before step 0: every row of a task
    answered under its grammar gets a decoding constraint from this vocabulary (two options that encode alike
    raise `ConfigError` naming the task and the row)."""
    from unified.task_zoo.decoding import constraint

    for name, task in tasks.items():
        if task.answer_mode != "generate":
            continue
        for row in rows.get(name, []):
            try:
                constraint(task, row, tokenizer)
            except InputError as err:
                raise ConfigError(f"task {name!r} ({row.get('_source', 'a row')})", err.value,
                                  f"{err.reason} (found before training)") from err


def batch_loss(cfg: TrainConfig, tasks, sampler, stream, model, processor, step: int, rng: random.Random,
               accelerator, seen: list[str], only: list[str] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """One batch's loss and {task: its loss}: one task per batch, or (`mixture.mixed_batches`) each row's task drawn
    from the mixture, contrastive tasks still a whole batch. `only`: the stage's tasks (None: all)."""
    from unified.task_zoo.batching import mixed_loss, task_loss

    rank, world = accelerator.process_index, accelerator.num_processes
    whole = [name for name, task in tasks.items() if task.contrastive]  # InfoNCE needs a whole batch
    drawn = sampler.batch_tasks(step, cfg.optim.batch_size, mixed=cfg.mixture.mixed_batches, only=only,
                                whole=whole)
    if len(set(drawn)) == 1:
        name = drawn[0]
        rows = stream.batch(name, cfg.optim.batch_size, rank, world)
        seen.extend(row.get("_source", "") for row in rows)
        loss = task_loss(tasks[name], model, processor, rows, rng=rng, device=accelerator.device)
        loss = loss * float(cfg.mixture.loss_weights.get(name, 1.0))
        return loss, {name: float(loss.detach())}
    named_rows = []
    for name in dict.fromkeys(drawn):  # each task's rows in one take, so ranks still split them
        rows = stream.batch(name, drawn.count(name), rank, world)
        seen.extend(row.get("_source", "") for row in rows)
        named_rows += [(name, row) for row in rows]
    return mixed_loss(tasks, named_rows, model, processor, rng=rng, device=accelerator.device,
                      loss_weights=cfg.mixture.loss_weights)


def trackers(log_with: str) -> list[str] | None:
    """The accelerate trackers for `log_with`: "auto" = TensorBoard when it is installed, "none" = none."""
    if log_with == "none":
        return None
    if log_with == "auto":
        from accelerate.utils import is_tensorboard_available

        return ["tensorboard"] if is_tensorboard_available() else None
    return [log_with]


def _flat(data: dict, prefix: str = "") -> dict[str, Any]:
    # TensorBoard's hparams take scalars and strings only
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value, default=str)
    return out


def _check_world(accelerator) -> None:
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise TrainingError(f"the launcher started {launched} processes but this one sees a world of "
                            f"{accelerator.num_processes}: each process would train alone on the same data. On CPU "
                            "use `ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N ...`")


def _plot(history: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for task in sorted({h["task"] for h in history}):
        points = [(h["step"], h["loss"]) for h in history if h["task"] == task and math.isfinite(h["loss"])]
        smooth, xs, ys = None, [], []
        for step, loss in points:
            smooth = loss if smooth is None else 0.9 * smooth + 0.1 * loss
            xs.append(step)
            ys.append(smooth)
        ax.plot(xs, ys, label=task)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (EMA)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------------ the loop
def train(cfg: TrainConfig, *, progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Run (or resume) training; returns a summary. `stop_after` ends the process's work after that many steps
    (for tests of resuming)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from unified.task_zoo import build_tasks

    out = Path(cfg.output_dir)
    ckpt_root = out / "checkpoints"
    accelerator = Accelerator(mixed_precision=cfg.optim.mixed_precision, log_with=trackers(cfg.log_with),
                              project_dir=str(out),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    _check_world(accelerator)
    main = accelerator.is_main_process
    log = (lambda msg: tqdm.write(f"[train] {msg}")) if main else (lambda msg: None)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    with accelerator.main_process_first():  # rank 0 writes synthetic data once; the others then read it
        train_rows, eval_rows = load_training_data(cfg, log)
    resume = latest_checkpoint(ckpt_root)
    if resume is not None:
        cfg.model.init_from = str(resume)
        log(f"resuming from {resume}")
    tokenizer, processor, model = build_stack(cfg, train_rows, log)
    if cfg.data.media_cache_mb:
        processor.cache_media(cfg.data.media_cache_mb * 2**20)  # each clip decoded once, not once per epoch
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    tasks = build_tasks(train_rows, cfg.task_options, tokenizer.layout)  # the one place a run's tasks are built
    preflight(tasks, {n: [*train_rows.get(n, []), *eval_rows.get(n, [])] for n in tasks}, tokenizer)
    served = {name: dict(cfg.task_options.get(name, {})) for name in tasks}  # saved: what the model can be asked
    if cfg.lora.enabled and getattr(model, "task_adapters", None) is None:
        lo = cfg.lora
        adapters = TaskAdapters.attach(model, tasks, lo.groups, r=lo.r, alpha=lo.alpha, dropout=lo.dropout,
                                       target_modules=lo.target_modules)
        log(f"LoRA: adapters {', '.join(adapters.names)} (r={lo.r}) on {', '.join(lo.target_modules)}")
    for i, st in enumerate(cfg.stages):
        unknown = sorted(set(st.tasks or []) - set(tasks))
        if unknown or st.tasks == []:
            raise ConfigError(f"stages[{i}].tasks", st.tasks, f"not in the training data's tasks {sorted(tasks)}")
    sampler = TaskSampler({t: len(r) for t, r in train_rows.items()}, cfg.mixture.strategy,
                          temperature=cfg.mixture.temperature, weights=cfg.mixture.weights,
                          anneal_steps=cfg.mixture.anneal_steps, seed=cfg.seed)
    stream = RowStream(train_rows, seed=cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step))
    start, best, bad_in_row, skipped, history = 0, -1.0, 0, 0, []
    if resume is not None:
        state = load_trainer_state(resume)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        stream.load_state_dict(state["stream"])
        set_rng_state(state["rng"])
        start, best, skipped, history = state["step"], state["best"], state["skipped"], state["history"]
    if cfg.model.compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    core = accelerator.unwrap_model(model)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2, default=str))
    if accelerator.log_with:
        accelerator.init_trackers("logs", config=_flat(to_dict(cfg)))  # OUTPUT/logs/ for TensorBoard

    def trainer_state(step: int) -> dict[str, Any]:
        return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "sampler": sampler.state_dict(), "stream": stream.state_dict(), "rng": rng_state(),
                "best": best, "skipped": skipped, "history": history}

    def checkpoint(step: int, name: str | None = None) -> None:
        if main:
            save_checkpoint(ckpt_root if name is None else out, step, core, processor, trainer_state(step),
                            keep=cfg.checkpoint.keep, name=name, task_options=served)
        accelerator.wait_for_everyone()

    def evaluate_now(step: int) -> float | None:
        nonlocal best
        if not eval_rows or not main:
            return None
        from unified.task_zoo.evaluation import evaluate

        result = evaluate(core, processor, eval_rows, max_rows=cfg.eval.max_rows, batch_size=cfg.eval.batch_size,
                          task_options=cfg.task_options, progress=False)
        for name, metrics in result.metrics.items():
            if name in sampler.losses and cfg.mixture.strategy == "dynamic":
                sampler.observe(name, 1.0 - result.scores[name])  # low held-out score -> sampled more
        if accelerator.log_with:
            accelerator.log({"eval/integral": result.integral, **{f"eval/{n}": v for n, v in result.scores.items()}},
                            step=step)
        log(f"step {step}: integral {result.integral:.3f}  " +
            "  ".join(f"{n} {s:.2f}" for n, s in result.scores.items()))
        with open(out / "eval.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "integral": result.integral, "metrics": result.metrics}) + "\n")
        if result.integral > best:
            best = result.integral
            save_checkpoint(out, step, core, processor, {}, name="best", task_options=served)
        return result.integral

    stage = None
    bar = tqdm(total=cfg.optim.max_steps, initial=start, desc="train", unit="step", disable=not (progress and main))
    recent: dict[str, float] = {}
    seen: list[str] = []  # the rows this process trained on (written per rank at the end)
    started, steps_done = time.perf_counter(), 0
    model.train()
    for step in range(start, cfg.optim.max_steps):
        if stage is not stage_at(cfg, step):
            stage = stage_at(cfg, step)
            log(f"stage {stage.name!r} from step {step}: {apply_stage(core, stage) / 1e6:.2f} M parameters train")
        done_micro, bad = [], None
        for micro in range(cfg.optim.grad_accum):  # each micro-batch is one task's batch; gradients add up
            prompt_rng = random.Random((cfg.seed * 1_000_003 + step) * 64 + micro)
            with accelerator.autocast():
                loss, parts = batch_loss(cfg, tasks, sampler, stream, model, processor, step, prompt_rng,
                                         accelerator, seen, only=stage.tasks)
            value = float(loss.detach())
            if not math.isfinite(value):
                bad = ", ".join(parts)
                break
            last = micro == cfg.optim.grad_accum - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(model):  # DDP syncs on the last only
                accelerator.backward(loss / cfg.optim.grad_accum)
            done_micro.extend(parts.items())
        if bad is not None:
            skipped += 1
            bad_in_row += 1
            optimizer.zero_grad(set_to_none=True)
            log(f"step {step}: non-finite loss on {bad}; step skipped ({bad_in_row} in a row)")
            if bad_in_row >= cfg.optim.max_bad_steps:
                checkpoint(step)
                raise TrainingError(f"{bad_in_row} non-finite losses in a row (last on task {bad!r}) at step "
                                    f"{step}; a checkpoint was written to {ckpt_root}. Lower optim.lr or check "
                                    "the data")
            scheduler.step()
            continue
        bad_in_row = 0
        if cfg.optim.clip:
            accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.optim.clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        for name, value in done_micro:
            if cfg.mixture.strategy == "dynamic" and not eval_rows:  # no held-out rows: training loss drives it
                sampler.observe(name, value)
            history.append({"step": step, "task": name, "loss": value})
            if accelerator.log_with:
                accelerator.log({f"loss/{name}": value, "lr": scheduler.get_last_lr()[0]}, step=step)
            recent[name] = value if name not in recent else 0.9 * recent[name] + 0.1 * value
        bar.update(1)
        if (step + 1) % max(1, cfg.log_every) == 0:
            bar.set_postfix_str(" ".join(f"{t[:8]} {v:.2f}" for t, v in sorted(recent.items())))
        done = step + 1
        if cfg.eval.every and done % cfg.eval.every == 0 and done < cfg.optim.max_steps:
            evaluate_now(done)
            model.train()
        if cfg.checkpoint.every and done % cfg.checkpoint.every == 0:
            checkpoint(done)
        steps_done += 1
        if stop_after is not None and steps_done >= stop_after:
            bar.close()
            return {"step": done, "stopped": True}
    bar.close()
    end = cfg.optim.max_steps
    final = evaluate_now(end)
    checkpoint(end)
    if main:
        write_servable(out / "final", core, processor, served)  # unified.Model answers as it was trained
    _write_rank_report(out, accelerator, core, seen)
    summary = summarise(history, sampler, skipped, time.perf_counter() - started, final, best)
    if main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        _plot(history, out / "loss.png")
        log("\n" + summary_table(summary))
    accelerator.end_training()
    return summary


def _write_rank_report(out: Path, accelerator, model, seen: list[str]) -> None:
    """OUTPUT/ranks/rank-R.json: the world size, the rows this rank trained on and a parameter checksum, so a
    multi-process run can be checked (ranks saw different rows and ended with the same weights)."""
    folder = out / "ranks"
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        checksum = float(sum(p.double().abs().sum() for p in model.parameters()))
    report = {"rank": accelerator.process_index, "world_size": accelerator.num_processes, "rows": seen,
              "param_checksum": checksum}
    (folder / f"rank-{accelerator.process_index}.json").write_text(json.dumps(report))


def summarise(history, sampler, skipped, seconds, final, best) -> dict[str, Any]:
    per_task = {}
    for task in sampler.tasks:
        losses = [h["loss"] for h in history if h["task"] == task]
        k = max(1, len(losses) // 10)
        per_task[task] = {"batches": len(losses), "first_loss": sum(losses[:k]) / k if losses else None,
                          "last_loss": sum(losses[-k:]) / k if losses else None}
    return {"steps": len({h["step"] for h in history}), "skipped_steps": skipped, "seconds": round(seconds, 1), "tasks": per_task,
            "final_integral": final, "best_integral": best if best >= 0 else None}


def summary_table(summary: dict[str, Any]) -> str:
    lines = [f"{'task':<20} {'batches':>8} {'first loss':>11} {'last loss':>10}"]
    for task, t in summary["tasks"].items():
        first = "-" if t["first_loss"] is None else f"{t['first_loss']:.3f}"
        last = "-" if t["last_loss"] is None else f"{t['last_loss']:.3f}"
        lines.append(f"{task:<20} {t['batches']:>8} {first:>11} {last:>10}")
    lines.append(f"{summary['steps']} steps in {summary['seconds']} s, {summary['skipped_steps']} skipped; "
                 f"final integral {summary['final_integral']}, best {summary['best_integral']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`unified train CONFIG [key=value ...]` / `training/multitask.py --config CONFIG [key=value ...]`."""
    import argparse

    from unified.training.config import load_config

    parser = argparse.ArgumentParser(prog="unified train", description="Multitask training from a YAML config.")
    parser.add_argument("config", nargs="?", default=None)
    parser.add_argument("--config", dest="config_flag", default=None)
    parser.add_argument("overrides", nargs="*", help="dotted key=value, e.g. optim.max_steps=100")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.config_flag and args.config:  # `--config C a=b`: the positional slot caught the first override
        overrides.insert(0, args.config)
    path = args.config_flag or args.config
    if path is None:
        raise ConfigError("config", None, "give a YAML config: unified train training/configs/tiny-smoke.yaml")
    train(load_config(path, overrides))
    return 0

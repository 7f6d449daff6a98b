"""The multitask training loop, written once: `accelerate launch training/multitask.py --config C` and
`unified train C` both run `train(config)`.

    run = Run(cfg)                          # set up in named steps (below), or resume
    for step in range(run.start, max_steps):
        run.enter_stage(step)               # which parameter groups train, the stage's tasks
        run.step(step)                      # grad_accum batches -> backward -> clip -> AdamW -> schedule
        every eval.every steps:       run.evaluate(step)     task metrics + integral score; best kept in best/
        every checkpoint.every steps: run.checkpoint(step)   atomic: model, optimizer, scheduler, sampler, rows, RNG
    run.finish()                            # last evaluation and checkpoint, final/, the report

Set-up, in order (each a method of `Run`): `setup_accelerator` (how the run was launched), `setup_data` (rows,
their fingerprint), `find_resume` (which checkpoint, if any), `setup_model` (vocabulary, processor, model, tasks,
adapters, the pre-flight checks), `setup_mixture` (task sampler, row stream, batch planner), `setup_optimizer`
(sharding, AdamW groups, schedule), `load_state` (a resumed run's trainer state), `prepare` (DDP / compile),
`setup_output` (config.json, callbacks, progress bar, the batch loader). Cross-cutting features are callbacks
(`unified.training.callbacks`: trackers, best/, loss.png, the EMA of `optim.ema`), not edits to this loop.

One batch (`unified.training.loss.batch_loss`): one task drawn by the mixture (or, with `mixture.mixed_batches`,
a task per row, contrastive tasks still a whole batch), its rows from the stream, `loss_weight[task] * loss`. What
each batch holds is planned here; its media are decoded and its tensors made in `data.num_workers` DataLoader
workers (`unified.training.batches`), the plans not yet trained saved with every checkpoint.
A non-finite loss skips the step and is counted. A run whose output directory holds checkpoints resumes from the
newest one and follows the same trajectory; its saved config.json stays the user's config.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from tqdm.auto import tqdm

from unified.errors import ConfigError, InputError, TrainingError
from unified.model.adapters import TaskAdapters
from unified.model.backbone import lora_targets
from unified.saving import write_servable
from unified.task_zoo import fit_tasks
from unified.task_zoo.evaluation import evaluate
from unified.task_zoo.registry import task_sources
from unified.training.batches import PlannedBatches, Planner, Prepared, batch_loader
from unified.training.build import build_stack, check_run_settings, preflight, unused_parameters
from unified.training.callbacks import Callback, Callbacks, KeepBest, LossPlot, Trackers
from unified.training.checkpoint import (
    FINGERPRINT,
    PREFIX,
    RUN_OUTPUTS,
    checkpoint_damage,
    fingerprint,
    fingerprint_changes,
    fixed_changes,
    kill_point,
    latest_checkpoint,
    load_trainer_state,
    newest_intact,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from unified.training.config import TrainConfig, add_resume_flags, load_config, to_dict
from unified.training.data import RowStream, load_training_data, text_lengths
from unified.training.ema import EMA
from unified.training.launch import check_fsdp, fsdp_strategy
from unified.training.loss import batch_loss
from unified.training.mixture import TaskSampler
from unified.training.packing import measure_row
from unified.training.report import summarise, summary_table, trackers, write_rank_report
from unified.training.sharding import Sharding, param_checksum
from unified.training.stages import (
    adapt_optimizer_state,
    apply_stage,
    check_stage_groups,
    lr_factor,
    param_groups,
    stage_at,
)

__all__ = ["Run", "TrainingError", "main", "train"]

LAST_INTACT = "last-intact"  # --resume: the newest checkpoint that passes `checkpoint_damage`


class Run:
    """One training run's state and its parts: set-up (`__init__`, in named steps), `step`, `evaluate`,
    `checkpoint`, `finish`. `callbacks` are added after the built-in ones (see `unified.training.callbacks`)."""

    def __init__(self, cfg: TrainConfig, *, progress: bool = True, resume: str = "auto", overwrite: bool = False,
                 allow_changes: bool = False, callbacks: Sequence[Callback] = ()):
        self.cfg, self.out = cfg, Path(cfg.output_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.config_dict = to_dict(cfg)  # what config.json holds: the user's config, also on resume
        _check_resume(resume, overwrite, self.ckpt_root)  # before any data is read or written
        self.setup_accelerator()
        self.setup_data()
        resume_from = self.find_resume(resume, overwrite, allow_changes)
        if resume_from is not None:
            self.log(f"resuming from {resume_from}")
        self.setup_model(resume_from)
        self.setup_mixture()
        self.setup_optimizer()
        self.callbacks = Callbacks([*([EMA(cfg.optim.ema)] if cfg.optim.ema else []), Trackers(), KeepBest(),
                                    LossPlot(), *callbacks])
        self.start, self.bad_in_row, self.skipped, self.history = 0, 0, 0, []
        if resume_from is not None:
            self.load_state(resume_from)
        self.prepare()
        self.setup_output(progress)

    # ------------------------------------------------------------------------------------------------ set-up
    def setup_accelerator(self) -> None:
        """The accelerator, how the run shards (`unified.training.launch`), the seeds."""
        cfg = self.cfg
        self.ddp = DistributedDataParallelKwargs(find_unused_parameters=True)  # decided before prepare()
        self.accelerator = Accelerator(mixed_precision=cfg.optim.mixed_precision, log_with=trackers(cfg.log_with),
                                       project_dir=str(self.out), kwargs_handlers=[self.ddp])
        self.fsdp = fsdp_strategy(cfg, self.accelerator)
        self.main = self.accelerator.is_main_process
        self.log = (lambda msg: tqdm.write(f"[train] {msg}")) if self.main else (lambda msg: None)
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)

    def setup_data(self) -> None:
        """Training and held-out rows (rank 0 writes synthetic data once; the others then read it)."""
        with self.accelerator.main_process_first():
            self.train_rows, self.eval_rows = load_training_data(self.cfg, self.log)
        self.fingerprint = fingerprint(self.cfg, self.train_rows, self.eval_rows)

    def setup_model(self, resume_from: Path | None) -> None:
        """Vocabulary, processor and model (from the checkpoint being resumed, `model.init_from`, or fresh), the
        run's tasks with what they fit on the training rows, LoRA adapters, and the checks that need them."""
        cfg = self.cfg
        self.tokenizer, self.processor, model = build_stack(cfg, self.train_rows, self.log, weights_from=resume_from)
        if cfg.data.media_cache_mb:  # each clip decoded once, not per epoch; each worker holds its share
            self.processor.cache_media(cfg.data.media_cache_mb * 2**20 // max(1, cfg.data.num_workers))
        if cfg.model.gradient_checkpointing:
            # transformers >= 5.2x renamed it activation_checkpointing_enable (the old name warns)
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        # the run's tasks, with what they learn from the training rows (a fitted scaler) in `served`: what the
        # saved model can be asked, and how it reads its inputs
        self.tasks, self.served = fit_tasks(self.train_rows, cfg.task_options, self.tokenizer.layout)
        preflight(self.tasks, {n: [*self.train_rows.get(n, []), *self.eval_rows.get(n, [])] for n in self.tasks},
                  self.processor)
        if cfg.lora.enabled and getattr(model, "task_adapters", None) is None:
            lo = cfg.lora
            targets = lo.target_modules or lora_targets(model.config)  # a text backbone: its family's names
            adapters = TaskAdapters.attach(model, self.tasks, lo.groups, r=lo.r, alpha=lo.alpha, dropout=lo.dropout,
                                           target_modules=targets)
            self.log(f"LoRA: adapters {', '.join(adapters.names)} (r={lo.r}) on {', '.join(targets)}")
        check_stage_groups(cfg.stages, model)
        check_run_settings(cfg, model, self.tasks)
        self.network = model  # the unwrapped model until `prepare`

    def setup_mixture(self) -> None:
        """The task sampler, the row stream and the planner that says what each micro-batch holds."""
        cfg, m = self.cfg, self.cfg.mixture
        self.sampler = TaskSampler({t: len(r) for t, r in self.train_rows.items()}, m.strategy,
                                   temperature=m.temperature, weights=m.weights, anneal_steps=m.anneal_steps,
                                   seed=cfg.seed)
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.stream = self._row_stream(self.world)
        self.planner = Planner(cfg, self.sampler, self.stream, self.tasks, self.rank, self.world,
                               measure=self._measure)

    def _measure(self, task: str, index: int, rng) -> tuple[int, int, int, int]:
        """A training row's size as token-budget packing counts it (`unified.training.packing.measure_row`)."""
        return measure_row(self.tasks[task], self.train_rows[task][index], self.tokenizer, rng)

    def setup_optimizer(self) -> None:
        """FSDP sharding (before the optimizer: it must hold the shards), AdamW over the parameter groups (weight
        decay on matrices only), the warmup-cosine schedule."""
        cfg, model = self.cfg, self.network
        self.sharding, self.stale = None, True  # stale: the main process's unsharded copy lags the shards
        if self.fsdp and self.world == 1:
            self.log("fsdp.enabled with one process: nothing to shard, the model trains whole")
        elif self.fsdp:
            check_fsdp(cfg)
            self.sharding = Sharding.apply(model, self.fsdp, self.accelerator.device, keep_copy=self.main)
            self.log(f"FSDP ({self.fsdp}): {self.sharding.units} layers and the rest of the model sharded over "
                     f"{self.world} ranks")
        groups = param_groups(model, cfg.optim.lr, cfg.optim.lr_scale, cfg.optim.weight_decay)
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(cfg, step))

    def load_state(self, checkpoint: Path) -> None:
        """A resumed run's optimizer, schedule, sampler, row stream, RNG, planner, callbacks and history."""
        state = load_trainer_state(checkpoint)
        model = self.network
        optimizer_state = adapt_optimizer_state(state["optimizer"], model, self.cfg)  # from before decay groups
        try:
            if self.sharding is not None:
                self.sharding.load_optimizer_state(model, self.optimizer, optimizer_state)
            else:
                self.optimizer.load_state_dict(optimizer_state)
        except (ValueError, KeyError, IndexError) as err:  # another parameter layout: from before a model change
            raise InputError(str(checkpoint), "trainer.pt", f"its optimizer state does not fit this model's "
                             f"parameters ({err}); start from its weights instead: model.init_from={checkpoint} "
                             f"in a new output_dir") from None
        groups = self.optimizer.param_groups  # the schedule keeps one rate per group, as the optimizer now has them
        self.scheduler.load_state_dict({**state["scheduler"], "base_lrs": [g["initial_lr"] for g in groups],
                                        "_last_lr": [g["lr"] for g in groups]})
        self.sampler.load_state_dict(state["sampler"])
        self.stream.load_state_dict(state["stream"])
        set_rng_state(state["rng"])
        self.start, self.skipped = state["step"], state["skipped"]
        self.planner.load_state_dict(state.get("planner", {"next": [self.start, 0], "pending": []}))
        self.history = state["history"]
        self.callbacks.load_state_dict({"best": {"best": state["best"]}, **state.get("callbacks", {})})

    def prepare(self) -> None:
        """DDP's unused-parameter search (only when some task needs it), torch.compile, accelerate's wrapping."""
        model = self.network
        if self.world > 1 and self.sharding is None:
            self.ddp.find_unused_parameters = self._find_unused(model)
        if self.cfg.model.compile:
            model = torch.compile(model)
        if self.sharding is None:
            self.model, self.optimizer = self.accelerator.prepare(model, self.optimizer)
        else:  # sharded already: accelerate would wrap it again (in DDP on a CPU or plain multi-GPU launch)
            self.model = model
        self.core = self.accelerator.unwrap_model(self.model)

    def setup_output(self, progress: bool) -> None:
        """config.json (the user's config), the callbacks' start, the progress bar, the batch loader."""
        cfg = self.cfg
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(self.config_dict, indent=2, default=str))
        self.callbacks.on_start(self)
        self.stage = None
        self.bar = tqdm(total=cfg.optim.max_steps, initial=self.start, desc="train", unit="step",
                        disable=not (progress and self.main))
        self.recent: dict[str, float] = {}
        d = cfg.data
        dataset = PlannedBatches(self.tasks, self.processor, self.train_rows, cfg.seed, pack=d.pack)
        self.batches = batch_loader(self.planner, dataset, num_workers=d.num_workers, prefetch=d.prefetch,
                                    seed=cfg.seed + self.rank, pin_memory=self.accelerator.device.type == "cuda")
        self.seen: list[str] = []  # the rows this process trained on (written per rank at the end)
        self.started = time.perf_counter()
        self.model.train()

    def _find_unused(self, model) -> bool:
        """DDP's find_unused_parameters (it costs every step): as configured, or on only when some task's batches
        leave trainable parameters without a gradient (`unused_parameters`)."""
        if self.cfg.ddp_find_unused_parameters is not None:
            return bool(self.cfg.ddp_find_unused_parameters)
        unused = unused_parameters(self.cfg, model.to(self.accelerator.device), self.tasks, self.train_rows,
                                   self.processor)
        left = {task: names for task, names in unused.items() if names}
        if left:
            shown = "; ".join(f"{t}: {len(n)} (e.g. {n[0]})" for t, n in list(left.items())[:3])
            self.log(f"DDP looks for unused parameters every step: some tasks leave parameters without a gradient "
                     f"({shown})")
        else:
            self.log("DDP without find_unused_parameters: every task's batches reach every trainable parameter")
        return bool(left)

    def _row_stream(self, world: int) -> RowStream:
        cfg, group = self.cfg, self.cfg.optim.batch_size * world  # one step's take of a task
        if not cfg.data.length_buckets:
            return RowStream(self.train_rows, seed=cfg.seed)
        lengths = {name: text_lengths(rows, self.tasks[name], self.tokenizer) for name, rows in self.train_rows.items()}
        return RowStream(self.train_rows, seed=cfg.seed, lengths=lengths, bucket=cfg.data.length_buckets * group,
                         group=group)

    # ------------------------------------------------------------------------------------------------ step
    def enter_stage(self, step: int) -> None:
        if self.stage is not stage_at(self.cfg, step):
            self.stage = stage_at(self.cfg, step)
            trained = apply_stage(self.core, self.stage)
            self.log(f"stage {self.stage.name!r} from step {step}: {trained / 1e6:.2f} M parameters train")

    def step(self, step: int) -> bool:
        """One optimizer step over `optim.grad_accum` batches; False when a non-finite loss skipped it (too many in
        a row stop the run with a checkpoint)."""
        cfg, accelerator = self.cfg, self.accelerator
        done_micro, bad = [], None
        for micro in range(cfg.optim.grad_accum):  # each micro-batch is one batch of the mixture; gradients add up
            prepared = self._next_batch(step, micro)
            self.seen.extend(prepared.sources)
            with accelerator.autocast():
                loss, parts = batch_loss(cfg, self.tasks, prepared, self.model, accelerator.device)
            finite = math.isfinite(float(loss.detach()))
            if not self._all_finite(finite):  # every rank skips together, or the others wait in backward forever
                bad = ", ".join(parts) if not finite else "another rank's batch"
                for rest in range(micro + 1, cfg.optim.grad_accum):  # the step's other micro-batches are passed over
                    self._next_batch(step, rest)
                break
            last = micro == cfg.optim.grad_accum - 1
            if self.sharding is not None:  # FSDP reduce-scatters the gradients on the last micro-batch only
                self.model.set_requires_gradient_sync(last)
            with contextlib.nullcontext() if last else accelerator.no_sync(self.model):  # DDP syncs on the last
                accelerator.backward(loss / cfg.optim.grad_accum)
            done_micro.extend(parts.items())
        if bad is not None:
            self._skip(step, bad)
            return False
        self.bad_in_row = 0
        kill_point("mid-step", step)  # gradients computed, weights not yet stepped
        if cfg.optim.clip:
            trained = [p for p in self.model.parameters() if p.requires_grad]
            if self.sharding is not None:  # the norm over every rank's shards
                torch.nn.utils.clip_grad_norm_(trained, cfg.optim.clip)
            else:
                accelerator.clip_grad_norm_(trained, cfg.optim.clip)
        self.optimizer.step()
        self.stale = True
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        for name, value in done_micro:
            if cfg.mixture.strategy == "dynamic" and not self.eval_rows:  # no held-out rows: training loss drives it
                self.sampler.observe(name, value)
            self.history.append({"step": step, "task": name, "loss": value})
            self.recent[name] = value if name not in self.recent else 0.9 * self.recent[name] + 0.1 * value
        self.callbacks.on_step_end(self, step, done_micro)
        self.bar.update(1)
        if (step + 1) % max(1, cfg.log_every) == 0:
            self.bar.set_postfix_str(" ".join(f"{t[:8]} {v:.2f}" for t, v in sorted(self.recent.items())))
        return True

    def _all_finite(self, finite: bool) -> bool:
        """Whether every rank's loss is finite (with several ranks: one small all-reduce per micro-batch)."""
        if self.accelerator.num_processes == 1:
            return finite
        flag = torch.tensor([0.0 if finite else 1.0], device=self.accelerator.device)
        return float(self.accelerator.reduce(flag, reduction="sum")) == 0.0

    def _next_batch(self, step: int, micro: int) -> Prepared:
        prepared = next(self.batches)  # prepared by a worker (or here, with data.num_workers: 0)
        self.planner.consumed(prepared.plan)
        self.processor.fitted.update(prepared.fitted)  # what a worker fitted to the budgets, counted here
        if (prepared.plan.step, prepared.plan.micro) != (step, micro):
            raise RuntimeError(f"planned batch {prepared.plan.step}.{prepared.plan.micro} arrived at {step}.{micro}")
        return prepared

    def close(self) -> None:
        """Stop the DataLoader workers."""
        self.batches.close()

    def _skip(self, step: int, bad: str) -> None:
        self.skipped += 1
        self.bad_in_row += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.log(f"step {step}: non-finite loss on {bad}; step skipped ({self.bad_in_row} in a row)")
        if self.bad_in_row >= self.cfg.optim.max_bad_steps:
            self.checkpoint(step)
            raise TrainingError(f"{self.bad_in_row} non-finite losses in a row (last on task {bad!r}) at step "
                                f"{step}; a checkpoint was written to {self.ckpt_root}. Lower optim.lr or check "
                                "the data")
        self.scheduler.step()

    # ------------------------------------------------------------------------------------------------ evaluate
    def evaluate(self, step: int) -> float | None:
        """Held-out metrics and the integral score (main process) with the served weights (`Callback.serving`);
        the callbacks see the result (`KeepBest` keeps the best model so far in `best/`)."""
        if not self.eval_rows:
            return None
        model = self.servable()
        if not self.main:
            return None
        cfg = self.cfg
        if self.sharding is not None:  # the main process's unsharded copy evaluates on the accelerator
            model.to(self.accelerator.device)
        try:
            with self.callbacks.serving(self, model):
                result = evaluate(model, self.processor, self.eval_rows, max_rows=cfg.eval.max_rows,
                                  batch_size=cfg.eval.batch_size, task_options=self.served, progress=False)
                self.callbacks.on_evaluate(self, step, result)
        finally:
            if self.sharding is not None:
                model.cpu()
        for name in result.metrics:
            if name in self.sampler.losses and cfg.mixture.strategy == "dynamic":
                self.sampler.observe(name, 1.0 - result.scores[name])  # low held-out score -> sampled more
        self.log(f"step {step}: integral {result.integral:.3f}  " +
                 "  ".join(f"{n} {s:.2f}" for n, s in result.scores.items()))
        with open(self.out / "eval.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "integral": result.integral, "metrics": result.metrics}) + "\n")
        self.model.train()
        return result.integral

    @property
    def best(self) -> float:
        """The best held-out integral so far (-1 before the first evaluation)."""
        return self.callbacks.get(KeepBest).best

    def find_resume(self, resume: str, overwrite: bool, allow_changes: bool) -> Path | None:
        """The checkpoint to resume from, as `resume` says ("auto": the latest under output_dir, "last-intact": the
        newest intact one, "never", or a checkpoint directory), checked whole first (`checkpoint_damage`);
        `overwrite` clears an output_dir that holds a run. A resume whose config or data
        differ from the checkpoint's stops, naming what changed, unless `allow_changes`."""
        latest = latest_checkpoint(self.ckpt_root)
        if overwrite:
            earlier = [self.out / name for name in RUN_OUTPUTS if (self.out / name).exists()]
            if self.main and earlier:
                self.log(f"--overwrite: removing the earlier run's {', '.join(p.name for p in earlier)} under "
                         f"{self.out}")
                for path in earlier:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            self.accelerator.wait_for_everyone()
            return None
        if resume == "never":
            if latest is not None or (self.out / "final").exists():
                raise ConfigError("output_dir", str(self.out), "holds an earlier run and --resume never was given; "
                                  "pass --overwrite to replace it, or another output_dir")
            return None
        path = self._intact_checkpoint(resume, latest)
        if path is None:
            return None
        fixed = fixed_changes(path, self.fingerprint)
        if fixed:  # even with --allow-changes: the checkpoint's model would train under another model's record
            raise ConfigError("--resume", str(path), f"the checkpoint fixes what these settings would change: "
                              f"{'; '.join(fixed)}. Start a new run from its weights instead (model.init_from="
                              f"{path} in another output_dir), or put the settings back")
        changes = fingerprint_changes(path, self.fingerprint)
        if changes and not allow_changes:
            raise ConfigError("--resume", str(path), f"the run's {'; '.join(changes)} since this checkpoint; "
                              "resume anyway with --allow-changes, or start afresh with --overwrite")
        for change in changes:
            self.log(f"resuming although the {change} (--allow-changes)")
        return path

    def _intact_checkpoint(self, resume: str, latest: Path | None) -> Path | None:
        """The checkpoint `resume` names, checked whole before anything is read from it: "auto" the newest (a damaged
        one stops the run, naming its file: falling back would drop steps without a word), "last-intact" the newest
        intact one (saying which step it restarts from), or the given directory."""
        if resume == LAST_INTACT:
            path = newest_intact(self.ckpt_root, self.log)
            if path is None and latest is not None:
                raise InputError("--resume", LAST_INTACT, f"no checkpoint under {self.ckpt_root} is intact; start "
                                 "afresh with --overwrite")
            if path is not None:
                self.log(f"--resume last-intact: restarting from step {int(path.name[len(PREFIX):])} ({path})"
                         + ("" if path == latest else f"; the steps after it, to {latest.name}, are trained again"))
            return path
        path = latest if resume == "auto" else Path(resume)
        if path is None:
            return None
        damage = checkpoint_damage(path)
        if damage is None:
            return path
        if resume != "auto":
            raise damage
        intact = newest_intact(self.ckpt_root, lambda msg: None)
        way_out = (f"the newest intact one is {intact.name}: resume from it with --resume last-intact (the steps "
                   f"after it are trained again)" if intact is not None else
                   "no earlier checkpoint is intact: start afresh with --overwrite")
        raise InputError(damage.what, damage.value, f"{damage.reason}. It is the newest checkpoint, which --resume "
                         f"auto would continue from; {way_out}")

    # ------------------------------------------------------------------------------------------------ checkpoint
    def servable(self):
        """The model to evaluate and save: the one training, or under FSDP the main process's unsharded copy holding
        the current weights (None on the other ranks). Under FSDP a collective: every rank calls it."""
        if self.sharding is None:
            return self.core
        if self.stale:
            self.sharding.full_model(self.model)
            self.stale = False
        return self.sharding.whole

    def trainer_state(self, optimizer: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a checkpoint holds beside the weights; `optimizer`: the optimizer state gathered under FSDP."""
        return {"optimizer": self.optimizer.state_dict() if optimizer is None else optimizer,
                "scheduler": self.scheduler.state_dict(),
                "sampler": self.sampler.state_dict(), "stream": self.stream.state_dict(), "rng": rng_state(),
                "planner": self.planner.state_dict(), "callbacks": self.callbacks.state_dict(),
                "best": self.best, "skipped": self.skipped, "history": self.history}

    def checkpoint(self, step: int) -> None:
        """An atomic, resumable checkpoint `checkpoints/step-N` (main process; every rank waits for it). Under FSDP
        the weights and the optimizer state are gathered whole first, so it is the file an unsharded run writes."""
        model = self.servable()
        optimizer = None if self.sharding is None else self.sharding.optimizer_state(self.model, self.optimizer)
        if self.main:
            save_checkpoint(self.ckpt_root, step, model, self.processor, self.trainer_state(optimizer),
                            keep=self.cfg.checkpoint.keep, task_options=self.served,
                            extra={FINGERPRINT: json.dumps(self.fingerprint, indent=1, sort_keys=True)})
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------------------------------------ report
    def finish(self) -> dict[str, Any]:
        """The last evaluation and checkpoint, the servable `final/`, the rank report and the summary."""
        self.bar.close()
        self.close()
        end = self.cfg.optim.max_steps
        final = self.evaluate(end)
        self.checkpoint(end)
        model = self.servable()
        if self.main:
            with self.callbacks.serving(self, model):
                write_servable(self.out / "final", model, self.processor, self.served, task_sources(self.served))
        write_rank_report(self.out, self.accelerator, param_checksum(self.core), self.seen,
                          find_unused_parameters=self.sharding is None and self.ddp.find_unused_parameters,
                          fsdp=None if self.sharding is None else self.sharding.strategy)
        summary = summarise(self.history, self.sampler, self.skipped, time.perf_counter() - self.started, final,
                            self.best)
        summary["fitted"] = dict(self.processor.fitted)  # media items fitted to their task's budget, this process
        if self.processor.fitted:
            fitted = ", ".join(f"{k} {v}" for k, v in self.processor.fitted.items())
            self.log(f"fitted to their media budgets: {fitted}")
        if self.main:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
            self.log("\n" + summary_table(summary))
        self.callbacks.on_finish(self, summary)
        self.accelerator.end_training()
        return summary


def train(cfg: TrainConfig, *, progress: bool = True, stop_after: int | None = None, resume: str = "auto",
          overwrite: bool = False, allow_changes: bool = False, callbacks: Sequence[Callback] = ()
          ) -> dict[str, Any]:
    """Run (or resume) training; returns the summary. `resume`, `overwrite`, `allow_changes`: see `Run`;
    `callbacks`: added after the built-in ones (`unified.training.callbacks`); `stop_after` ends this process's
    work after that many steps (for tests of resuming)."""
    run = Run(cfg, progress=progress, resume=resume, overwrite=overwrite, allow_changes=allow_changes,
              callbacks=callbacks)
    steps_done = 0
    for step in range(run.start, cfg.optim.max_steps):
        run.enter_stage(step)
        if not run.step(step):  # skipped (non-finite loss): no evaluation, checkpoint or count
            continue
        done, steps_done = step + 1, steps_done + 1
        if cfg.eval.every and done % cfg.eval.every == 0 and done < cfg.optim.max_steps:
            run.evaluate(done)
        if cfg.checkpoint.every and done % cfg.checkpoint.every == 0:
            run.checkpoint(done)
        if stop_after is not None and steps_done >= stop_after:
            run.bar.close()
            run.close()
            return {"step": done, "stopped": True}
    return run.finish()


def _check_resume(resume: str, overwrite: bool, ckpt_root: Path) -> None:
    if resume in ("auto", "never", LAST_INTACT):
        if overwrite and resume == LAST_INTACT:
            raise ConfigError("--overwrite", resume, "clears output_dir: it cannot also resume from a checkpoint")
        return
    if overwrite:
        raise ConfigError("--overwrite", resume, "clears output_dir: it cannot also resume from a checkpoint")
    if not (Path(resume) / "trainer.pt").is_file():
        raise ConfigError("--resume", str(resume), "not a training checkpoint (no trainer.pt); expected 'auto', "
                          f"'never', '{LAST_INTACT}' or a directory like {ckpt_root / 'step-00000100'}")


def main(argv: list[str] | None = None) -> int:
    """`unified train CONFIG [key=value ...]` / `training/multitask.py --config CONFIG [key=value ...]`."""
    parser = argparse.ArgumentParser(prog="unified train", description="Multitask training from a YAML config.")
    parser.add_argument("config", nargs="?", default=None)
    parser.add_argument("--config", dest="config_flag", default=None)
    parser.add_argument("overrides", nargs="*", help="dotted key=value, e.g. optim.max_steps=100")
    add_resume_flags(parser)
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.config_flag and args.config:  # `--config C a=b`: the positional slot caught the first override
        overrides.insert(0, args.config)
    path = args.config_flag or args.config
    if path is None:
        raise ConfigError("config", None, "give a YAML config: unified train training/configs/tiny-smoke.yaml")
    train(load_config(path, overrides), resume=args.resume, overwrite=args.overwrite,
          allow_changes=args.allow_changes)
    return 0

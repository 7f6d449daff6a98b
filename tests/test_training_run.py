"""Training runs on the tiny preset: exact resume after SIGKILL, non-finite losses, stages, two processes, and
learning that is real (loss falls, a multiple-choice task beats chance on held-out clips)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unified.data.synthetic import write_split
from unified.errors import ConfigError
from unified.training import TrainingError, load_config, train

pytestmark = pytest.mark.slow  # training runs

ROOT = Path(__file__).parents[1]
SMOKE = ROOT / "training" / "configs" / "tiny-smoke.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_split(root / "train", 30, seed=0, split="train", progress=False)
    return root


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


def _run(args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "unified.cli", "train", str(SMOKE), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT, **kwargs)


def test_killed_and_resumed_run_equals_straight_run(data, tmp_path):
    """20 steps straight in the training process == 10 steps with 2 DataLoader workers, SIGKILL, 10 more with one
    worker prefetching 3: the plans the killed run's workers had prepared but not trained resume first."""
    common = [f"data.train_dir={data / 'train'}", "data.synthetic=null", "optim.max_steps=20",
              "checkpoint.every=10", "checkpoint.keep=5", "tokenizer.text_vocab_size=200"]
    straight = _run([f"output_dir={tmp_path / 'a'}", *common])
    assert straight.wait(timeout=300) == 0, straight.stderr.read()
    killed = _run([f"output_dir={tmp_path / 'b'}", "data.num_workers=2", *common])
    ckpt = tmp_path / "b" / "checkpoints" / "step-00000010"
    deadline = time.time() + 300
    while not (ckpt / "trainer.pt").is_file() and time.time() < deadline and killed.poll() is None:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert ckpt.is_dir()
    for later in (tmp_path / "b" / "checkpoints").glob("step-*"):  # whatever it wrote after step 10 is lost
        if later.name != ckpt.name:
            shutil.rmtree(later)
    pending = torch.load(ckpt / "trainer.pt", weights_only=True)["planner"]["pending"]
    assert [p[:2] for p in pending] == [[10, 0], [11, 0], [12, 0], [13, 0]]  # 2 workers x prefetch 2 ahead
    resumed = _run([f"output_dir={tmp_path / 'b'}", "data.num_workers=1", "data.prefetch=3", *common])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    a = weights(tmp_path / "a" / "checkpoints" / "step-00000020")
    b = weights(tmp_path / "b" / "checkpoints" / "step-00000020")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], weights(ckpt)[k]) for k in a)  # the last 10 steps did change something


def test_a_clip_that_fails_in_a_worker_stops_the_run_naming_its_row(data, tmp_path):
    """With the pre-flight check off, a clip that does not decode fails inside a DataLoader worker: the training
    process raises the same MediaDecodeError naming file:row (no hang, no RuntimeError wrapping a traceback)."""
    from unified.errors import MediaDecodeError

    bad = tmp_path / "train"
    shutil.copytree(data / "train", bad)
    for clip in bad.rglob("*.mp4"):
        clip.write_bytes(b"not a video at all" * 10)
    cfg = load_config(SMOKE, [f"output_dir={tmp_path / 'run'}", f"data.train_dir={bad}", "data.synthetic=null",
                              "data.tasks=[video_mcqa]", "data.check_media=false", "data.num_workers=2",
                              "data.media_cache_mb=0", "tokenizer.text_vocab_size=200"])
    with pytest.raises(MediaDecodeError, match=r"video_mcqa\.jsonl:\d+ "):
        train(cfg, progress=False)


def test_non_finite_losses_stop_the_run_with_a_checkpoint(data, tmp_path, monkeypatch):
    from unified.training import loop

    real = loop.batch_loss

    def nan_loss(*args, **kwargs):  # every loss is NaN (a NaN loss weight is refused by the config)
        loss, parts = real(*args, **kwargs)
        return loss * float("nan"), parts

    monkeypatch.setattr(loop, "batch_loss", nan_loss)
    cfg = load_config(SMOKE, [f"output_dir={tmp_path}", f"data.train_dir={data / 'train'}", "data.synthetic=null",
                              "data.tasks=[vqa]", "optim.max_bad_steps=3", "tokenizer.text_vocab_size=200"])
    with pytest.raises(TrainingError, match="3 non-finite losses in a row"):
        train(cfg, progress=False)
    assert (tmp_path / "checkpoints" / "step-00000002" / "model.safetensors").is_file()


def test_a_stage_trains_only_its_groups(data, tmp_path):
    cfg = load_config(SMOKE, [f"output_dir={tmp_path}", f"data.train_dir={data / 'train'}", "data.synthetic=null",
                              "data.tasks=[video_mcqa]", "optim.max_steps=4", "optim.weight_decay=0.0",
                              "stages=[{name: xattn-only, train: [xattn, resampler]}]", "checkpoint.every=2",
                              "checkpoint.keep=5", "tokenizer.text_vocab_size=200"])
    train(cfg, progress=False)
    before = weights(tmp_path / "checkpoints" / "step-00000002")
    after = weights(tmp_path / "checkpoints" / "step-00000004")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".xattn." in k or "resampler" in k for k in changed)


def test_a_stage_draws_only_its_tasks(data, tmp_path):
    """A curriculum: the first 3 steps train vqa alone, then vqa and caption; an unknown stage task is refused."""
    common = [f"data.train_dir={data / 'train'}", "data.synthetic=null", "data.tasks=[vqa, caption]",
              "mixture.strategy=uniform", "checkpoint.every=100", "tokenizer.text_vocab_size=200", "log_with=none"]
    stages = "stages=[{name: vqa-first, steps: 3, tasks: [vqa]}, {name: all}]"
    first = train(load_config(SMOKE, [f"output_dir={tmp_path / 'a'}", "optim.max_steps=3", stages, *common]),
                  progress=False)
    assert {t: s["batches"] for t, s in first["tasks"].items()} == {"vqa": 3, "caption": 0}
    both = train(load_config(SMOKE, [f"output_dir={tmp_path / 'b'}", "optim.max_steps=12", stages, *common]),
                 progress=False)
    assert both["tasks"]["vqa"]["batches"] >= 3 and both["tasks"]["caption"]["batches"] >= 1
    with pytest.raises(ConfigError, match=r"stages\[0\]\.tasks"):
        train(load_config(SMOKE, [f"output_dir={tmp_path / 'c'}", "optim.max_steps=1",
                                  "stages=[{tasks: [grounding]}]", *common]), progress=False)


def test_fine_tuning_a_bf16_model_trains_in_float32(data, tmp_path):
    """`model.init_from` a model stored in bf16 (as the shipped default is): it trains with float32 weights, and
    its weights move."""
    from safetensors.torch import save_file

    common = [f"data.train_dir={data / 'train'}", "data.synthetic=null", "data.tasks=[vqa]", "checkpoint.every=100",
              "log_with=none", "optim.max_steps=2"]
    train(load_config(SMOKE, [f"output_dir={tmp_path / 'base'}", "tokenizer.text_vocab_size=200", *common]),
          progress=False)
    base = tmp_path / "base" / "final"
    save_file({k: v.to(torch.bfloat16) for k, v in weights(base).items()}, base / "model.safetensors")
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    # no model/tokenizer/processor settings next to init_from: the saved model brings its own
    summary = train(load_config(None, [f"output_dir={tmp_path / 'ft'}", f"model.init_from={base}", *common]),
                    progress=False)
    assert summary["skipped_steps"] == 0
    before, after = weights(base), weights(tmp_path / "ft" / "final")
    assert all(v.dtype == torch.float32 for v in after.values())
    assert any(not torch.equal(before[k].float(), after[k]) for k in before)


def test_two_processes_that_each_see_world_size_one_stop(data, tmp_path):
    env = {**os.environ, "WORLD_SIZE": "2"}
    run = _run([f"output_dir={tmp_path}", f"data.train_dir={data / 'train'}", "data.synthetic=null"], env=env)
    assert run.wait(timeout=120) == 2
    assert "each process would train alone" in run.stderr.read()


def test_learning_is_real(tmp_path):
    """The tiny preset, 300 steps on 400 synthetic clips of audio_video_mcqa ("was the beep high or low?", "which
    shape appeared when the beep sounded?"): the loss falls several-fold, the held-out accuracy (options ranked by
    likelihood, 40 clips it never saw) beats chance clearly, and it falls back to chance when the audio is silenced:
    the answers come from the sound, not from text priors."""
    from unified.api import Model
    from unified.data import load_data_dir

    cfg = load_config(SMOKE, [f"output_dir={tmp_path}", "data.synthetic={n_train: 400, n_eval: 40, seed: 4}",
                              "data.tasks=[audio_video_mcqa]", "optim.max_steps=300", "optim.lr=0.003",
                              "eval.max_rows=200", "task_options={audio_video_mcqa: {mode: rank}}",
                              "model.fusion={mode: concat}", "checkpoint.every=1000", "log_with=none"])
    summary = train(cfg, progress=False)
    task = summary["tasks"]["audio_video_mcqa"]
    assert task["last_loss"] < task["first_loss"] / 3
    data, _ = load_data_dir(tmp_path / "data" / "test", ["audio_video_mcqa"])
    rows = data["audio_video_mcqa"]
    chance = sum(1 / len(r["options"]) for r in rows) / len(rows)  # two or three options each
    model = Model.from_pretrained(tmp_path / "final")
    assert model.task_options == {"audio_video_mcqa": {"mode": "rank"}}  # saved with the model: it ranks options
    ablation = model.evaluate(data, ablate=True, progress=False).ablation
    full, silent = ablation["full"]["audio_video_mcqa"], ablation["no_audio"]["audio_video_mcqa"]
    assert full == pytest.approx(summary["final_integral"])
    assert full > chance + 0.2, (full, chance)
    assert silent < chance + 0.1 and full > silent + 0.2, (full, silent, chance)


def _two_ranks(out: Path, data: Path, *overrides: str,
               script: Path = ROOT / "training" / "multitask.py") -> subprocess.CompletedProcess:
    """A real two-rank gloo run of the smoke config: 6 steps of 4 rows per rank on vqa and video_mcqa, a fifth of
    the rows held out and evaluated at steps 3 and 6, checkpoints at both."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(script), "--config", str(SMOKE), f"output_dir={out}",
           f"data.train_dir={data / 'train'}", "data.synthetic=null", "optim.max_steps=6", "optim.batch_size=4",
           "checkpoint.every=3", "checkpoint.keep=5", "eval.every=3", "data.validation_split=0.2",
           "tokenizer.text_vocab_size=200", "data.tasks=[vqa, video_mcqa]", "log_with=none", *overrides]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)


def _rank_reports(out: Path, run: subprocess.CompletedProcess) -> list[dict]:
    # written before exit, so an occasional gloo abort at interpreter exit does not hide the result
    reports = [out / "ranks" / f"rank-{r}.json" for r in (0, 1)]
    assert all(p.is_file() for p in reports), run.stderr[-3000:]
    return [json.loads(p.read_text()) for p in reports]


def _losses(out: Path) -> list[float]:
    return [h["loss"] for h in torch.load(out / "checkpoints" / "step-00000006" / "trainer.pt")["history"]]


@pytest.fixture(scope="module")
def ddp_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    return out, _two_ranks(out, data, "data.num_workers=1")


def test_two_cpu_processes_share_the_work_and_end_identical(ddp_run):
    """World size 2, different rows per rank, the same parameters at the end."""
    out, run = ddp_run
    r0, r1 = _rank_reports(out, run)
    assert r0["world_size"] == r1["world_size"] == 2
    assert len(r0["rows"]) == len(r1["rows"]) == 6 * 4
    # each step splits one permutation of the task's rows between the ranks: never the same row at the same time
    assert all(a != b for a, b in zip(r0["rows"], r1["rows"]))
    assert r0["param_checksum"] == pytest.approx(r1["param_checksum"], rel=1e-9)
    # vqa leaves the audio encoder and the contrastive head without gradients: DDP must look for unused ones
    assert r0["find_unused_parameters"] is True and "DDP looks for unused parameters" in run.stdout + run.stderr


def test_fsdp_trains_as_ddp_does_and_its_checkpoints_resume_under_either_engine(ddp_run, data, tmp_path):
    """`fsdp.enabled` over two gloo ranks, against the DDP run on the same rows: the same loss at every step and the
    same held-out scores; the whole-model checksum agrees to 1e-6 (tensors are not compared one by one: conv
    biases feeding a GroupNorm have a gradient that is rounding noise, which AdamW turns into lr-sized steps that
    differ between any two reduction orders). Its checkpoints are the unsharded files: resumed at step 3 with
    `shard_grad_op` it ends bitwise equal to the straight run, and a DDP run resumed from it takes DDP's losses."""
    ddp, _ = ddp_run
    straight = tmp_path / "fsdp"
    run = _two_ranks(straight, data, "fsdp.enabled=true")
    r0, r1 = _rank_reports(straight, run)
    assert r0["fsdp"] == "full_shard" and "FSDP (full_shard): 6 layers" in run.stdout + run.stderr
    assert r0["param_checksum"] == pytest.approx(r1["param_checksum"], rel=1e-12)
    d0 = json.loads((ddp / "ranks" / "rank-0.json").read_text())
    assert r0["rows"] == d0["rows"] and r0["param_checksum"] == pytest.approx(d0["param_checksum"], rel=1e-6)
    assert _losses(straight) == pytest.approx(_losses(ddp), abs=1e-5)
    scores = [json.loads(line)["metrics"] for line in (straight / "eval.jsonl").read_text().splitlines()]
    assert len(scores) == 2 and scores == [json.loads(line)["metrics"]
                                           for line in (ddp / "eval.jsonl").read_text().splitlines()]
    for name in ("best", "final", "checkpoints/step-00000003"):
        assert (straight / name / "model.safetensors").is_file()
    optimizer = torch.load(straight / "checkpoints" / "step-00000006" / "trainer.pt")["optimizer"]
    ddp_optimizer = torch.load(ddp / "checkpoints" / "step-00000006" / "trainer.pt")["optimizer"]
    assert optimizer["param_groups"] == ddp_optimizer["param_groups"]
    assert optimizer["state"].keys() == ddp_optimizer["state"].keys()  # keyed by index, as torch writes it
    for name, extra in (("grad-op", ["fsdp.enabled=true", "fsdp.strategy=shard_grad_op"]), ("ddp", [])):
        out = tmp_path / name
        shutil.copytree(straight / "checkpoints" / "step-00000003", out / "checkpoints" / "step-00000003")
        resumed = _two_ranks(out, data, *extra)
        assert "resuming from" in resumed.stdout + resumed.stderr and _rank_reports(out, resumed)
        assert _losses(out) == pytest.approx(_losses(ddp), abs=1e-5)
    a, b = weights(straight / "final"), weights(tmp_path / "grad-op" / "final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("engine", [[], ["fsdp.enabled=true"]], ids=["ddp", "fsdp"])
def test_a_non_finite_loss_on_one_rank_skips_the_step_on_every_rank(data, tmp_path, engine):
    """Rank 1's loss is NaN at step 2 (`tests/nonfinite_worker.py`), rank 0's is finite: both skip the step and the
    run goes on to the end with the ranks identical. Before, rank 0 waited in its gradient reduction for a rank that
    had skipped its backward, and the run hung."""
    run = _two_ranks(tmp_path, data, *engine, script=ROOT / "tests" / "nonfinite_worker.py")
    r0, r1 = _rank_reports(tmp_path, run)
    assert r0["param_checksum"] == pytest.approx(r1["param_checksum"], rel=1e-12)
    assert json.loads((tmp_path / "summary.json").read_text())["skipped_steps"] == 1
    assert "step 2: non-finite loss on another rank's batch" in run.stdout + run.stderr


def test_per_task_lora_adapters_train_alone_save_load_and_merge(data, tmp_path):
    """lora-per-task.yaml: the base stays exactly as initialised, each adapter changes only when its tasks train,
    the saved adapters load into a plain model and are chosen by task, and merging one equals running it."""
    from peft.tuners.lora import LoraLayer

    from unified.api import Model
    from unified.model import UnifiedModel

    config = ROOT / "training" / "configs" / "lora-per-task.yaml"
    cfg = load_config(config, [f"output_dir={tmp_path}", f"data.train_dir={data / 'train'}", "data.synthetic=null",
                               "data.tasks=[vqa, caption, classify]", "optim.max_steps=6",
                               "optim.weight_decay=0.0", "checkpoint.every=3", "checkpoint.keep=5",
                               "tokenizer.text_vocab_size=200"])
    train(cfg, progress=False)
    final = tmp_path / "final"
    saved = json.loads((final / "adapters" / "adapters.json").read_text())
    assert saved["names"] == ["classify", "language"]
    # the base: identical to a fresh build with the same seed (the initial weights), under plain names
    torch.manual_seed(0)
    fresh = UnifiedModel(UnifiedModel.config_class.from_pretrained(final))
    base, initial = weights(final), fresh.state_dict()
    assert base and not any("lora_" in k or "base_layer" in k for k in base)
    assert all(torch.equal(base[k], initial[k]) for k in base)
    a3 = load_file(tmp_path / "checkpoints" / "step-00000003" / "adapters" / "language" / "adapter_model.safetensors")
    a6 = load_file(final / "adapters" / "language" / "adapter_model.safetensors")
    c6 = load_file(final / "adapters" / "classify" / "adapter_model.safetensors")
    assert any(not torch.equal(a3[k], a6[k]) for k in a3)  # the language adapter trained
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in c6.items() if "lora_B" in k)  # so did classify

    model = Model.from_pretrained(final)
    adapters = model.network.task_adapters
    clip = str(next((data / "train" / "clips").glob("*.mp4")))
    model.generate(task="classify", video=clip, labels=["left", "right", "up", "down"])
    assert adapters.active == "classify"
    model.generate(task="vqa", video=clip, question="what colour is the circle?")
    assert adapters.active == "language"

    batch = model.processor({"text": "<video> what colour is it?", "video": clip, "target": "red"})
    q = model.network.encoder.layers[0].layer.self_attn.q_proj
    with torch.no_grad():
        with_adapter = model.network(**batch).logits
        lora_layers = [m for m in model.network.modules() if isinstance(m, LoraLayer)]
        for m in lora_layers:
            m.enable_adapters(False)  # peft's switch: the base alone
        base_only = model.network(**batch).logits
        for m in lora_layers:
            m.enable_adapters(True)
        weight_before = q.base_layer.weight.clone()
        assert adapters.merge("vqa") == "language"
        merged = model.network(**batch).logits
    assert not torch.allclose(with_adapter, base_only)  # the adapter does something
    assert not torch.equal(q.base_layer.weight, weight_before)  # merging moved it into the base weight
    torch.testing.assert_close(merged, with_adapter, rtol=1e-4, atol=1e-4)


def test_losses_reach_tensorboard(data, tmp_path):
    """log_with=auto writes TensorBoard events (read back with TensorBoard's own reader): one loss per step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(SMOKE, [f"output_dir={tmp_path}", f"data.train_dir={data / 'train'}", "data.synthetic=null",
                              "data.tasks=[vqa]", "optim.max_steps=5", "checkpoint.every=100",
                              "tokenizer.text_vocab_size=200"])
    summary = train(cfg, progress=False)
    events = EventAccumulator(str(next((tmp_path / "logs").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    losses = events.Scalars("loss/vqa")
    assert [e.step for e in losses] == [0, 1, 2, 3, 4]
    assert losses[0].value == pytest.approx(summary["tasks"]["vqa"]["first_loss"], rel=1e-5)


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    """optim.grad_accum=2 with batches of 4 takes the same optimizer step as one batch of 8 (one task, one prompt,
    targets of equal length, so the mean of the two micro-batch losses is the mean over all 8 rows)."""
    data = tmp_path / "data"
    data.mkdir()
    directions = ["left", "right", "up", "down"]
    rows = [{"text": f"the shape number {i} moves {d}. which way does it move?", "target": d}
            for i, d in enumerate(directions * 4)]
    (data / "text2text.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = [f"data.train_dir={data}", "data.synthetic=null", "optim.max_steps=1", "optim.clip=0",
              "optim.weight_decay=0.0", "optim.warmup_steps=1", "checkpoint.every=1", "tokenizer.text_vocab_size=200",
              "log_with=none"]
    train(load_config(SMOKE, [f"output_dir={tmp_path / 'big'}", "optim.batch_size=8", *common]), progress=False)
    summary = train(load_config(SMOKE, [f"output_dir={tmp_path / 'acc'}", "optim.batch_size=4", "optim.grad_accum=2",
                                        *common]), progress=False)
    assert summary["steps"] == 1 and summary["tasks"]["text2text"]["batches"] == 2
    train(load_config(SMOKE, [f"output_dir={tmp_path / 'half'}", "optim.batch_size=4", *common]), progress=False)
    big, acc, half = (weights(tmp_path / name / "final") for name in ("big", "acc", "half"))
    assert big.keys() == acc.keys() == half.keys()
    # Adam's first step is about lr * sign(gradient): where a gradient is ~0, float rounding can move a weight by a
    # few 1e-6; the step itself is lr = 3e-3 per weight, so 2e-5 still tells one step from another
    for key in big:
        torch.testing.assert_close(acc[key], big[key], rtol=1e-3, atol=2e-5)
    # the check can fail: one batch of 4 (half the rows) takes a different step
    assert any(not torch.allclose(half[k], big[k], rtol=1e-3, atol=2e-5) for k in big)


def test_mixed_batches_train_several_tasks_per_step(data, tmp_path):
    cfg = load_config(SMOKE, [f"output_dir={tmp_path}", f"data.train_dir={data / 'train'}", "data.synthetic=null",
                              "data.tasks=[vqa, caption, retrieval]", "mixture.mixed_batches=true",
                              "mixture.strategy=uniform", "optim.max_steps=3", "optim.batch_size=12",
                              "checkpoint.every=100", "tokenizer.text_vocab_size=200", "log_with=none"])
    summary = train(cfg, progress=False)
    assert summary["steps"] == 3
    batches = {t: s["batches"] for t, s in summary["tasks"].items()}
    assert sum(batches.values()) > 3 and all(b >= 1 for b in batches.values())  # several tasks inside each step


def test_bf16_mixed_precision_trains_on_cpu(data, tmp_path):
    """optim.mixed_precision=bf16 goes through accelerate's autocast (on CPU too): losses stay finite and fall.
    In its own process: accelerate keeps one precision per process, and other tests have already set "no"."""
    run = _run([f"output_dir={tmp_path}", f"data.train_dir={data / 'train'}", "data.synthetic=null",
                "data.tasks=[vqa]", "optim.max_steps=12", "optim.mixed_precision=bf16", "checkpoint.every=100",
                "tokenizer.text_vocab_size=200", "log_with=none"])
    assert run.wait(timeout=300) == 0, run.stderr.read()
    summary = json.loads((tmp_path / "summary.json").read_text())
    vqa = summary["tasks"]["vqa"]
    assert summary["skipped_steps"] == 0 and vqa["last_loss"] < vqa["first_loss"]


def test_per_group_learning_rates_hold_a_group_still(data, tmp_path):
    """optim.lr_scale {decoder: 0}: after training, every decoder parameter is exactly as initialised (AdamW's
    decoupled weight decay scales with the lr too) while the encoder's moved."""
    from unified.training.build import build_stack
    from unified.training.data import load_training_data

    overrides = [f"output_dir={tmp_path / 'run'}", f"data.train_dir={data / 'train'}", "data.synthetic=null",
                 "data.tasks=[vqa]", "optim.max_steps=3", "checkpoint.every=100", "log_with=none",
                 "optim.lr_scale={decoder: 0, embeddings: 0.5}"]
    cfg = load_config(SMOKE, overrides)
    rows, _ = load_training_data(cfg, log=lambda _: None)
    _, _, initial = build_stack(cfg, rows, log=lambda _: None)
    train(load_config(SMOKE, overrides), progress=False)
    before, after = dict(initial.state_dict()), weights(tmp_path / "run" / "final")
    decoder = [k for k in after if k.startswith("decoder.") and "embed" not in k]
    assert decoder and all(torch.equal(after[k], before[k]) for k in decoder)
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("encoder.layers."))
    with pytest.raises(ConfigError, match="optim.lr_scale"):
        load_config(SMOKE, ["optim.lr_scale={decodr: 0}"])

"""Configuration that either acts or raises: every setting that would be accepted and do nothing raises
`ConfigError` naming it before step 0; task options and the vocabulary layout reach every place a task is built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unified.errors import ConfigError
from unified.training import load_config, train

SMOKE = Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny-smoke.yaml"


@pytest.mark.parametrize("overrides, field", [
    (["model.init_from=runs/x/final", "model.preset=small"], "model.preset"),
    (["model.init_from=runs/x/final", "model.fusion={mode: xattn}"], "model.fusion"),
    (["model.init_from=runs/x/final", "tokenizer.text_vocab_size=200"], "tokenizer.text_vocab_size"),
    (["model.init_from=runs/x/final", "processor.image_size=32"], "processor.image_size"),
    (["model.fusion={mode: concat, gate_init: 0.5}"], "model.fusion.gate_init"),
    (["model.fusion={mode: concat, every_k_layers: 2}"], "model.fusion.every_k_layers"),
    (["model.resampler={mode: pool3d, num_latents: 16}", "model.audio={resampler: pool}"],
     "model.resampler.num_latents"),
    (["model.resampler={mode: pool3d, depth: 2}", "model.audio={resampler: pool}"], "model.resampler.depth"),
    (["model.resampler={mode: global, pool_hw: 2}"], "model.resampler.pool_hw"),
    (["model.resampler={mode: per_frame, num_latents: 4}"], "model.resampler.num_latents"),
    (["mixture.strategy=dynamic", "eval.every=0"], "eval.every"),
    (["tokenizer.path=some/tokenizer", "tokenizer.layout={num_loc_bins: 100}"], "tokenizer.path"),
    (["data.media_root=clips"], "data.media_root"),  # data.format 'tasks': files hold their own media paths
    (["tokenizer.layout={num_loc_bins: 1}"], "tokenizer.layout.num_loc_bins"),
    (["tokenizer.layout={num_bins: 10}"], "tokenizer.layout.num_bins"),
    (["mixture.strategy=uniform", "mixture.temperature=3"], "mixture.temperature"),
    (["mixture.strategy=weights", "mixture.weights={vqa: 1}", "mixture.anneal_steps=10"], "mixture.anneal_steps"),
    (["mixture.strategy=annealed", "mixture.weights={vqa: 1}"], "mixture.weights"),
    (["lora.alpha=32"], "lora.alpha"),
    (["lora.target_modules=[q_proj]"], "lora.target_modules"),
])
def test_inert_settings_raise_naming_the_field(overrides, field):
    base = [] if any(o.startswith("model.init_from") for o in overrides) else None
    with pytest.raises(ConfigError) as caught:
        load_config(SMOKE if base is None else None, overrides)
    assert caught.value.field == field


@pytest.mark.parametrize("overrides", [
    ["model.init_from=runs/x/final", "model.gradient_checkpointing=true"],  # acts on the loaded model
    ["model.fusion={mode: concat, in_decoder: true, gate_init: 0.5}"],  # the decoder's gated blocks use it
    ["model.resampler={mode: pool3d, depth: 2}"],  # the audio perceiver uses depth
    ["mixture.strategy=dynamic", "eval.every=0", "data.synthetic={n_train: 10, n_eval: 0}"],  # training losses drive it
    ["mixture.strategy=dynamic", "eval.every=10", "mixture.temperature=0.5"],  # the losses' softmax temperature
    ["mixture.strategy=annealed", "mixture.anneal_steps=10"],
    ["mixture.strategy=weights", "mixture.weights={vqa: 1, caption: 2}"],
    ["lora={enabled: true, r: 4, alpha: 8}", "stages=[{train: [lora]}]"],
])
def test_settings_that_act_are_accepted(overrides):
    load_config(None if overrides[0].startswith("model.init_from") else SMOKE, overrides)


@pytest.fixture(scope="module")
def pqrs_run(tmp_path_factory):
    """The config docstring's own example: multiple choice with labels P, Q, R, S, on a vocabulary whose location
    bins are not the default ones."""
    out = tmp_path_factory.mktemp("pqrs")
    cfg = load_config(SMOKE, [f"output_dir={out}", "data.synthetic={n_train: 16, n_eval: 4, seed: 5}",
                              "data.tasks=[video_mcqa, grounding]", "optim.max_steps=4", "optim.batch_size=4",
                              "checkpoint.every=100", "log_with=none", "eval.max_rows=4",
                              "task_options={video_mcqa: {labels: [P, Q, R, S]}}",
                              "tokenizer.layout={num_loc_bins: 200, num_time_bins: 40}"])
    return out, train(cfg, progress=False)


@pytest.mark.slow
def test_task_options_train_evaluate_and_are_saved(pqrs_run):
    from unified import Model

    out, summary = pqrs_run
    assert summary["final_integral"] is not None  # the end-of-run evaluation ran (it used to fail right there)
    saved = json.loads((out / "final" / "task_options.json").read_text())
    assert saved == {"video_mcqa": {"labels": ["P", "Q", "R", "S"]}, "grounding": {}}
    model = Model.from_pretrained(out / "final")
    row = json.loads((out / "data" / "test" / "video_mcqa.jsonl").read_text().splitlines()[0])
    video = str(out / "data" / "test" / row["video"])
    answer = model.generate(task="video_mcqa", video=video, question=row["question"], options=row["options"])
    assert answer in row["options"] or answer == ""


@pytest.mark.slow
def test_the_layout_in_the_config_reaches_the_tasks(pqrs_run):
    from unified import Model

    out, _ = pqrs_run
    model = Model.from_pretrained(out / "final")
    tokenizer = model.processor.tokenizer
    assert (tokenizer.layout.num_loc_bins, tokenizer.layout.num_time_bins, len(tokenizer.loc_ids)) == (200, 40, 200)
    row = json.loads((out / "data" / "test" / "grounding.jsonl").read_text().splitlines()[0])
    box = model.generate(task="grounding", image=str(out / "data" / "test" / row["image"]), phrase=row["phrase"])
    assert box is not None and all(0 <= v <= 64 for v in box)  # four of the 200 location tokens, in pixels


@pytest.mark.slow
def test_labels_the_vocabulary_cannot_tell_apart_fail_before_step_0(pqrs_run, tmp_path):
    """A saved vocabulary without Cyrillic: four Cyrillic labels all become <unk>, caught before training."""
    out, _ = pqrs_run
    cfg = load_config(SMOKE, [f"output_dir={tmp_path / 'run'}", f"data.train_dir={out / 'data' / 'train'}",
                              "data.synthetic=null", "data.tasks=[video_mcqa]", f"tokenizer.path={out / 'final'}",
                              "tokenizer.text_vocab_size=400", "log_with=none",
                              "task_options={video_mcqa: {labels: [Ж, Щ, Ю, Я]}}"])
    with pytest.raises(ConfigError, match="found before training") as caught:
        train(cfg, progress=False)
    assert "video_mcqa" in caught.value.field
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained


@pytest.mark.slow
def test_options_for_a_task_the_run_lacks_raise_before_step_0(pqrs_run, tmp_path):
    out, _ = pqrs_run
    cfg = load_config(SMOKE, [f"output_dir={tmp_path / 'run'}", f"data.train_dir={out / 'data' / 'train'}",
                              "data.synthetic=null", "data.tasks=[grounding]", "log_with=none",
                              "task_options={video_mcqa: {mode: rank}}"])
    with pytest.raises(ConfigError, match="options for tasks this run does not have"):
        train(cfg, progress=False)


LAYOUT = {"num_loc_bins": 200, "num_value_bins": 300, "num_int_tokens": 50, "num_time_bins": 40}


def test_every_task_writes_and_reads_with_a_non_default_layout():
    """Each built-in task's example row under a 200-bin / 40-bin layout: the targets hold only tokens of that
    layout's ranges, and the hand-computed bins of the grounding box and the temporal span."""
    from unified.task_zoo import TASKS, get_task
    from unified.tokenizers import UnifiedTokenizer, VocabLayout
    from unified.tokenizers.grammar import find_indices

    layout = VocabLayout(**LAYOUT)
    builtins = [n for n, cls in TASKS.items() if cls.__module__.startswith("unified.task_zoo.tasks")]
    texts = []
    for name in builtins:
        task = get_task(name, layout)
        example = task.to_example(task.example_row)
        texts += [example.text, example.target or ""]
    tokenizer = UnifiedTokenizer.train(texts * 4, text_vocab_size=120, layout=layout, hard_vocab_limit=False)
    for name in builtins:
        task = get_task(name, layout)
        target = task.to_example(task.example_row).target or ""
        for kind, n in (("loc", 200), ("val", 300), ("int", 50), ("time", 40)):
            assert all(0 <= i < n for i in find_indices(target, kind, 10_000)), (name, target)
        ids = tokenizer.encode(target)
        assert tokenizer.unk_token_id not in ids, (name, target)
    # box [12, 30, 28, 46] on 64 px: round(c / 64 * 199); span [1.0, 1.5] of 4 s: round(t / 4 * 39)
    assert get_task("grounding", layout).target(TASKS["grounding"].example_row) == "<loc_37><loc_93><loc_87><loc_143>"
    assert get_task("temporal_grounding", layout).target(TASKS["temporal_grounding"].example_row) == \
        "<time_10><time_15>"
    box = get_task("grounding", layout).parse("<loc_37><loc_93><loc_87><loc_143>", {"image_size": [64, 64]})
    assert box.x1 == pytest.approx(37 / 199 * 64)


@pytest.mark.slow
@pytest.mark.parametrize("overrides, absent", [
    (["model.fusion={mode: concat}", "stages=[{train: [resampler, xattn]}]"], ["xattn"]),  # no gated blocks
    (["stages=[{train: [lora]}]"], ["lora"]),  # no adapters without lora.enabled
])
def test_a_stage_that_trains_groups_the_model_lacks_fails_before_step_0(overrides, absent, tmp_path):
    cfg = load_config(SMOKE, [f"output_dir={tmp_path / 'run'}", "data.synthetic={n_train: 2, n_eval: 0, seed: 1}",
                              "data.tasks=[vqa]", "log_with=none", *overrides])
    with pytest.raises(ConfigError, match="no parameters in these groups") as caught:
        train(cfg, progress=False)
    assert caught.value.field == "stages[0].train" and caught.value.value == absent
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_evaluating_a_directory_takes_the_tasks_the_model_learnt(pqrs_run):
    from unified import Model

    out, _ = pqrs_run
    model = Model.from_pretrained(out / "final")
    with pytest.warns(UserWarning, match=r"not evaluated: \['audio_video_mcqa', 'caption'"):
        result = model.evaluate(out / "data" / "test", max_rows=2, progress=False)
    assert set(result.metrics) == {"video_mcqa", "grounding"}
    explicit = model.evaluate(out / "data" / "test", tasks=["grounding"], max_rows=2, progress=False)
    assert set(explicit.metrics) == {"grounding"}

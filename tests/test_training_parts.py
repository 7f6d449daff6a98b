"""Training parts against hand-computed truths: config loading and errors, mixture probabilities, the row stream,
parameter groups."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest

from unified.errors import ConfigError
from unified.training.config import load_config
from unified.training.data import RowStream
from unified.training.mixture import TaskSampler
from unified.training.stages import group_of, lr_factor

CONFIGS = sorted((Path(__file__).parents[1] / "training" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.optim.max_steps >= 1 and cfg.stages


def test_overrides_and_errors(tmp_path):
    cfg = load_config(CONFIGS[0], ["optim.max_steps=7", "mixture.strategy=uniform", "optim.lr=1e-4"])
    assert (cfg.optim.max_steps, cfg.mixture.strategy, cfg.optim.lr) == (7, "uniform", 1e-4)
    with pytest.raises(ConfigError, match="optim.lrr"):
        load_config(CONFIGS[0], ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="optim.max_steps"):
        load_config(CONFIGS[0], ["optim.max_steps=many"])
    with pytest.raises(ConfigError, match="mixture.strategy"):
        load_config(CONFIGS[0], ["mixture.strategy=random"])
    with pytest.raises(ConfigError, match=r"stages\[0\].train"):
        load_config(CONFIGS[0], ["stages=[{train: [everything]}]"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(CONFIGS[0], ["optim.lr"])
    (tmp_path / "bad.yaml").write_text("optim: {lr: [1, 2}\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(tmp_path / "bad.yaml")


SIZES = {"vqa": 900, "caption": 100}


def test_mixture_probabilities_by_hand():
    def p(strategy, step=0, **kw):
        return TaskSampler(SIZES, strategy, **kw).probabilities(step)

    assert p("proportional") == pytest.approx({"vqa": 0.9, "caption": 0.1})
    assert p("temperature", temperature=2.0) == pytest.approx({"vqa": 0.75, "caption": 0.25})  # 30 : 10
    assert p("uniform") == pytest.approx({"vqa": 0.5, "caption": 0.5})
    assert p("weights", weights={"vqa": 1, "caption": 3}) == pytest.approx({"vqa": 0.25, "caption": 0.75})
    assert p("annealed", step=0, anneal_steps=100) == pytest.approx({"vqa": 0.9, "caption": 0.1})
    assert p("annealed", step=50, anneal_steps=100) == pytest.approx({"vqa": 0.7, "caption": 0.3})
    assert p("annealed", step=100, anneal_steps=100) == pytest.approx({"vqa": 0.5, "caption": 0.5})
    dynamic = TaskSampler(SIZES, "dynamic", temperature=1.0)
    dynamic.observe("vqa", 1.0)
    dynamic.observe("caption", 3.0)
    assert dynamic.probabilities(0)["caption"] == pytest.approx(1 / (1 + 2.718281828 ** -2))
    with pytest.raises(ConfigError, match="no weight"):
        TaskSampler(SIZES, "weights", weights={"vqa": 1})


def test_sampling_follows_the_probabilities_and_resumes_exactly():
    sampler = TaskSampler(SIZES, "temperature", temperature=2.0, seed=3)
    counts = Counter(sampler.sample(i) for i in range(4000))
    assert abs(counts["vqa"] / 4000 - 0.75) < 0.03
    state = sampler.state_dict()
    after = [sampler.sample(i) for i in range(50)]
    again = TaskSampler(SIZES, "temperature", temperature=2.0, seed=99)
    again.load_state_dict(state)
    assert [again.sample(i) for i in range(50)] == after


def test_row_stream_gives_ranks_different_rows_and_resumes():
    data = {"vqa": [{"i": i} for i in range(10)]}
    a, b = RowStream(data, seed=1), RowStream(data, seed=1)
    rank0, rank1 = a.batch("vqa", 3, rank=0, world=2), b.batch("vqa", 3, rank=1, world=2)
    assert not {r["i"] for r in rank0} & {r["i"] for r in rank1}
    assert len({r["i"] for r in rank0 + rank1}) == 6
    epoch = [r["i"] for r in RowStream(data, seed=1).take("vqa", 10)]
    assert sorted(epoch) == list(range(10))  # one epoch is a permutation
    stream = RowStream(data, seed=1)
    stream.take("vqa", 7)
    state = stream.state_dict()
    rest = stream.take("vqa", 6)
    resumed = RowStream(data, seed=1)
    resumed.load_state_dict(state)
    assert resumed.take("vqa", 6) == rest


def test_text_lengths_count_prompt_and_target_tokens_of_a_row():
    from unified.training.data import text_lengths

    words = type("Words", (), {"encode": staticmethod(lambda text: text.split())})()  # one token per word
    task = type("T", (), {"target_fields": ("answer",)})()
    rows = [{"question": "a b c", "options": ["x y", "z"], "answer": "d e", "video": "p.mp4", "_source": "f:1"},
            {"question": "one", "answer": "two three four"}]
    assert text_lengths(rows, task, words).tolist() == [[6, 2], [1, 3]]


def test_length_buckets_keep_one_permutation_per_epoch_and_group_similar_lengths():
    """Chunks of 24 rows sorted by length and cut into steps of 6: within a chunk the steps' length ranges never
    overlap, each epoch is a permutation, the order is the same for the same seed and resumes exactly."""
    import numpy as np

    n, group, bucket = 60, 6, 24
    lengths = np.random.default_rng(0).integers(1, 50, size=(n, 2))
    data = {"vqa": [{"i": i} for i in range(n)]}
    stream = RowStream(data, seed=3, lengths={"vqa": lengths}, bucket=bucket, group=group)
    plain = RowStream(data, seed=3)
    for epoch in range(2):
        order = [r["i"] for r in stream.take("vqa", n)]
        assert sorted(order) == list(range(n)) and order != [r["i"] for r in plain.take("vqa", n)]
        for start in range(0, n, bucket):
            steps = [order[i:i + group] for i in range(start, min(n, start + bucket), group)]
            spans = sorted((min(lengths[s, 0]), max(lengths[s, 0])) for s in steps)
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # sorted by prompt length, then cut
    again = RowStream(data, seed=3, lengths={"vqa": lengths}, bucket=bucket, group=group)
    again.take("vqa", 17)
    state = again.state_dict()
    rest = again.take("vqa", 30)
    resumed = RowStream(data, seed=3, lengths={"vqa": lengths}, bucket=bucket, group=group)
    resumed.load_state_dict(state)
    assert resumed.take("vqa", 30) == rest


@pytest.mark.parametrize("strategy", ["temperature", "dynamic"])
def test_planner_resumes_with_the_plans_its_workers_had_not_trained(strategy, tmp_path):
    """Plans made ahead (as a DataLoader with workers asks for them) and not yet trained are saved with the sampler
    and stream, and a resumed planner hands them out first: the plan sequence equals an uninterrupted one's."""
    import torch

    from unified.training.batches import Planner

    cfg = load_config(CONFIGS[0], ["optim.max_steps=9", "optim.grad_accum=2", "mixture.mixed_batches=true",
                                   f"mixture.strategy={strategy}", "optim.batch_size=3"])
    data = {"vqa": [{"i": i} for i in range(7)], "caption": [{"i": i} for i in range(5)]}
    tasks = {name: type("T", (), {"own_loss": False})() for name in data}

    def planner():
        sampler = TaskSampler({t: len(r) for t, r in data.items()}, strategy, seed=0)
        return sampler, RowStream(data, seed=0), Planner(cfg, sampler, RowStream(data, seed=0), tasks)

    def run(planner_, sampler, consume_upto=None, ahead=4):
        made, it = [], iter(planner_)
        for plan in it:  # like a DataLoader: `ahead` plans outstanding, the loss of each trained one fed back
            made.append(plan)
            if len(made) > ahead:
                trained = made[len(made) - ahead - 1]
                planner_.consumed(trained)
                sampler.observe(trained.rows[0][0], 1.0 + trained.step % 3)
                if consume_upto is not None and trained.step * 2 + trained.micro + 1 == consume_upto:
                    return made
        return made

    sampler, _, straight = planner()
    expected = run(straight, sampler)
    assert len(expected) == 18 and [(p.step, p.micro) for p in expected[:3]] == [(0, 0), (0, 1), (1, 0)]
    assert all(len(p.rows) == 3 for p in expected)
    sampler, _, first = planner()
    made = run(first, sampler, consume_upto=8)
    state = {"sampler": sampler.state_dict(), "stream": first.stream.state_dict(), "planner": first.state_dict()}
    torch.save(state, tmp_path / "trainer.pt")  # what a checkpoint holds, read back as a resume reads it
    state = torch.load(tmp_path / "trainer.pt", weights_only=True)
    assert [p[:2] for p in state["planner"]["pending"]] == [[4, 0], [4, 1], [5, 0], [5, 1]]
    sampler, _, resumed = planner()
    sampler.load_state_dict(state["sampler"])
    resumed.stream.load_state_dict(state["stream"])
    resumed.load_state_dict(state["planner"])
    rest = run(resumed, sampler)
    assert made[:8] + rest == expected
    with pytest.raises(RuntimeError, match="out of order"):
        resumed.consumed(expected[0])


def test_parameter_groups_and_schedule():
    assert group_of("encoder.layers.0.xattn.attn.q_proj.weight") == "xattn"
    assert group_of("encoder.layers.0.xattn.attn_gate") == group_of("encoder.xattn.2.ff_gate") == "gates"
    assert group_of("encoder.media.visual_resampler.latents") == "resampler"
    assert group_of("encoder.media.visual.stem.0.weight") == "media"
    assert group_of("shared.weight") == "embeddings"
    assert group_of("encoder.layers.0.layer.self_attn.q_proj.weight") == "encoder"
    assert group_of("decoder.layers.1.cross_attn.q_proj.weight") == "decoder"
    assert group_of("embed_head.proj.weight") == "heads"
    cfg = load_config(CONFIGS[0], ["optim.warmup_steps=10", "optim.max_steps=110"])
    assert lr_factor(cfg, 4) == pytest.approx(0.5)  # warmup: (4 + 1) / 10
    assert lr_factor(cfg, 60) == pytest.approx(0.5)  # half way through the cosine
    assert lr_factor(cfg, 110) == pytest.approx(0.0, abs=1e-9)


def test_parameter_groups_of_a_real_model_follow_its_modules():
    """Every parameter of a model with both fusion modes lands in the group its module says: the gates of the
    gated cross-attention blocks, the rest of those blocks, resamplers, the rest of the media encoder, the shared
    embedding, the embedding head, the decoder and the rest of the encoder; together they are all the parameters,
    each once."""
    from model_fixtures import tiny_model

    from unified.model.fusion import GatedCrossAttentionBlock

    model = tiny_model(fusion={"mode": "both"})
    media = model.encoder.media

    def ids(*modules):
        return {id(p) for m in modules for p in m.parameters()}

    blocks = [m for m in model.modules() if isinstance(m, GatedCrossAttentionBlock)]
    expected = {
        "gates": {id(p) for b in blocks for p in (b.attn_gate, b.ff_gate)},
        "resampler": ids(media.visual_resampler, media.audio_resampler),
        "embeddings": {id(model.get_input_embeddings().weight)},
        "heads": ids(model.embed_head),
    }
    expected["xattn"] = ids(*blocks) - expected["gates"]
    expected["media"] = ids(media) - expected["resampler"]
    taken = set().union(*expected.values())
    expected["decoder"] = ids(model.decoder) - taken
    expected["encoder"] = ids(model.encoder) - taken - expected["decoder"]
    found: dict[str, set[int]] = {}
    for name, param in model.named_parameters():
        found.setdefault(group_of(name), set()).add(id(param))
    assert found == expected
    assert sum(len(v) for v in found.values()) == len(list(model.parameters()))


def test_gates_take_xattn_s_rate_and_stage_unless_named():
    """The gates are a group of their own: lr_scale.gates sets their rate (else xattn's), a stage training `xattn`
    trains them too, and a stage of `gates` alone trains nothing else."""
    from model_fixtures import tiny_model

    from unified.training.config import Stage
    from unified.training.stages import apply_stage, param_groups

    model = tiny_model(fusion={"mode": "xattn"})
    gates = {n for n, _ in model.named_parameters() if n.endswith(("attn_gate", "ff_gate"))}
    assert gates
    rates = {g["name"]: g["lr"] for g in param_groups(model, 1e-3, {"xattn": 10})}
    assert rates["gates"] == rates["xattn"] == pytest.approx(1e-2) and rates["encoder"] == pytest.approx(1e-3)
    rates = {g["name"]: g["lr"] for g in param_groups(model, 1e-3, {"xattn": 10, "gates": 100})}
    assert rates["gates"] == pytest.approx(0.1) and rates["xattn"] == pytest.approx(1e-2)
    apply_stage(model, Stage(train=["xattn"]))
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert gates < trained and all(".xattn." in n for n in trained)
    apply_stage(model, Stage(train=["gates"]))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == gates


def test_a_stage_draws_only_its_tasks_renormalised():
    """weights a:b:c = 1:3:4; limited to [b, c] the draws follow 3/7 : 4/7 and never give a."""
    sampler = TaskSampler({"a": 10, "b": 10, "c": 10}, strategy="weights", weights={"a": 1, "b": 3, "c": 4}, seed=0)
    draws = [sampler.sample(0, only=["b", "c"]) for _ in range(7000)]
    assert "a" not in draws
    assert draws.count("b") / 7000 == pytest.approx(3 / 7, abs=0.02)
    with pytest.raises(ConfigError, match="none of them"):
        sampler.sample(0, only=["z"])


def test_mixed_batches_keep_contrastive_tasks_whole():
    """A mixed batch never holds a retrieval row next to others: retrieval (in-batch negatives) takes whole batches,
    as often as the mixture draws it (1/3 here); the other batches mix the remaining tasks."""
    sampler = TaskSampler({"vqa": 10, "caption": 10, "retrieval": 10}, strategy="uniform", seed=0)
    plans = [sampler.batch_tasks(0, 8, mixed=True, whole=["retrieval"]) for _ in range(600)]
    whole = [p for p in plans if "retrieval" in p]
    assert all(p == ["retrieval"] * 8 for p in whole)
    assert len(whole) / 600 == pytest.approx(1 / 3, abs=0.05)
    mixed = [p for p in plans if "retrieval" not in p]
    assert sum(len(set(p)) == 2 for p in mixed) > 0.9 * len(mixed)  # vqa and caption share batches
    assert sampler.batch_tasks(0, 4, mixed=False) in (["vqa"] * 4, ["caption"] * 4, ["retrieval"] * 4)


def test_a_run_with_length_buckets_takes_steps_of_similar_length(tmp_path):
    """data.length_buckets reaches the run's row stream: one step's caption rows come from one sorted group, so
    their caption lengths (in the run's own tokens) span no more than the group they were cut from."""
    from unified.data.synthetic import write_split
    from unified.training.data import text_lengths
    from unified.training.loop import Run

    write_split(tmp_path / "train", 24, seed=0, split="train", progress=False)
    cfg = load_config(CONFIGS[-1].parent / "tiny-smoke.yaml", [
        f"output_dir={tmp_path / 'run'}", f"data.train_dir={tmp_path / 'train'}", "data.synthetic=null",
        "data.tasks=[caption]", "optim.batch_size=4", "data.length_buckets=3", "tokenizer.text_vocab_size=200"])
    run = Run(cfg, progress=False)
    lengths = text_lengths(run.train_rows["caption"], run.tasks["caption"], run.tokenizer)
    assert run.stream.bucket == 12 and run.stream.group == 4
    taken = [run.stream.batch_indices("caption", 4) for _ in range(3)]  # one chunk: 3 steps of 4 rows
    spans = sorted((int(lengths[t, 0].min()), int(lengths[t, 0].max())) for t in taken)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    run.close()


def test_the_loss_plot_is_written_or_its_absence_warned_once(tmp_path, monkeypatch):
    import sys
    import warnings

    from unified.training.report import plot_losses

    history = [{"step": s, "task": t, "loss": 2.0 / (s + 1)} for s in range(5) for t in ("vqa", "caption")]
    assert plot_losses(history, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not plot_losses(history, tmp_path / "again.png")
    assert [str(w.message)[:24] for w in caught] == ["again.png not written: m"]
    assert not (tmp_path / "again.png").exists()

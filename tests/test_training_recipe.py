"""The training loop as a recipe: callbacks at named points, an EMA of the weights against a hand-computed average,
a resumed run's config.json that reloads as the user's config, AdamW's weight decay on matrices only (and optimizer
states saved before that split still resume), and the settings that can only be checked once the model is built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unified.data.synthetic import write_split
from unified.errors import ConfigError
from unified.model import UnifiedConfig, UnifiedModel
from unified.training import load_config, train
from unified.training.callbacks import Callback
from unified.training.config import to_dict
from unified.training.stages import _legacy_groups, adapt_optimizer_state, decays, param_groups

pytestmark = pytest.mark.slow  # training runs

SMOKE = Path(__file__).parents[1] / "training" / "configs" / "tiny-smoke.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_split(root / "train", 12, seed=0, split="train", progress=False)
    write_split(root / "eval", 4, seed=0, split="test", progress=False)
    return root


def _overrides(data: Path, out: Path, *more: str) -> list[str]:
    return [f"output_dir={out}", f"data.train_dir={data / 'train'}", "data.synthetic=null", "data.tasks=[vqa]",
            "optim.batch_size=4", "tokenizer.text_vocab_size=200", "log_with=none", "checkpoint.every=2",
            "checkpoint.keep=5", *more]


class Recorder(Callback):
    """Records every call and the weights after each optimizer step (float32 copies)."""

    name = "recorder"

    def __init__(self):
        self.calls, self.weights, self.restored = [], [], None

    def on_start(self, run):
        self.calls.append("start")
        self.weights.append({n: p.detach().float().clone() for n, p in run.core.named_parameters()})

    def on_step_end(self, run, step, losses):
        self.calls.append(("step", step, tuple(task for task, _ in losses)))
        self.weights.append({n: p.detach().float().clone() for n, p in run.core.named_parameters()})

    def on_evaluate(self, run, step, result):
        self.calls.append(("evaluate", step, round(result.integral, 6)))

    def on_finish(self, run, summary):
        self.calls.append(("finish", summary["steps"]))

    def state_dict(self):
        return {"calls": len(self.calls)}

    def load_state_dict(self, state):
        self.restored = state["calls"]


def test_callbacks_are_called_at_each_named_point_and_resume_with_their_state(data, tmp_path):
    recorder = Recorder()
    train(load_config(SMOKE, _overrides(data, tmp_path, "optim.max_steps=4", f"data.eval_dir={data / 'eval'}",
                                        "eval.every=2")), progress=False, callbacks=[recorder])
    steps = [c for c in recorder.calls if c[0] == "step"]
    assert recorder.calls[0] == "start" and [s[1] for s in steps] == [0, 1, 2, 3]
    assert all(s[2] == ("vqa",) for s in steps)
    evaluations = [c for c in recorder.calls if c[0] == "evaluate"]
    assert [e[1] for e in evaluations] == [2, 4]  # every 2 steps, and the last at the end
    assert recorder.calls[-1] == ("finish", 4)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best_integral"] == max(e[2] for e in evaluations)  # KeepBest, a callback too
    state = torch.load(tmp_path / "checkpoints" / "step-00000002" / "trainer.pt", weights_only=True)
    assert state["callbacks"]["recorder"] == {"calls": 1 + 2 + 1}  # start, 2 steps, the evaluation at step 2
    resumed = Recorder()
    train(load_config(SMOKE, _overrides(data, tmp_path, "optim.max_steps=6", f"data.eval_dir={data / 'eval'}",
                                        "eval.every=2")), progress=False, callbacks=[resumed],
          allow_changes=True)
    assert resumed.restored == len(recorder.calls) - 1  # the step-4 checkpoint, written before on_finish


def test_ema_weights_are_the_hand_computed_average(data, tmp_path):
    """optim.ema 0.9 over 3 steps: final/ holds avg_3 computed here from the weights after each step, with the
    decay warm-up min(0.9, (1 + t) / (10 + t)); the checkpoint keeps the training weights."""
    recorder = Recorder()
    train(load_config(SMOKE, _overrides(data, tmp_path, "optim.max_steps=3", "optim.ema=0.9")), progress=False,
          callbacks=[recorder])
    average = {n: w.clone() for n, w in recorder.weights[0].items()}
    for t, weights in enumerate(recorder.weights[1:], start=1):
        d = min(0.9, (1 + t) / (10 + t))
        average = {n: d * average[n] + (1 - d) * weights[n] for n in average}
    final = load_file(tmp_path / "final" / "model.safetensors")
    checkpoint = load_file(tmp_path / "checkpoints" / "step-00000003" / "model.safetensors")
    moved = [n for n in average if not torch.equal(recorder.weights[0][n], recorder.weights[-1][n])]
    assert moved
    for name in moved:
        key = name if name in final else name.replace("encoder.embed_tokens", "shared")
        torch.testing.assert_close(final[key].float(), average[name], rtol=0, atol=1e-6)
        torch.testing.assert_close(checkpoint[key].float(), recorder.weights[-1][name], rtol=0, atol=0)
        assert not torch.allclose(final[key].float(), recorder.weights[-1][name])  # served != trained


def test_a_resumed_run_with_ema_ends_as_the_straight_run(data, tmp_path):
    common = ["optim.ema=0.8", "optim.max_steps=4"]
    train(load_config(SMOKE, _overrides(data, tmp_path / "a", *common)), progress=False)
    train(load_config(SMOKE, _overrides(data, tmp_path / "b", *common)), progress=False, stop_after=2)
    train(load_config(SMOKE, _overrides(data, tmp_path / "b", *common)), progress=False)
    a, b = (load_file(tmp_path / x / "final" / "model.safetensors") for x in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_resumed_runs_saved_config_is_the_users_and_reloads(data, tmp_path):
    overrides = _overrides(data, tmp_path, "optim.max_steps=4")
    cfg = load_config(SMOKE, overrides)
    train(cfg, progress=False, stop_after=2)
    train(load_config(SMOKE, overrides), progress=False)  # resumes from step 2
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["init_from"] is None
    assert to_dict(load_config(tmp_path / "config.json")) == to_dict(cfg)


def _media_model() -> UnifiedModel:
    return UnifiedModel(UnifiedConfig.preset("tiny", fusion={"mode": "both"}))


def test_adamw_decays_matrices_only():
    """On a real model with gated cross-attention and the contrastive head: norms, biases, gates and the
    temperature sit in groups without weight decay; every Linear weight in a group with it."""
    model = _media_model()
    groups = param_groups(model, 1e-3, {"xattn": 10}, weight_decay=0.1)
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert len(decay_of) == len(list(model.parameters()))  # every parameter in exactly one group
    names = dict(model.named_parameters())
    for kind, pick in [("norm", lambda n: "norm" in n), ("bias", lambda n: n.endswith(".bias")),
                       ("gate", lambda n: n.endswith("_gate")), ("temperature", lambda n: "log_scale" in n)]:
        chosen = [n for n in names if pick(n)]
        assert chosen, kind
        assert all(decay_of[id(names[n])] == 0.0 for n in chosen), kind
    linear = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear and all(decay_of[id(w)] == 0.1 for w in linear)
    rates = {(g["name"], g["decay"]): g["lr"] for g in groups}
    assert rates[("xattn", True)] == rates[("xattn", False)] == pytest.approx(1e-2)


@pytest.mark.parametrize("scales", [{}, {"xattn": 10}], ids=["one-group", "per-group"])
def test_an_optimizer_state_from_before_the_decay_split_keeps_every_moment(scales):
    model = _media_model()
    legacy = torch.optim.AdamW([{"params": g, "lr": 1e-3} for g in _legacy_groups(model, scales)], lr=1e-3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    legacy.step()
    cfg = load_config(SMOKE, [f"optim.lr_scale={json.dumps(scales)}", "optim.lr=0.001"])
    optimizer = torch.optim.AdamW(param_groups(model, 1e-3, scales, 0.01), lr=1e-3)
    optimizer.load_state_dict(adapt_optimizer_state(legacy.state_dict(), model, cfg))
    for p in model.parameters():
        torch.testing.assert_close(optimizer.state[p]["exp_avg"], legacy.state[p]["exp_avg"], rtol=0, atol=0)
        torch.testing.assert_close(optimizer.state[p]["exp_avg_sq"], legacy.state[p]["exp_avg_sq"], rtol=0, atol=0)
    assert {g["weight_decay"] for g in optimizer.param_groups if not g["decay"]} == {0.0}
    assert all(decays(p) for g in optimizer.param_groups if g["decay"] for p in g["params"])


@pytest.mark.parametrize("override, field", [
    ("mixture.loss_weights={caption: 2.0}", "mixture.loss_weights"),
    ("optim.lr_scale={gates: 0.5}", "optim.lr_scale"),  # the tiny preset's concat model has no gates
])
def test_settings_that_would_do_nothing_in_this_run_stop_it_before_step_0(data, tmp_path, override, field):
    cfg = load_config(SMOKE, _overrides(data, tmp_path, "optim.max_steps=1", "model.fusion={mode: concat}",
                                        override))
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        train(cfg, progress=False)
    assert not (tmp_path / "checkpoints").exists()

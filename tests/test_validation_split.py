"""`data.validation_split`: a seeded fraction of each task's training rows held back as the evaluation set when a run
has no eval_dir (what early stopping on a small table needs, `benchmarks/regress_tables.py --early-stop`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unified.errors import ConfigError
from unified.training import load_config, train
from unified.training.data import hold_out, load_training_data

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "training" / "configs" / "tiny-smoke.yaml"


def test_hold_out_takes_a_seeded_fraction_of_each_task_and_keeps_the_order():
    rows = {"a": [{"i": k} for k in range(10)], "b": [{"i": 0}], "c": [{"i": 0}, {"i": 1}]}
    kept, held = hold_out(rows, 0.2, seed=3, log=lambda _: None)
    assert len(held["a"]) == 2 and len(kept["a"]) == 8  # round(0.2 * 10)
    assert "b" not in held and kept["b"] == rows["b"]  # one row: nothing to hold back
    assert len(held["c"]) == 1 and len(kept["c"]) == 1  # at least one, never all
    for part in (kept["a"], held["a"]):
        assert [r["i"] for r in part] == sorted(r["i"] for r in part)
    assert sorted(r["i"] for r in kept["a"] + held["a"]) == list(range(10))
    again = hold_out(rows, 0.2, seed=3, log=lambda _: None)
    assert again == (kept, held)
    others = [hold_out(rows, 0.2, seed=s, log=lambda _: None)[1]["a"] for s in range(4, 9)]
    assert any(o != held["a"] for o in others)


@pytest.mark.parametrize("overrides, match", [
    (["data.validation_split=1.0"], "in \\[0, 1\\)"),
    (["data.validation_split=0.2", "data.eval_dir=elsewhere"], "data.eval_dir"),
    (["data.validation_split=0.2"], "data.synthetic.n_eval"),  # the smoke config's synthetic data has n_eval > 0
])
def test_a_validation_split_beside_other_held_out_rows_is_refused(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(SMOKE, [f"output_dir={tmp_path}", *overrides])


def test_a_run_evaluates_on_the_rows_it_held_back(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"inputs": [i / 20, 1 - i / 20], "values": [i / 2], "value_range": [0, 20]} for i in range(20)]
    (data / "regress.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = [f"data.train_dir={data}", "data.synthetic=null", "data.tasks=[regress]",
              "data.validation_split=0.25", "tokenizer.text_vocab_size=60", "log_with=none", "checkpoint.every=0"]
    cfg = load_config(SMOKE, [f"output_dir={tmp_path / 'run'}", "optim.max_steps=4", "eval.every=2", *common])
    fit, held = load_training_data(cfg, log=lambda _: None)
    assert len(held["regress"]) == 5 and len(fit["regress"]) == 15
    seen = {json.dumps(r, sort_keys=True) for r in fit["regress"]}
    assert not seen & {json.dumps(r, sort_keys=True) for r in held["regress"]}
    summary = train(cfg, progress=False)
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()  # chosen on the held-back rows
    assert summary["best_integral"] is not None and summary["final_integral"] is not None

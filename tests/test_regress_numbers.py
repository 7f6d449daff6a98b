"""regress never clips a number silently: a row's `value_range` is mapped onto the value tokens' domain [-256, 256]
(or, with spacing: uniform, evenly over the bins) and answers are mapped back (hand-computed values below); numbers
beyond the domain without a range are refused. Training-only input noise is checked by its statistics."""

from __future__ import annotations

import math

import pytest
import torch

from unified.errors import InputError
from unified.task_zoo import get_task
from unified.tokenizers.values import value_error_bound, value_to_bin, values_to_tokens


def test_targets_are_mapped_from_the_value_range():
    task = get_task("regress")
    row = {"question": "how much?", "values": [2500.0], "value_range": [100, 2600]}
    # centre 1350, half-width 1250: (2500 - 1350) / 1250 * 256 = 235.52
    assert task.target(row) == values_to_tokens([235.52])
    back = task.parse(task.target(row), row)[0]
    assert abs(back - 2500.0) <= value_error_bound(235.52) * 1250 / 256
    # every target above 256 used to train as the last bin; mapped, 1000 and 2500 stay apart
    other = {**row, "values": [1000.0]}  # (1000 - 1350) / 1250 * 256 = -71.68
    assert task.target(other) == values_to_tokens([-71.68]) != task.target(row)


def test_inputs_use_their_own_range_else_the_value_range():
    task = get_task("regress")
    row = {"inputs": [0.5, -1.0], "values": [30.0], "value_range": [0, 100], "input_range": [-1, 1]}
    prompt = task.to_example(row, rng=None).text
    assert values_to_tokens([128.0, -256.0]) in prompt  # 0.5 on [-1, 1] -> 128; -1 -> -256
    shared = {"inputs": [25.0], "values": [30.0], "value_range": [0, 100]}  # (25 - 50) / 50 * 256 = -128
    assert values_to_tokens([-128.0]) in task.to_example(shared, rng=None).text
    with pytest.raises(InputError, match=r"inputs=\[250.0\]: outside the row's value_range"):
        task.check_row({**shared, "inputs": [250.0]})


def test_a_range_spans_every_value_bin():
    task = get_task("regress")
    bins = task.allowed_bins({"values": [5.0], "value_range": [-3, 7]})
    assert (bins.start, bins.stop) == (value_to_bin(-256.0), value_to_bin(256.0) + 1) == (0, 1024)


def test_numbers_beyond_the_domain_without_a_range_are_refused():
    task = get_task("regress")
    with pytest.raises(InputError, match=r"regress values=\[300.0\]: beyond the value tokens' domain of \+-256"):
        task.check_row({"question": "q?", "values": [300.0]})
    with pytest.raises(InputError, match=r"regress inputs=\[-400.0\]"):
        task.check_row({"inputs": [-400.0, 1.0], "values": [3.0]})
    task.check_row({"question": "q?", "values": [255.0]})  # inside the domain: written as it is
    assert task.target({"question": "q?", "values": [255.0]}) == values_to_tokens([255.0])


def test_scale_none_writes_numbers_as_they_are():
    """How the built-in default model was trained (its task_options say scale: none)."""
    task = get_task("regress", scale="none")
    row = {"question": "q?", "values": [1.5], "value_range": [0, 4]}
    assert task.target(row) == values_to_tokens([1.5])
    assert task.allowed_bins(row) == range(value_to_bin(0.0), value_to_bin(4.0) + 1)
    with pytest.raises(InputError, match="scale"):
        get_task("regress", scale="log")


def _decoded(k: int, n: int = 1024) -> float:
    """What value bin k decodes to, from the module docstring's formula: the inverse mu-law of its centre."""
    c = -1 + (2 * k + 1) / n
    return math.copysign(((256 * 100 + 1) ** abs(c) - 1) / 100, c)


def test_mean_and_median_read_the_bin_distribution():
    row = {"question": "q?", "num_values": 1, "value_range": [0, 100]}  # domain y -> 50 + y / 256 * 50
    probs = torch.zeros(1, 1024)
    probs[0, 700], probs[0, 800] = 0.5, 0.5
    mean = get_task("regress", decode="mean").parse_distribution("", probs, row)
    assert mean == pytest.approx([50 + (_decoded(700) + _decoded(800)) / 2 / 256 * 50])
    probs = torch.zeros(1, 1024)
    probs[0, 100], probs[0, 500], probs[0, 900] = 0.3, 0.3, 0.4  # cumulative 0.3, 0.6, 1.0: the median is bin 500
    median = get_task("regress", decode="median").parse_distribution("", probs, row)
    assert median == pytest.approx([50 + _decoded(500) / 256 * 50])
    assert not get_task("regress").reads_distribution


def test_mean_decoding_through_generate_stays_in_range():
    from task_rows import tiny_stack

    from unified.task_zoo.decoding import predict

    _, processor, network = tiny_stack()
    task = get_task("regress", layout=processor.tokenizer.layout, decode="mean")
    rows = [{"inputs": [1.0, 2.0], "num_values": 2, "value_range": [10, 20], "input_range": [0, 5]}]
    (values,) = predict(task, network.eval(), processor, rows)
    assert len(values) == 2 and all(10 <= v <= 20 for v in values)
    argmax = predict(get_task("regress", layout=processor.tokenizer.layout), network, processor, rows)[0]
    assert values != argmax  # a random model's distribution is spread: its mean is not its mode


# ---------------------------------------------------------------------------------------------- scale: fit
FIT_ROWS = [{"inputs": [0.0, 10.0], "values": [100.0]}, {"inputs": [2.0, 30.0], "values": [200.0]},
            {"inputs": [4.0, 20.0], "values": [300.0]}]


def test_the_fitted_scaler_is_the_training_min_max_widened_by_a_tenth():
    learnt = get_task("regress", scale="fit").fit(FIT_ROWS)
    # targets 100..300, width 200 -> [80, 320]; inputs per position: 0..4 -> [-0.4, 4.4], 10..30 -> [8, 32]
    assert list(learnt) == ["fitted"] and learnt["fitted"]["value_range"] == pytest.approx([80.0, 320.0])
    assert learnt["fitted"]["input_range"] == [pytest.approx([-0.4, 4.4]), pytest.approx([8.0, 32.0])]
    task = get_task("regress", scale="fit", **learnt)
    row = {"inputs": [4.4, 20.0], "values": [200.0]}
    assert task.target(row) == values_to_tokens([0.0])  # 200 is the centre of [80, 320]
    assert values_to_tokens([256.0, 0.0]) in task.to_example(row, rng=None).text  # 4.4 -> +M, 20 -> centre
    answer = task.parse(values_to_tokens([128.0]), {"inputs": [1.0, 1.0]})[0]  # +M/2 -> 200 + 60 = 260
    assert abs(answer - 260.0) <= value_error_bound(128.0) * 120 / 256
    # a row's own range still wins over the fitted one
    assert task.target({**row, "value_range": [0, 400]}) == values_to_tokens([0.0])
    assert task.target({**row, "values": [100.0], "value_range": [0, 400]}) == values_to_tokens([-128.0])


def test_rows_of_different_lengths_share_one_fitted_input_range():
    rows = [{"inputs": [1.0], "values": [5.0]}, {"inputs": [3.0, 9.0], "values": [7.0]}]
    fitted = get_task("regress", scale="fit").fit(rows)["fitted"]
    assert fitted["value_range"] == pytest.approx([4.8, 7.2]) and fitted["input_range"] == pytest.approx([0.2, 9.8])


def test_inputs_past_the_fitted_range_are_clamped_with_a_warning_and_bad_scalers_are_refused():
    task = get_task("regress", scale="fit", **get_task("regress", scale="fit").fit(FIT_ROWS))
    with pytest.warns(UserWarning, match=r"\[\(1, 99.0\)\].*clamped"):
        prompt = task.prompt({"inputs": [0.0, 99.0]}, {}, None)
    assert values_to_tokens([value_of(-0.4, 4.4, 0.0), 256.0]) in prompt
    with pytest.raises(InputError, match="fitted on rows of 2 inputs"):
        task.prompt({"inputs": [1.0, 2.0, 3.0]}, {}, None)
    with pytest.raises(InputError, match="not fitted yet"):
        get_task("regress", scale="fit").target({"inputs": [1.0], "values": [3.0]})
    with pytest.raises(InputError, match="needs scale: fit"):
        get_task("regress", fitted={"value_range": [0, 1]})
    with pytest.raises(InputError, match="fitted input_range\\[1\\]"):
        get_task("regress", scale="fit", fitted={"input_range": [[0, 1], [3, 2]]})
    # numbers beyond +-256 are no reason to refuse a row when a scaler maps them
    get_task("regress", scale="fit").check_row({"inputs": [1e6], "values": [-3e4]})


def value_of(low: float, high: float, x: float) -> float:
    """x on [low, high] in the tokens' domain [-256, 256], by hand."""
    return (x - (low + high) / 2) / ((high - low) / 2) * 256.0


def test_training_fits_the_scaler_and_the_saved_model_reads_numbers_with_it(tmp_path):
    import json
    from pathlib import Path

    from unified import Model
    from unified.training import load_config, train

    data = tmp_path / "data"
    data.mkdir()
    rows = [{"inputs": [float(i), float(1000 + 50 * i)], "values": [float(2000 + 100 * i)]} for i in range(8)]
    (data / "regress.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    smoke = Path(__file__).parents[1] / "training" / "configs" / "tiny-smoke.yaml"
    train(load_config(smoke, [f"output_dir={tmp_path / 'run'}", f"data.train_dir={data}", "data.synthetic=null",
                              "data.tasks=[regress]", "optim.max_steps=2", "log_with=none", "checkpoint.every=0",
                              "task_options={regress: {scale: fit}}", "tokenizer.text_vocab_size=60"]),
          progress=False)
    saved = json.loads((tmp_path / "run" / "final" / "task_options.json").read_text())["regress"]
    # targets 2000..2700 -> [1930, 2770]; inputs 0..7 -> [-0.7, 7.7], 1000..1350 -> [965, 1385]
    assert saved["scale"] == "fit"
    assert saved["fitted"]["value_range"] == pytest.approx([1930.0, 2770.0])
    assert saved["fitted"]["input_range"] == [pytest.approx([-0.7, 7.7]), pytest.approx([965.0, 1385.0])]
    model = Model.from_pretrained(tmp_path / "run" / "final")
    (answer,) = model.generate(task="regress", inputs=[3.0, 1150.0])  # one value
    assert 1930.0 <= answer <= 2770.0  # an answer inside the fitted range, in the targets' own units


# ---------------------------------------------------------------------------------------------- spacing: uniform
def _uniform_bin(x: float, low: float, high: float, n: int = 1024) -> int:
    """Bin of x with [low, high] spread evenly over n bins: floor((x - low) / (high - low) * n), the last closed."""
    return min(n - 1, math.floor((x - low) / (high - low) * n))


def test_uniform_spacing_spreads_the_range_evenly_over_the_bins():
    task = get_task("regress", spacing="uniform")
    row = {"question": "q?", "values": [75.0], "value_range": [0, 100]}
    assert task.target(row) == "<val_768>"  # 75 is three quarters of [0, 100]: bin 0.75 * 1024
    for x in (0.0, 3.3, 12.34, 49.9, 50.0, 61.7, 99.95, 100.0):
        assert task.target({**row, "values": [x]}) == f"<val_{_uniform_bin(x, 0, 100)}>"
    # an answer is its bin's centre: bin 768 covers [75, 75 + 100/1024)
    assert task.parse("<val_768>", row) == pytest.approx([75 + 50 / 1024])
    assert task.allowed_bins(row) == range(1024)
    # inputs too: 0.5 on [-1, 1] is three quarters of the range
    assert "<val_768>" in task.to_example({"inputs": [0.5], "values": [1.0], "value_range": [0, 2],
                                           "input_range": [-1, 1]}, rng=None).text


def test_mu_law_spacing_crowds_the_middle_of_a_range_which_uniform_does_not():
    """Why the option exists: with a range laid linearly onto [-256, 256] and then companded, the middle tenth of
    the range (45..55 of [0, 100], i.e. |y| <= 25.6) is |F| <= log(2561) / log(25601) of the companded [-1, 1], so
    1024 * log(2561) / log(25601) = 791 bins."""
    row = {"question": "q?", "values": [50.0], "value_range": [0, 100]}
    bins = {s: [int(get_task("regress", spacing=s).target({**row, "values": [x]})[5:-1]) for x in (45.0, 55.0)]
            for s in ("mu_law", "uniform")}
    assert bins["mu_law"][1] - bins["mu_law"][0] == pytest.approx(1024 * math.log(2561) / math.log(25601), abs=1)
    assert bins["uniform"] == [_uniform_bin(45, 0, 100), _uniform_bin(55, 0, 100)] == [460, 563]


def test_uniform_spacing_reads_the_distribution_in_the_rows_units():
    row = {"question": "q?", "num_values": 1, "value_range": [0, 100]}
    probs = torch.zeros(1, 1024)
    probs[0, 700], probs[0, 800] = 0.5, 0.5
    centre = [50 + (-1 + (2 * k + 1) / 1024) * 50 for k in (700, 800)]  # each bin's centre, evenly spaced
    mean = get_task("regress", decode="mean", spacing="uniform").parse_distribution("", probs, row)
    assert mean == pytest.approx([sum(centre) / 2])
    with pytest.raises(InputError, match="regress spacing='uniform'.*scale: none"):
        get_task("regress", scale="none", spacing="uniform")
    with pytest.raises(InputError, match="regress spacing='log'"):
        get_task("regress", spacing="log")


def test_input_noise_jitters_training_prompts_by_a_share_of_the_range():
    import random
    import re
    import statistics

    task = get_task("regress", spacing="uniform", input_noise=0.1)
    row = {"inputs": [0.0, 1.0], "values": [1.0], "value_range": [0, 2], "input_range": [-1, 1]}
    assert re.findall(r"<val_(\d+)>", task.to_example(row, rng=None).text) == ["512", "1023"]  # evaluation: exact
    rng = random.Random(0)
    draws = [[int(b) for b in re.findall(r"<val_(\d+)>", task.to_example(row, rng=rng).text)] for _ in range(2000)]
    middle, end = zip(*draws)
    # 0 moves by N(0, 0.1 * 1): on 1,024 even bins over [-1, 1] that is 51.2 bins of standard deviation around 512
    assert statistics.mean(middle) == pytest.approx(512, abs=4)
    assert statistics.stdev(middle) == pytest.approx(51.2, rel=0.06)
    # the range's end stays inside it: about half the draws clamp back to the last bin, none leave
    assert max(end) == 1023 and 0.4 < end.count(1023) / len(end) < 0.6
    with pytest.raises(InputError, match="regress input_noise=0.1: .*scale: none"):
        get_task("regress", scale="none", input_noise=0.1)
    with pytest.raises(InputError, match="regress input_noise=1.5"):
        get_task("regress", input_noise=1.5)
    with pytest.raises(InputError, match="this row's inputs have none"):
        task.check_row({"inputs": [3.0], "values": [1.0]})
    with pytest.raises(InputError, match="none of the 2 training rows has inputs"):
        task.fit([{"question": "q?", "values": [1.0], "value_range": [0, 2]}] * 2)
    assert task.fit([row]) == {}

"""regress never clips a number silently: a row's `value_range` is mapped onto the value tokens' domain [-256, 256]
and answers are mapped back (hand-computed values below); numbers beyond the domain without a range are refused."""

from __future__ import annotations

import pytest

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

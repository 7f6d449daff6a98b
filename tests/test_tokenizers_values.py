"""Mu-law value tokens and integer tokens: hand-computed companding, the analytical error bound, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unified.errors import InputError
from unified.tokenizers import (
    bin_to_value,
    int_to_tokens,
    inverse_mu_law,
    mu_law,
    tokens_to_ints,
    tokens_to_values,
    value_error_bound,
    value_to_bin,
    values_to_tokens,
)

# The analytical bound, written here independently of the library: for |x| <= M,
#   |x - decoded| <= (|x| + 1/mu) * (B^(1/n) - 1),  B = M * mu + 1 = 25601, n = 1024 bins.
B = 256 * 100 + 1
GROWTH = B ** (1 / 1024) - 1  # 0.0099618


def bound(x: float, scale: float = 1.0) -> float:
    return (abs(x) + scale / 100) * GROWTH


def decode_by_hand(k: int, n: int = 1024) -> float:
    centre = -1 + (2 * k + 1) / n
    return math.copysign((B ** abs(centre) - 1) / 100, centre)


def test_companding_by_hand():
    assert mu_law(1.0) == pytest.approx(math.log(101) / math.log(25601), rel=1e-15)
    assert mu_law(-1.0) == pytest.approx(-math.log(101) / math.log(25601), rel=1e-15)
    assert mu_law(256.0) == pytest.approx(1.0, rel=1e-15) and mu_law(0.0) == 0.0
    for x in (-200.0, -0.3, 0.0, 1e-6, 7.0, 256.0):
        assert inverse_mu_law(mu_law(x)) == pytest.approx(x, rel=1e-12, abs=1e-15)


def test_bins_by_hand():
    # y = F(x); bin = floor((y + 1) / 2 * 1024): 0 -> 512, F(1) = 0.454674 -> 744.79 -> 744,
    # F(-1) -> 279.2 -> 279, +-M and beyond -> the end bins.
    xs = (0.0, 1.0, -1.0, 256.0, -256.0, 1e9, -1e9)
    assert [value_to_bin(x) for x in xs] == [512, 744, 279, 1023, 0, 1023, 0]
    assert values_to_tokens([0.0, 1.0]) == "<val_512><val_744>"
    assert values_to_tokens(1.0) == "<val_744>"
    for k in (0, 279, 511, 512, 744, 1023):
        assert bin_to_value(k) == pytest.approx(decode_by_hand(k), rel=1e-12)
    zero = (B ** (1 / 1024) - 1) / 100  # 9.96e-5: 0 decodes to the centre of the first positive bin
    assert tokens_to_values("<val_512>")[0] == pytest.approx(zero, rel=1e-12)


def test_measured_worst_case_matches_the_analytical_bound():
    # A dense grid over [-256, 256] plus both sides of every bin edge, where the error peaks.
    edges = np.array([inverse_mu_law(-1 + 2 * k / 1024) for k in range(1, 1024)])
    grid = np.concatenate([np.linspace(-256.0, 256.0, 100_001), edges * (1 - 1e-10), edges * (1 + 1e-10)])
    decoded = np.array(tokens_to_values(values_to_tokens(grid.tolist())))
    errors = np.abs(decoded - grid)
    bounds = (np.abs(grid) + 0.01) * GROWTH
    assert np.all(errors <= bounds * (1 + 1e-9))
    # Where the bound is reached, computed by hand: x in the inner half of its bin (nearer 0) decodes outwards
    # and reaches it at the inner edge; in the outer half the error peaks at bound / B^(1/n) = bound/1.00996.
    y = np.sign(grid) * np.log1p(np.abs(grid) * 100) / np.log(B)
    centre = -1 + (2 * np.minimum(np.floor((y + 1) / 2 * 1024), 1023) + 1) / 1024
    outer = np.abs(y) > np.abs(centre)
    ratio = errors / bounds
    assert ratio[~outer].max() == pytest.approx(1.0, rel=1e-6)
    assert ratio[outer].max() == pytest.approx(1 / (1 + GROWTH), rel=1e-6)
    # The largest error is at |x| = M: M - decoded(top bin) = 256 - 253.4748 = 2.5252, analytically.
    top_error = 256 - decode_by_hand(1023)
    assert errors.max() == pytest.approx(top_error, rel=1e-9)
    assert top_error == pytest.approx(2.52516, abs=1e-5)
    # Near zero the error is ~1e-4 absolute.
    assert errors[np.abs(grid) < 0.01].max() <= bound(0.01)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-256.0, 256.0), min_size=1, max_size=8))
def test_round_trip_is_within_the_bound(xs):
    for x, got in zip(xs, tokens_to_values(values_to_tokens(xs))):
        assert abs(got - x) <= bound(x) * (1 + 1e-9)


@settings(max_examples=200, deadline=None)
@given(x=st.floats(-2560.0, 2560.0), scale=st.sampled_from([0.5, 10.0]))
def test_scale_maps_the_range_and_the_bound(x, scale):
    x = max(-256 * scale, min(256 * scale, x))
    got = tokens_to_values(values_to_tokens(x, scale=scale), scale=scale)[0]
    assert abs(got - x) <= bound(x, scale) * (1 + 1e-9)


def test_clipping_beyond_m():
    clipped = tokens_to_values(values_to_tokens([1000.0, -1e30]))
    assert clipped == pytest.approx([253.47484, -253.47484], rel=1e-7)
    assert value_error_bound(1000.0) == pytest.approx(1000 - decode_by_hand(1023))
    assert value_error_bound(3.0) == pytest.approx(bound(3.0))


def test_arrays_tensors_and_parsing():
    expected = values_to_tokens([0.5, -2.0])
    assert values_to_tokens(np.array([0.5, -2.0])) == values_to_tokens(torch.tensor([0.5, -2.0])) == expected
    assert values_to_tokens(np.float32(0.5)) == values_to_tokens(0.5)
    assert tokens_to_values("no values here <loc_3>") == []
    ends = [decode_by_hand(0), decode_by_hand(1023)]
    assert tokens_to_values("x <val_0> y <val_1023>") == pytest.approx(ends)


@pytest.mark.parametrize("value, match", [
    (float("nan"), "value=nan"), (float("inf"), "value=inf"), (-float("inf"), "value=-inf"),
    ([1.0, float("nan")], "value=nan"), ("1.5", "value='1.5'"), (None, "value=None"), (True, "value=True"),
    ([[1.0]], "flat"),
])
def test_bad_values_raise_naming_them(value, match):
    with pytest.raises(InputError, match=match):
        values_to_tokens(value)


def test_bad_value_tokens_and_options_raise():
    with pytest.raises(InputError, match=r"<val_1024>.*<val_0>\.\.<val_1023>"):
        tokens_to_values("<val_1024>")
    for scale in (0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match="scale"):
            values_to_tokens(1.0, scale=scale)
    with pytest.raises(InputError, match="bin"):
        bin_to_value(1024)


# ---------------------------------------------------------------------------------------------- integers
@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 255), max_size=10))
def test_integers_round_trip_exactly(ns):
    assert tokens_to_ints(int_to_tokens(ns)) == ns


def test_integers_by_hand():
    assert int_to_tokens(0) == "<int_0>" and int_to_tokens([7, 255]) == "<int_7><int_255>"
    assert int_to_tokens(np.array([3, 4])) == "<int_3><int_4>" and int_to_tokens(np.int64(9)) == "<int_9>"
    assert int_to_tokens(1000, num_tokens=1001) == "<int_1000>"
    assert tokens_to_ints("class <int_3> of <int_10>") == [3, 10]


@pytest.mark.parametrize("n, match", [(256, "int=256"), (-1, "int=-1"), (3.5, "int=3.5"), (3.0, "int=3.0"),
                                      (True, "int=True"), ("3", "int='3'"), ([1, 300], "int=300")])
def test_bad_integers_raise_naming_them(n, match):
    with pytest.raises(InputError, match=match):
        int_to_tokens(n)


def test_bad_integer_tokens_raise():
    with pytest.raises(InputError, match=r"<int_256>.*<int_0>\.\.<int_255>"):
        tokens_to_ints("<int_256>")
    with pytest.raises(InputError, match="num_tokens"):
        int_to_tokens(1, num_tokens=0)

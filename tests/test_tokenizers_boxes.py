"""Boxes and points as location tokens: hand-computed bins, round-trip error bound, Box geometry, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unified.errors import InputError
from unified.tokenizers import Box, box_to_tokens, point_to_tokens, tokens_to_box, tokens_to_point

SIZES = st.tuples(st.floats(1.0, 5000.0), st.floats(1.0, 5000.0))
BINS = st.sampled_from([2, 10, 100, 1000, 4096])


@st.composite
def boxes_in_images(draw):
    width, height = draw(SIZES)
    x1, x2 = sorted(draw(st.lists(st.floats(0.0, width), min_size=2, max_size=2, unique=True)))
    y1, y2 = sorted(draw(st.lists(st.floats(0.0, height), min_size=2, max_size=2, unique=True)))
    return Box(x1, y1, x2, y2), (width, height)


def test_image_corners_are_the_first_and_last_bins():
    assert box_to_tokens((0, 0, 640, 480), (640, 480)) == "<loc_0><loc_0><loc_999><loc_999>"
    assert box_to_tokens(Box(0, 0, 1, 1), (1, 1), num_bins=2) == "<loc_0><loc_0><loc_1><loc_1>"
    assert tokens_to_box("<loc_0><loc_0><loc_999><loc_999>", (640, 480)) == Box(0.0, 0.0, 640.0, 480.0)


def test_hand_computed_bins():
    # 64/640 * 999 = 99.9 -> 100; 48/480 * 999 -> 100; 128/640 * 999 = 199.8 -> 200;
    # 97/480 * 999 = 201.9 -> 202
    assert box_to_tokens((64, 48, 128, 97), (640, 480)) == "<loc_100><loc_100><loc_200><loc_202>"
    # bin 100 -> 100/999 * 640 = 64.064..., bin 202 -> 202/999 * 480 = 97.057...
    box = tokens_to_box("<loc_100><loc_100><loc_200><loc_202>", (640, 480))
    assert box == Box(100 / 999 * 640, 100 / 999 * 480, 200 / 999 * 640, 202 / 999 * 480)
    assert point_to_tokens((320.4, 0.2), (640, 480), num_bins=101) == "<loc_50><loc_0>"


@settings(max_examples=300, deadline=None)
@given(case=boxes_in_images(), num_bins=BINS)
def test_box_round_trip_is_within_half_a_bin(case, num_bins):
    box, (width, height) = case
    back = tokens_to_box(box_to_tokens(box, (width, height), num_bins), (width, height), num_bins)
    tol_x, tol_y = width / (num_bins - 1) / 2, height / (num_bins - 1) / 2  # the documented worst case
    for got, want, tol in zip(back, box, (tol_x, tol_y, tol_x, tol_y)):
        assert abs(got - want) <= tol * (1 + 1e-9)


@settings(max_examples=200, deadline=None)
@given(size=SIZES, fx=st.floats(0, 1), fy=st.floats(0, 1), num_bins=BINS)
def test_point_round_trip_is_within_half_a_bin(size, fx, fy, num_bins):
    point = (fx * size[0], fy * size[1])
    x, y = tokens_to_point(point_to_tokens(point, size, num_bins), size, num_bins)
    assert abs(x - point[0]) <= size[0] / (num_bins - 1) / 2 * (1 + 1e-9)
    assert abs(y - point[1]) <= size[1] / (num_bins - 1) / 2 * (1 + 1e-9)


def test_the_worst_case_is_reached_half_way_between_bins():
    # 0.5 of a bin from bin 0 is the largest error: 640 / 999 / 2 pixels.
    x = 640 / 999 / 2
    back = tokens_to_box(box_to_tokens((x, 0, 640, 480), (640, 480)), (640, 480))
    assert math.isclose(abs(back.x1 - x), 640 / 999 / 2)


def test_tokens_to_box_reads_the_first_four_location_tokens():
    text = "a dog <val_3> at <loc_1><loc_2><loc_3><loc_4> and <loc_5><loc_6>"
    assert tokens_to_box(text, (999, 999)) == Box(1, 2, 3, 4)
    assert tokens_to_point(text, (999, 999)) == (1.0, 2.0)
    with pytest.raises(InputError, match="found 2"):
        tokens_to_box("<loc_1> <loc_2>", (640, 480))
    with pytest.raises(InputError, match="found 0"):
        tokens_to_point("no tokens here", (640, 480))
    with pytest.raises(InputError, match=r"<loc_1000>.*<loc_0>\.\.<loc_999>"):
        tokens_to_box("<loc_1><loc_2><loc_3><loc_1000>", (640, 480))


def test_inputs_may_be_arrays_and_tensors():
    expected = box_to_tokens((10, 20, 30, 40), (100, 100))
    assert box_to_tokens(np.array([10, 20, 30, 40]), np.array([100, 100])) == expected
    assert box_to_tokens(torch.tensor([10.0, 20.0, 30.0, 40.0]), (100, 100)) == expected


@pytest.mark.parametrize("box, reason", [
    ((-1, 0, 10, 10), "outside"),
    ((0, 0, 641, 10), "outside"),
    ((0, 0, 10, 481), "outside"),
    ((650, 0, 660, 10), "outside"),
    ((10, 0, 5, 10), "x2 must be greater than x1"),
    ((5, 0, 5, 10), "x2 must be greater than x1"),
    ((0, 10, 5, 2), "y2 must be greater than y1"),
    ((float("nan"), 0, 5, 5), "finite"),
    ((0, 0, float("inf"), 5), "finite"),
    ((0, 0, 5), "4 coordinates"),
    ("0 0 5 5", "4 coordinates"),
    ((0, 0, "5", 5), "real numbers"),
])
def test_bad_boxes_raise_naming_the_box(box, reason):
    with pytest.raises(InputError, match=reason) as err:
        box_to_tokens(box, (640, 480))
    assert str(err.value).startswith(f"box={box!r}")


@pytest.mark.parametrize("size", [(0, 480), (640, -1), (float("nan"), 480), (640,), "640x480"])
def test_bad_image_sizes_raise(size):
    with pytest.raises(InputError, match="image_size"):
        box_to_tokens((0, 0, 1, 1), size)
    with pytest.raises(InputError, match="image_size"):
        tokens_to_box("<loc_0><loc_0><loc_1><loc_1>", size)


def test_bad_points_and_bins_raise():
    with pytest.raises(InputError, match=r"point=\(641, 0\)"):
        point_to_tokens((641, 0), (640, 480))
    with pytest.raises(InputError, match="point"):
        point_to_tokens((float("nan"), 0), (640, 480))
    for bins in (1, 0, 2.5, True):
        with pytest.raises(InputError, match="num_bins"):
            box_to_tokens((0, 0, 1, 1), (2, 2), num_bins=bins)


def test_box_geometry():
    a, b = Box(0, 0, 10, 10), Box(5, 0, 15, 10)
    assert (a.width, a.height, a.area) == (10.0, 10.0, 100.0)
    assert a.iou(b) == pytest.approx(50 / 150)
    assert a.iou(a) == 1.0 and a.iou(Box(20, 20, 30, 30)) == 0.0
    assert a.iou((0, 0, 10, 5)) == pytest.approx(0.5)
    inverted = Box(10, 10, 0, 0)
    assert inverted.area == 0.0 and inverted.iou(a) == 0.0 and inverted.iou(inverted) == 0.0
    assert tuple(Box(1, 2, 3, 4)) == (1.0, 2.0, 3.0, 4.0) and isinstance(Box(1, 2, 3, 4).x1, float)
    with pytest.raises(InputError, match="box.x2"):
        Box(0, 0, "wide", 1)

"""Time tokens: hand-computed bins, round trip within duration / (K - 1) / 2, spans, errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unified.errors import InputError
from unified.tokenizers import span_to_tokens, time_to_token, token_to_time, tokens_to_span


def test_hand_computed_bins():
    assert time_to_token(0.0, 30.0) == "<time_0>" and time_to_token(30.0, 30.0) == "<time_99>"
    assert time_to_token(10.0, 30.0) == "<time_33>"  # 10 / 30 * 99 = 33
    assert time_to_token(1.0, 30.0) == "<time_3>"  # 3.3 -> 3
    assert time_to_token(2.5, 10.0, num_bins=5) == "<time_1>"  # 2.5 / 10 * 4 = 1
    assert token_to_time("<time_33>", 30.0) == pytest.approx(10.0)
    assert token_to_time("a dog barks at <time_3> and <time_9>", 99.0) == pytest.approx(3.0)
    assert span_to_tokens(3.0, 7.5, 30.0) == "<time_10><time_25>"  # 9.9 -> 10, 24.75 -> 25
    assert tokens_to_span("from <time_10> to <time_25>", 99.0) == pytest.approx((10.0, 25.0))


@settings(max_examples=300, deadline=None)
@given(duration=st.floats(0.01, 10_000.0), frac=st.floats(0.0, 1.0),
       num_bins=st.sampled_from([2, 10, 100, 1000]))
def test_round_trip_is_within_half_a_bin(duration, frac, num_bins):
    t = min(duration, frac * duration)
    back = token_to_time(time_to_token(t, duration, num_bins), duration, num_bins)
    assert abs(back - t) <= duration / (num_bins - 1) / 2 * (1 + 1e-9)


@settings(max_examples=200, deadline=None)
@given(duration=st.floats(0.01, 10_000.0), fracs=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2))
def test_spans_round_trip(duration, fracs):
    start, end = sorted(min(duration, f * duration) for f in fracs)
    got_start, got_end = tokens_to_span(span_to_tokens(start, end, duration), duration)
    tol = duration / 99 / 2 * (1 + 1e-9)
    assert abs(got_start - start) <= tol and abs(got_end - end) <= tol and got_start <= got_end


@pytest.mark.parametrize("seconds, duration, match", [
    (-0.1, 10.0, "seconds=-0.1"), (10.5, 10.0, "seconds=10.5"), (float("nan"), 10.0, "seconds=nan"),
    (1.0, 0.0, "duration=0.0"), (1.0, -5.0, "duration=-5.0"), (1.0, float("inf"), "duration=inf"),
    ("1", 10.0, "seconds='1'"),
])
def test_bad_times_raise_naming_them(seconds, duration, match):
    with pytest.raises(InputError, match=match):
        time_to_token(seconds, duration)


def test_bad_spans_and_tokens_raise():
    with pytest.raises(InputError, match="end must not be before start"):
        span_to_tokens(5.0, 4.0, 10.0)
    with pytest.raises(InputError, match="found none"):
        token_to_time("no time here", 10.0)
    with pytest.raises(InputError, match="found 1"):
        tokens_to_span("<time_3>", 10.0)
    with pytest.raises(InputError, match=r"<time_100>.*<time_0>\.\.<time_99>"):
        token_to_time("<time_100>", 10.0)
    with pytest.raises(InputError, match="num_bins"):
        time_to_token(1.0, 10.0, num_bins=1)

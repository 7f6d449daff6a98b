"""Time tokens (Vid2Seq): a moment as its relative position in a clip, ``<time_0>`` .. ``<time_{K-1}>``.

A time ``t`` seconds into a clip of ``duration`` seconds goes to bin ``round(t / duration * (K - 1))`` (K =
`num_bins`, 100 by default) and comes back as ``bin / (K - 1) * duration``: at most ``duration / (K - 1) / 2``
seconds off (0.15 s on a 30 s clip). Relative bins make the same tokens serve clips of any length.

Example:
    >>> span_to_tokens(3.0, 7.5, duration=30.0)
    '<time_10><time_25>'
    >>> tokens_to_span("a dog barks <time_10><time_25>", duration=30.0)
    (3.0303030303030303, 7.575757575757576)
"""

from __future__ import annotations

from unified.errors import InputError
from unified.tokenizers.grammar import check_count, check_real, find_indices, format_token, token_span

DEFAULT_TIME_BINS = 100  # = VocabLayout.num_time_bins


def time_to_token(seconds: float, duration: float, num_bins: int = DEFAULT_TIME_BINS) -> str:
    """The time token of `seconds` into a clip of `duration` seconds (0 <= seconds <= duration)."""
    seconds, duration = check_real("seconds", seconds), _duration(duration)
    n = check_count("num_bins", num_bins, 2)
    if not 0.0 <= seconds <= duration:
        raise InputError("seconds", seconds,
                         f"outside the clip; expected 0 <= seconds <= duration={duration:g}")
    return format_token("time", min(n - 1, round(seconds / duration * (n - 1))))


def token_to_time(token_or_text: str, duration: float, num_bins: int = DEFAULT_TIME_BINS) -> float:
    """Seconds of the first time token in `token_or_text` (a token, or text holding one)."""
    duration, n = _duration(duration), check_count("num_bins", num_bins, 2)
    bins = find_indices(token_or_text, "time", n)
    if not bins:
        raise InputError("text", token_or_text,
                         f"expected a time token ({token_span('time', n)}), found none")
    return bins[0] / (n - 1) * duration


def span_to_tokens(start: float, end: float, duration: float, num_bins: int = DEFAULT_TIME_BINS) -> str:
    """Two time tokens for the segment [start, end] of a clip; needs 0 <= start <= end <= duration."""
    start, end = check_real("start", start), check_real("end", end)
    if end < start:
        raise InputError("span", (start, end), "end must not be before start")
    return time_to_token(start, duration, num_bins) + time_to_token(end, duration, num_bins)


def tokens_to_span(text: str, duration: float, num_bins: int = DEFAULT_TIME_BINS) -> tuple[float, float]:
    """(start, end) in seconds from the first two time tokens in `text`, as written (not reordered)."""
    duration, n = _duration(duration), check_count("num_bins", num_bins, 2)
    bins = find_indices(text, "time", n)
    if len(bins) < 2:
        raise InputError("text", text, f"expected 2 time tokens ({token_span('time', n)}) for a span, "
                         f"found {len(bins)}")
    return bins[0] / (n - 1) * duration, bins[1] / (n - 1) * duration


def _duration(duration: float) -> float:
    # Times are divided by it; a zero or negative duration is a broken clip, not a clip of no length.
    duration = check_real("duration", duration)
    if duration <= 0:
        raise InputError("duration", duration, "expected a positive number of seconds")
    return duration

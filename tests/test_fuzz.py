"""Hypothesis fuzzing of what users hand us: text to the tokenizer, rows to every task, examples to the processor.
Whatever they are, the answer is a result or a `unified.errors` error naming the input, never another exception
(a KeyError from prompt formatting, a TypeError from a comparison, an IndexError from an id)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from task_rows import tiny_stack

from unified.errors import UnifiedError
from unified.task_zoo import get_task, list_tasks

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def stack():
    tokenizer, processor, _ = tiny_stack()
    return tokenizer, processor


def _only_ours(call):
    try:
        return call()
    except UnifiedError as err:
        assert str(err)  # names the input and says why
        return err


TOKENISH = st.sampled_from(["<loc_", "<loc_3>", "<loc_99999>", "<val_-1>", "<int_x>", "<time_012>", "</s>",
                            "<pad>", "<video>", "<image>", "<", ">", "_", "\u00e9", "\u4e2d", "\U0001f600", "\x00",
                            "\t", "\n", " "])
TEXT = st.lists(st.one_of(st.text(max_size=6), TOKENISH), max_size=12).map("".join)


@SETTINGS
@given(text=TEXT)
def test_tokenizer_encode_and_decode_take_any_text(stack, text):
    tokenizer, _ = stack
    ids = _only_ours(lambda: tokenizer.encode(text, add_eos=True))
    if isinstance(ids, list):
        assert all(0 <= i < tokenizer.vocab_size for i in ids)
        assert isinstance(tokenizer.decode(ids), str)


@SETTINGS
@given(ids=st.lists(st.one_of(st.integers(-5, 5000), st.floats(allow_nan=True), st.text(max_size=2), st.none()),
                    max_size=10))
def test_tokenizer_decode_takes_any_ids(stack, ids):
    tokenizer, _ = stack
    out = _only_ours(lambda: tokenizer.decode(ids))
    assert isinstance(out, (str, UnifiedError))


VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=8), TOKENISH),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8)


@SETTINGS
@given(data=st.data())
def test_every_task_takes_any_row(stack, data):
    tokenizer, _ = stack
    name = data.draw(st.sampled_from(list_tasks()))
    task = get_task(name, layout=tokenizer.layout)
    keys = [*task.row_fields, *task.optional_fields, *task.derived_fields]
    row = dict(task.example_row)
    for key in data.draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)) if keys else []:
        row[key] = data.draw(VALUE)  # some fields replaced by anything at all
    if data.draw(st.booleans()) and keys:
        row.pop(data.draw(st.sampled_from(keys)), None)

    def use():
        task.check_row(row)
        example = task.to_example(row, rng=None)
        task.truth(row)
        return example

    _only_ours(use)


ARRAY = st.builds(lambda shape, dtype: np.zeros(shape, dtype),
                  st.lists(st.integers(0, 5), min_size=0, max_size=5).map(tuple),
                  st.sampled_from([np.uint8, np.float32, np.int64, np.bool_]))


@SETTINGS
@given(data=st.data())
def test_processor_takes_any_example(stack, data):
    _, processor = stack
    placeholders = data.draw(st.lists(st.sampled_from(["<image>", "<video>", "<audio>", "word"]), max_size=4))
    example = {"text": " ".join(placeholders)}
    for key in ("image", "video", "audio"):
        if data.draw(st.booleans()):
            example[key] = data.draw(st.one_of(ARRAY, st.lists(ARRAY, max_size=2), st.text(max_size=4),
                                               st.integers(), st.binary(max_size=16)))
    if data.draw(st.booleans()):
        example["target"] = data.draw(st.one_of(TEXT, st.integers(), st.none()))
    _only_ours(lambda: processor([example]))

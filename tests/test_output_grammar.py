"""Outputs checked like inputs: each grammar bounds what decoding may write. Property tests over random scores
(the logits processors alone) and over random tiny models end to end (`Model.generate`)."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from task_rows import saved_tiny_model, write_media

from unified.model.generation import BinsLogitsProcessor, TextOnlyLogitsProcessor


def greedy(processor, steps: int, vocab: int, seed: int, prompt: int = 7) -> list[int]:
    """Greedy decoding of `steps` tokens from random scores through `processor` (beam-free, batch of one)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.tensor([[prompt]])
    for _ in range(steps):
        scores = processor(ids, torch.randn(1, vocab, generator=gen))
        ids = torch.cat([ids, scores.argmax(-1, keepdim=True)], dim=1)
    return ids[0, 1:].tolist()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), start=st.integers(0, 50), size=st.integers(2, 40), lo=st.integers(0, 30))
def test_box_bins_increase_and_stay_in_range(seed, start, size, lo):
    ids = range(start, start + size)
    bins = range(min(lo, size - 2), size)
    out = greedy(BinsLogitsProcessor(ids, bins=bins, increasing=((2, 0), (3, 1))), 4, start + size + 5, seed)
    x1, y1, x2, y2 = (t - start for t in out)
    assert all(t in ids for t in out)
    assert all(b in bins for b in (x1, y1, x2, y2))
    assert x1 < x2 and y1 < y2


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), first=st.integers(4, 60), extra=st.integers(1, 30))
def test_text_never_writes_closed_ids(seed, first, extra):
    out = greedy(TextOnlyLogitsProcessor(first, closed=[0, 3]), 6, first + extra, seed)
    assert all(t < first and t not in (0, 3) for t in out)


# ---------------------------------------------------------------------------------------------- end to end
NUMBERED = re.compile(r"<(loc|val|int|time)_\d+>|<(image|video|audio)>")


@pytest.fixture(scope="module", params=[0, 1, 2])
def model(request, tmp_path_factory):
    return saved_tiny_model(tmp_path_factory.mktemp(f"model{request.param}"), seed=request.param)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return write_media(tmp_path_factory.mktemp("media"))


def test_random_models_answer_inside_each_grammar(model, media):
    caption = model.generate(task="caption", video=media["video"], max_new_tokens=12)
    assert not NUMBERED.search(caption), caption
    box = model.generate(task="grounding", image=media["image"], phrase="red square")
    assert 0 <= box.x1 < box.x2 <= 64 and 0 <= box.y1 < box.y2 <= 48, box  # the still is 64 x 48
    start, end = model.generate(task="temporal_grounding", video=media["video"], question="when?")
    assert 0 <= start < end <= 2.0  # the clip: 8 frames at 4 fps
    for low, high in ((0, 5), (-3, -1), (100, 120)):
        values = model.generate(task="regress", inputs=[1.0, 2.0], num_values=3, value_range=[low, high],
                                input_range=[0, 5])
        # a decoded bin centre may sit up to one bin (about 1 % of |x|) past the range's edge
        assert all(low - 0.02 * abs(low) - 0.01 <= v <= high + 0.02 * abs(high) + 0.01 for v in values), values


def test_without_the_text_constraint_a_random_model_writes_numbered_tokens(model, media):
    """The check above can fail: the same random model, decoding freely, writes non-text tokens (they are most of
    the vocabulary), so the caption's cleanliness comes from the grammar."""
    from unified.task_zoo import get_task
    from unified.task_zoo.batching import task_batch

    task = get_task("caption", layout=model.processor.tokenizer.layout)
    batch = task_batch(task, [{"video": media["video"]}], model.processor, with_target=False)
    batch.pop("labels", None)
    out = model.network.generate(**batch, max_new_tokens=12, do_sample=False)
    tok = model.processor.tokenizer
    written = out[0, 1:].tolist()
    assert any(t >= tok.first_non_text_id or t == tok.pad_token_id for t in written), written

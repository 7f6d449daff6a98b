"""The tasks that learn from unlabelled clips and their texts (`tags`, `span_corruption`, `clip_text_match`) against
truths worked out by hand, and the loss hook (`Task.own_loss`) weighted in the mixture like any task's loss."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from task_rows import task_rows, tiny_stack, write_media

from unified.errors import InputError
from unified.samples import CLIP
from unified.task_zoo import build_tasks, get_task
from unified.task_zoo.metrics import get_metric
from unified.task_zoo.tasks.clip_text_match import hard_negatives
from unified.task_zoo.tasks.span_corruption import corrupt, random_spans
from unified.training.batches import prepare
from unified.training.loss import prepared_mixed_loss


def test_tag_metrics_by_hand():
    predictions = [["cat", "dog", "car"], ["tree"], []]
    truths = [["dog", "car"], ["sky", "tree"], ["sun"]]
    # row 1: hits at ranks 2 and 3 -> (1/2 + 2/3) / 2 = 7/12; row 2: hit at rank 1 -> (1/1) / 2; row 3: 0
    assert get_metric("tags_map")(predictions, truths) == pytest.approx((7 / 12 + 1 / 2 + 0) / 3)
    # right 2 + 1 = 3; predicted 3 + 1 + 0, true 2 + 2 + 1 -> 2 * 3 / 9
    assert get_metric("tags_f1")(predictions, truths) == pytest.approx(6 / 9)
    assert get_metric("tags_p_at_1")(predictions, truths) == pytest.approx(1 / 3)
    assert get_metric("tags_map")([["Dog.", "dog"]], [["dog"]]) == 1.0  # normalised, repeats count once


def test_tags_answer_is_the_tag_list_and_parses_back():
    task = get_task("tags")
    row = {"video": "a.mp4", "tags": ["red", "circle", "moves left"]}
    assert task.to_example(row).target == "red, circle, moves left"
    assert task.parse("Red, circle,, moves left, red", row) == ["red", "circle", "moves left"]
    with pytest.raises(InputError, match="without commas"):
        task.check_row({"video": "a.mp4", "tags": ["a, b"]})


def test_span_corruption_layout_by_hand():
    words = "the quick brown fox jumps over the lazy dog".split()
    assert corrupt(words, [(1, 3), (6, 8)]) == ("the [0] fox jumps over [1] dog",
                                                "[0] quick brown [1] the lazy [2]")
    assert corrupt(["a", "b"], [(1, 2)]) == ("a [0]", "[0] b [1]")
    for seed in range(50):
        n = random.Random(seed).randint(2, 60)
        spans = random_spans(n, 0.15, 3.0, random.Random(seed))
        hidden = sum(end - start for start, end in spans)
        assert hidden == min(max(round(n * 0.15), 1), n - 1)
        assert spans[0][0] >= 1 and spans[-1][1] <= n  # a kept word first
        assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))  # apart: a kept word between spans
    task = get_task("span_corruption")
    row = {"text": "the quick brown fox jumps over the lazy dog"}
    first = task.to_example(row)  # evaluation: the spans drawn from the text itself, the same every time
    assert first.text == task.to_example(row).text and first.text.startswith("fill in the blanks: the ")
    shown, target = first.text.removeprefix("fill in the blanks: ").split(), first.target.split()
    assert sorted([w for w in shown if not w.startswith("[")] + [w for w in target if not w.startswith("[")]) == \
        sorted(row["text"].split())  # every word once: kept in the input or hidden in the target
    assert task.truth(row) == first.target


def test_hard_negatives_are_the_most_similar_other_texts():
    texts = ["a red circle moves left", "a red circle moves right", "a blue square", "A red circle moves left."]
    # 0 and 3 are the same text: 0's hardest is 1 (4 of 6 words shared); 2 shares only "a" with 0, 1 and 3 (1/7
    # each): the first, 0
    assert hard_negatives(texts) == [1, 0, 0, 1]
    assert hard_negatives(["same", "same"]) == [None, None]


@pytest.fixture(scope="module")
def stack_rows(tmp_path_factory):
    return tiny_stack(), task_rows(write_media(tmp_path_factory.mktemp("media")))


def test_clip_text_match_trains_on_its_rows_and_their_hard_negatives(stack_rows):
    (tokenizer, processor, _), rows = stack_rows
    task = get_task("clip_text_match")
    batch = task.loss_batch(rows["clip_text_match"], processor, None)
    answers = [tokenizer.decode([t for t in labels.tolist() if t >= 0]) for labels in batch["labels"]]
    # the 3 rows as given (the second a given negative), then each with its hardest batch negative
    assert answers == ["yes", "no", "yes", "no", "no", "no"]
    assert task.own_loss and not get_task("vqa").own_loss and get_task("retrieval").own_loss


def test_an_own_loss_task_is_weighted_in_the_mixture(stack_rows):
    (_, processor, model), rows = stack_rows
    tasks = build_tasks(["vqa", "clip_text_match"])
    named = [("vqa", r) for r in rows["vqa"]] + [("clip_text_match", r) for r in rows["clip_text_match"]]
    prepared = prepare(tasks, processor, named, None)
    assert prepared.own_rows == {"clip_text_match": 3} and prepared.names == ["vqa", "vqa"]
    model.eval()
    with torch.no_grad():
        one, parts = prepared_mixed_loss(tasks, prepared, model, "cpu", {"clip_text_match": 1.0})
        three, _ = prepared_mixed_loss(tasks, prepared, model, "cpu", {"clip_text_match": 3.0})
    # total = (vqa part * 2 rows + w * match part * 3 rows) / 5 rows: w from 1 to 3 adds 2 * part * 3 / 5
    assert float(three - one) == pytest.approx(2 * parts["clip_text_match"] * 3 / 5, rel=1e-5)


def test_masked_frames_takes_one_frame_out_and_matches_it_in_the_batch(stack_rows):
    (_, processor, model), rows = stack_rows
    task = get_task("masked_frames")
    clips = [rows["masked_frames"][0], {"video": str(CLIP)}]  # two different clips
    batch = task.loss_batch(clips, processor, None)
    full = processor.collate([processor.process({"text": "<video> x", "video": [c["video"]]}) for c in clips])
    real = int(full["pixel_mask"][0, 0].sum())
    middle = real // 2  # evaluation takes out the middle real frame
    assert batch["context_pixel_mask"][0, 0].tolist() == [t < real and t != middle for t in range(real)] + \
        [False] * (full["pixel_mask"].shape[2] - real)
    assert float(batch["context_pixel_values"][0, 0, middle].abs().sum()) == 0.0
    assert torch.equal(batch["frame_pixel_values"][:, 0, 0], full["pixel_values"][:, 0, middle])
    assert batch["frame_pixel_values"].shape[:3] == (2, 1, 1) and bool(batch["frame_pixel_mask"].all())
    gates = [p for n, p in model.named_parameters() if "gate" in n]
    with torch.no_grad():  # open the tanh gates (0 at init: media would not reach the text yet)
        for gate in gates:
            gate.fill_(0.5)
    model.train()
    model.zero_grad()
    loss = task.loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and float(model.embed_head.proj.weight.grad.abs().sum()) > 0
    model.eval()
    metrics, _ = task.evaluate(model, processor, clips, batch_size=2)
    assert 0.0 <= metrics["frame_recall_at_1"] <= 1.0
    with torch.no_grad():
        for gate in gates:
            gate.zero_()

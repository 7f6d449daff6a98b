"""Answer scores (`details` of `predict`, `Model.generate(return_score=True)`) against an independent computation: the
ids greedy `generate` writes, fed back as labels in one teacher-forced forward pass, mean log-probability by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from task_rows import task_rows, tiny_stack, write_media

from unified.task_zoo import build_tasks
from unified.task_zoo.batching import task_batch
from unified.task_zoo.decoding import constraint, encode_row, predict


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    media = write_media(tmp_path_factory.mktemp("media"))
    tokenizer, processor, model = tiny_stack(seed=3)
    return tokenizer, processor, model.eval(), task_rows(media)


def _forward_logprob(model, batch, labels):
    """Mean log-probability of `labels` (1, n) after one forward pass, by hand."""
    out = model(**batch, labels=labels)
    return -float(F.cross_entropy(out.logits[0].float(), labels[0], reduction="mean"))


GENERATED = ["caption", "vqa", "grounding", "temporal_grounding", "classify", "regress", "text2text", "video_mcqa"]


@pytest.mark.parametrize("name", GENERATED)
def test_generate_score_is_the_answer_mean_logprob(stack, name):
    tokenizer, processor, model, rows = stack
    task = build_tasks([name], {name: {"max_new_tokens": 6}}, tokenizer.layout)[name]
    row = {k: v for k, v in rows[name][0].items() if k not in task.target_fields or task.contrastive}
    row = task.complete(row, processor)
    details: list = []
    predict(task, model, processor, [row], details=details)
    batch = task_batch(task, [row], processor, with_target=False)
    batch.pop("labels", None)
    _, kwargs = constraint(task, row, tokenizer)
    with torch.no_grad():
        ids = model.generate(**batch, do_sample=False, num_beams=1, **kwargs)[0, 1:]  # drop the start token
        if task.grammar not in ("loc", "time", "val") and tokenizer.eos_token_id in ids.tolist():
            ids = ids[: ids.tolist().index(tokenizer.eos_token_id) + 1]  # up to and with the first eos
        expected = _forward_logprob(model, batch, ids[None])
    assert details[0]["answer_tokens"] == len(ids)
    assert details[0]["score"] == pytest.approx(expected, abs=1e-4)
    assert details[0]["score"] < 0


def test_rank_score_is_the_chosen_options_loglikelihood(stack):
    tokenizer, processor, model, rows = stack
    task = build_tasks(["video_mcqa"], {"video_mcqa": {"mode": "rank"}}, tokenizer.layout)["video_mcqa"]
    row = {k: v for k, v in rows["video_mcqa"][1].items() if k != "answer_index"}
    details: list = []
    answer = predict(task, model, processor, [row], details=details)[0]
    batch = task_batch(task, [row], processor, with_target=False)
    batch.pop("labels", None)
    with torch.no_grad():
        by_option = {o: _forward_logprob(model, batch, torch.tensor([tokenizer.encode(o, add_eos=True)]))
                     for o in row["options"]}
    assert answer == max(by_option, key=by_option.get)
    assert details[0]["score"] == pytest.approx(by_option[answer], abs=1e-4)
    # the same answer and score from items encoded ahead (media decoded once, not once per option)
    again: list = []
    items = [encode_row(task, row, processor)]
    assert predict(task, model, processor, [row], details=again, items=items) == [answer]
    assert again[0]["score"] == pytest.approx(details[0]["score"], abs=1e-5)


def test_model_generate_return_score(stack, tmp_path):
    from unified import Model
    from unified.api import Scored

    _, processor, network, rows = stack
    model = Model(network, processor)
    row = rows["grounding"][0]
    plain = model.generate(task="grounding", image=row["image"], phrase=row["phrase"])
    scored = model.generate(task="grounding", image=row["image"], phrase=row["phrase"], return_score=True)
    assert isinstance(scored, Scored) and scored.answer == plain and scored.score < 0
    embedded = model.generate(task="retrieval", video=rows["retrieval"][0]["video"], return_score=True)
    assert embedded.score is None and abs(float(embedded.answer.norm()) - 1) < 1e-5

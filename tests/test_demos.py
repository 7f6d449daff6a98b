"""Few-shot prompts (`task_options: {task: {demos: k}}`, Gato's prompt conditioning): the exact prompt text, demos
drawn from the other training rows in training, saved with the model and used at inference."""

from __future__ import annotations

import random

import pytest
from task_rows import tiny_stack

from unified import Model
from unified.errors import ConfigError, InputError
from unified.samples import CLIP
from unified.task_zoo import build_tasks, fit_tasks

SHAPE = {"video": "a.mp4", "question": "what shape?", "answer": "circle"}
SIZE = {"video": "b.mp4", "question": "what size?", "answer": "big"}
QUERY = {"video": "c.mp4", "question": "what colour?", "answer": "red"}


def test_the_prompt_holds_k_demonstrations_then_the_query():
    task = build_tasks(["vqa"], {"vqa": {"demos": 2, "demo_rows": [SHAPE, SIZE]}})["vqa"]
    assert task.example(QUERY, with_target=False).text == "what shape? circle | what size? big | <video> what colour?"
    assert task.example(QUERY).target == "red"
    one = build_tasks(["vqa"], {"vqa": {"demos": 1, "demo_rows": [SIZE, SHAPE]}})["vqa"]
    assert one.example(QUERY).text == "what size? big | <video> what colour?"
    plain = build_tasks(["vqa"])["vqa"]
    assert plain.example(QUERY).text == "<video> what colour?"


def test_multiple_choice_demonstrations_show_their_options_and_label():
    demo = {"video": "a.mp4", "question": "which way?", "options": ["left", "right"], "answer_index": 1}
    query = {"video": "b.mp4", "question": "which colour?", "options": ["red", "blue"], "answer_index": 0}
    task = build_tasks(["video_mcqa"], {"video_mcqa": {"demos": 1, "demo_rows": [demo]}})["video_mcqa"]
    assert task.example(query, with_target=False).text == ("which way? options: W. left X. right answer: X | "
                                                           "<video> which colour? options: W. red X. blue answer:")


def test_training_draws_other_training_rows_and_saves_k_of_them():
    rows = [dict(SHAPE, _source="vqa.jsonl:1"), dict(SIZE, _source="vqa.jsonl:2")]
    tasks, options = fit_tasks({"vqa": rows}, {"vqa": {"demos": 1}})
    saved = options["vqa"]["demo_rows"]
    assert options["vqa"]["demos"] == 1 and len(saved) == 1 and saved[0] in (SHAPE, SIZE)  # `_source` left out
    task = tasks["vqa"]
    for seed in range(20):  # never the row itself: with two rows, always the other one
        assert task.example(rows[0], rng=random.Random(seed)).text.startswith("what size? big | <video> ")
        assert task.example(rows[1], rng=random.Random(seed)).text.startswith("what shape? circle | <video> ")
    # evaluation: the saved demonstration, the same for every row
    built = build_tasks(["vqa"], options)["vqa"]
    first = f"{saved[0]['question']} {saved[0]['answer']} | "
    assert built.example(QUERY, with_target=False).text == first + "<video> what colour?"
    with pytest.raises(ConfigError, match="only 2 training row"):
        fit_tasks({"vqa": rows}, {"vqa": {"demos": 3}})


def test_bad_demo_options_are_named():
    with pytest.raises(ConfigError, match=r"task_options.vqa.demos.*whole number"):
        build_tasks(["vqa"], {"vqa": {"demos": -1}})
    with pytest.raises(ConfigError, match=r"task_options.retrieval.demos.*embedding task"):
        build_tasks(["retrieval"], {"retrieval": {"demos": 1}})
    with pytest.raises(ConfigError, match=r"demo_rows\[0\].*missing field"):
        build_tasks(["vqa"], {"vqa": {"demos": 1, "demo_rows": [{"question": "q?"}]}})
    with pytest.raises(ConfigError, match=r"fewer than demos: 2"):
        build_tasks(["vqa"], {"vqa": {"demos": 2, "demo_rows": [SHAPE]}})
    with pytest.raises(InputError, match=r"vqa demos.*only 0 demonstration row"):
        build_tasks(["vqa"], {"vqa": {"demos": 1}})["vqa"].example(QUERY)


def test_demonstrations_are_saved_with_the_model_and_used_by_generate(tmp_path):
    _, processor, network = tiny_stack()
    options = {"vqa": {"demos": 2, "demo_rows": [SHAPE, SIZE]}}
    Model(network, processor, task_options=options).save_pretrained(tmp_path)
    model = Model.from_pretrained(tmp_path)
    assert model.task_options["vqa"]["demo_rows"] == [SHAPE, SIZE]
    ask = {"task": "vqa", "video": str(CLIP), "question": "what colour?", "max_new_tokens": 3, "return_score": True}
    with_demos = model.generate(**ask)
    model.task_options["vqa"] = {}
    without = model.generate(**ask)
    assert with_demos.score != without.score  # the network read another prompt: the demonstrations reached it

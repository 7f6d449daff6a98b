"""Every registered task end to end on a tiny model: row -> processor -> loss -> backward -> constrained generation
-> typed result -> metrics; plus evaluation, the integral score and the modality ablation."""

from __future__ import annotations

import math
import random

import pytest
import torch
from media_fixtures import read_index
from task_rows import task_rows, tiny_stack, write_media

from unified.errors import InputError
from unified.media import Video
from unified.task_zoo import get_task, list_tasks
from unified.task_zoo.decoding import predict
from unified.task_zoo.evaluation import ablate_row, evaluate
from unified.tokenizers import Box
from unified.training.loss import task_loss


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return write_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def rows(media):
    return task_rows(media)


@pytest.fixture(scope="module")
def stack():
    return tiny_stack()


def check_prediction(task, prediction, row):
    """What the task's grammar guarantees about a prediction, whatever the (untrained) model wrote."""
    if task.grammar == "loc":
        assert isinstance(prediction, Box)
        w, h = row["image_size"]
        assert 0 <= prediction.x1 <= prediction.x2 <= w and 0 <= prediction.y1 <= prediction.y2 <= h
    elif task.grammar == "time":
        start, end = prediction
        assert 0 <= start <= row["duration"] and 0 <= end <= row["duration"]
    elif task.grammar == "val":
        assert len(prediction) == len(row["values"]) and all(math.isfinite(v) for v in prediction)
    elif task.grammar == "options":
        allowed = [str(o) for o in row.get("options", row.get("labels", []))] or [True, False, None]  # yes/no
        assert prediction in allowed
    elif task.grammar == "embedding":
        assert prediction.shape == (128,) and abs(float(prediction.norm()) - 1.0) < 1e-4
    elif task.name == "tags":  # a set of tags, most likely first
        assert isinstance(prediction, list) and all(isinstance(t, str) and t for t in prediction)
    else:
        assert isinstance(prediction, str)


@pytest.mark.parametrize("name", list_tasks())
def test_task_end_to_end(name, rows, stack):
    assert name in rows, f"task {name!r} has no hand-written rows in tests/task_rows.py"
    _, processor, model = stack
    task, task_rows_ = get_task(name), rows[name]
    model.train()
    model.zero_grad()
    # masked_frames compares clips with each other only: with the fusion gates at their initial 0 every clip embeds
    # alike and the gradient is exactly 0 (in a mixture the other tasks open the gates first), so open them here
    gates = [p for n, p in model.named_parameters() if "gate" in n] if name == "masked_frames" else []
    with torch.no_grad():
        for gate in gates:
            gate.fill_(0.5)
    try:
        loss = task_loss(task, model, processor, task_rows_, rng=random.Random(0))
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
    finally:
        with torch.no_grad():
            for gate in gates:
                gate.zero_()
    grads = [p.grad.abs().sum() for p in model.parameters() if p.grad is not None]
    assert grads and sum(grads) > 0
    model.eval()
    predictions = predict(task, model, processor, task_rows_, batch_size=2, max_new_tokens=6)
    assert len(predictions) == len(task_rows_)
    for prediction, row in zip(predictions, task_rows_):
        check_prediction(task, prediction, row)


def test_multiple_choice_shuffles_options_and_keeps_the_answer(rows):
    task, row = get_task("video_mcqa"), rows["video_mcqa"][1]
    orders = set()
    for seed in range(20):
        example = task.to_example(row, rng=random.Random(seed))
        label_index = task.labels.index(example.target)
        assert example.options[label_index] == row["options"][row["answer_index"]]
        orders.add(tuple(example.options))
    assert len(orders) > 5
    evaluation = task.to_example(row)
    assert evaluation.options == row["options"] and evaluation.target == task.labels[row["answer_index"]]


def test_multiple_choice_labels_are_configurable(rows):
    task = get_task("video_mcqa", labels=("P", "Q", "R", "S"))
    example = task.to_example(rows["video_mcqa"][1])
    assert "P. 1" in example.text and example.target == "R"
    with pytest.raises(InputError, match="labels"):
        get_task("video_mcqa", labels=("P", "P"))


def test_rank_mode_answers_with_an_option_text(rows, stack):
    _, processor, model = stack
    task = get_task("video_mcqa", mode="rank")
    predictions = predict(task, model.eval(), processor, rows["video_mcqa"])
    assert all(p in row["options"] for p, row in zip(predictions, rows["video_mcqa"]))


def test_task_refuses_inputs_it_cannot_take(rows, media):
    with pytest.raises(InputError, match="accepts"):
        get_task("text2text").to_example({**rows["text2text"][0], "video": media["video"]})
    with pytest.raises(InputError, match="requires"):
        get_task("video_mcqa").to_example({k: v for k, v in rows["video_mcqa"][0].items() if k != "video"})
    with pytest.raises(InputError, match="missing field"):
        get_task("vqa").to_example({"video": media["video"], "question": "what?"})


def test_ablation_keeps_the_middle_frame_and_silences_audio(rows, stack):
    _, processor, _ = stack
    row = rows["audio_video_mcqa"][0]
    one = ablate_row(row, "one_frame", processor)
    assert isinstance(one["video"], Video) and one["video"].num_frames == 1
    middle = one["video"].frames[0].numpy()  # decoded at the processor's size from the stored width
    assert read_index(middle, coded_width=one["video"].size[0]) == 4  # frames 0..7 at 4 fps: the middle one is 4
    assert one["audio"] == row["audio"]
    silent = ablate_row(row, "no_audio", processor)
    assert silent["video"] == row["video"] and float(abs(torch.as_tensor(silent["audio"])).max()) == 0.0
    blank = ablate_row(row, "no_media", processor)
    assert int(blank["video"].frames.max()) == 0
    with pytest.raises(InputError, match="ablation"):
        ablate_row(row, "half", processor)


def test_the_integral_is_the_weighted_mean_of_hand_set_scores(rows, stack, monkeypatch):
    """Tasks answering with fixed metrics: vqa 0.5 (weight 2), grounding 0.25 at IoU 0.5, regress MAE 8 on rows
    whose value ranges are 64 and 128 wide (1 - 8 / 96), so the integral is (2 * 0.5 + 0.25 + 11 / 12) / 4."""
    from unified.task_zoo import evaluation

    fixed = {"vqa": {"accuracy": 0.5}, "grounding": {"accuracy_at_iou": 0.25, "mean_iou": 0.3},
             "regress": {"mae": 8.0, "rmse": 9.0}}
    monkeypatch.setattr(evaluation, "evaluate_task", lambda task, *a, **k: (fixed[task.name], {}))
    _, processor, model = stack
    regress = [{"question": "how far?", "values": [1.0], "value_range": [0, 64]},
               {"question": "how far?", "values": [2.0], "value_range": [-64, 64]}]
    data = {"vqa": rows["vqa"], "grounding": rows["grounding"], "regress": regress}
    result = evaluate(model, processor, data, weights={"vqa": 2.0}, progress=False)
    assert result.scores["regress"] == pytest.approx(1 - 8 / 96)
    assert result.integral == pytest.approx((2 * 0.5 + 0.25 + 11 / 12) / 4)


def test_evaluate_reports_metrics_integral_and_ablation(rows, stack):
    _, processor, model = stack
    data = {name: rows[name] for name in ("vqa", "grounding", "regress", "video_mcqa", "audio_video_mcqa")}
    result = evaluate(model, processor, data, weights={"vqa": 2.0}, ablate=True, progress=False, max_new_tokens=4)
    assert set(result.metrics) == set(data)
    assert set(result.metrics["grounding"]) == {"accuracy_at_iou", "mean_iou"}
    assert all(0.0 <= s <= 1.0 for s in result.scores.values())
    assert set(result.ablation) == {"full", "one_frame", "no_audio", "no_media"}
    assert result.ablation["full"]["integral"] == pytest.approx(result.integral)
    assert "label_distribution" in result.details["video_mcqa"]
    assert "integral" in result.table()
    with pytest.raises(InputError, match="no rows"):
        evaluate(model, processor, data, tasks=["caption"], progress=False)


def test_regress_score_is_normalised_by_the_value_range():
    task = get_task("regress")
    rows = [{"inputs": [1.0], "values": [5.0], "value_range": [0, 10]}]
    assert task.normalised({"mae": 2.5, "rmse": 2.5}, rows) == pytest.approx(0.75)
    assert task.normalised({"mae": 20.0, "rmse": 20.0}, rows) == 0.0


def test_a_mixed_batch_is_the_token_weighted_mean_of_its_tasks(rows, stack):
    """mixed_loss over vqa + caption + retrieval rows (vqa weighted 2) against each task's own loss from its own
    one-task batch (the model's built-in token mean) combined by hand: generative parts by target-token count,
    the retrieval part by row count."""
    from unified.task_zoo.batching import task_batch
    from unified.training.loss import mixed_loss

    _, processor, model = stack
    model.eval()
    tasks = {n: get_task(n) for n in ("vqa", "caption", "retrieval")}
    named = [("vqa", r) for r in rows["vqa"]] + [("caption", r) for r in rows["caption"]] + \
            [("retrieval", r) for r in rows["retrieval"]]
    with torch.no_grad():
        loss, parts = mixed_loss(tasks, named, model, processor, loss_weights={"vqa": 2.0})
        own = {n: float(task_loss(tasks[n], model, processor, rows[n])) for n in tasks}
        tokens = {n: int((task_batch(tasks[n], rows[n], processor)["labels"] != -100).sum())
                  for n in ("vqa", "caption")}
    for name in tasks:
        assert parts[name] == pytest.approx(own[name], rel=1e-4)
    generative = (2.0 * own["vqa"] * tokens["vqa"] + own["caption"] * tokens["caption"]) / sum(tokens.values())
    n_gen, n_ret = len(rows["vqa"]) + len(rows["caption"]), len(rows["retrieval"])
    expected = (generative * n_gen + own["retrieval"] * n_ret) / (n_gen + n_ret)
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_the_unused_parameter_probe_finds_what_each_task_leaves_out(rows, stack):
    """One forward/backward per task (`unused_parameters`, which decides DDP's find_unused_parameters): the
    contrastive head gets no gradient from vqa (a generative task) and the LM head none from retrieval; the audio
    encoder none from vqa (video only) but gradients from audio_video_mcqa; the RNG and gradients are untouched."""
    from unified.task_zoo import build_tasks
    from unified.training.build import unused_parameters
    from unified.training.config import TrainConfig

    _, processor, model = stack
    tasks = build_tasks(["vqa", "retrieval", "audio_video_mcqa"])
    before = torch.get_rng_state()
    unused = unused_parameters(TrainConfig(), model.train(), tasks, rows, processor)
    model.eval()
    assert torch.equal(torch.get_rng_state(), before) and all(p.grad is None for p in model.parameters())
    audio = [n for n, _ in model.named_parameters() if n.startswith("encoder.media.audio.")]
    assert audio and set(audio) <= set(unused["vqa"]) and not set(audio) & set(unused["audio_video_mcqa"])
    assert any(n.startswith("embed_head.") for n in unused["vqa"])
    assert not any(n.startswith("embed_head.") for n in unused["retrieval"])
    assert any(n.startswith(("lm_head.", "decoder.")) for n in unused["retrieval"])

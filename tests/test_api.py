"""The front door on a tiny saved model: typed answers per task, batching, and errors that list what a task takes."""

from __future__ import annotations

import pytest
import torch
from task_rows import saved_tiny_model, tiny_stack, write_media

from unified import Model
from unified.errors import InputError
from unified.tokenizers import Box


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return saved_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return write_media(tmp_path_factory.mktemp("media"))


def test_typed_answers(model, media):
    assert isinstance(model.generate(task="caption", video=media["video"], max_new_tokens=4), str)
    box = model.generate(task="grounding", image=media["image"], phrase="red square")
    assert isinstance(box, Box) and 0 <= box.x1 <= box.x2 <= 64 and 0 <= box.y1 <= box.y2 <= 48
    start, end = model.generate(task="temporal_grounding", video=media["video"], question="when is it visible?")
    assert 0 <= start <= 2.0 and 0 <= end <= 2.0  # the clip lasts 2 s: read from the file, not given
    options = ["left", "right", "up"]
    assert model.generate(task="video_mcqa", video=media["video"], question="which way?", options=options) in options
    values = model.generate(task="regress", inputs=[1.0, 2.0, 3.0], num_values=2)
    assert len(values) == 2
    vector = model.generate(task="retrieval", video=media["video"])
    text_vector = model.generate(task="retrieval", text="a red circle")
    assert vector.shape == text_vector.shape and abs(float(vector.norm()) - 1) < 1e-4


def test_lists_in_lists_out(model, media):
    answers = model.generate(task="video_mcqa", video=[media["video"]] * 3, question="which way?",
                             options=["left", "right"])
    assert len(answers) == 3 and all(a in ("left", "right") for a in answers)
    single = model.generate(task="video_mcqa", video=media["video"], question="which way?", options=["left", "right"])
    assert answers[0] == single


def test_wrong_inputs_list_what_the_task_takes(model, media):
    with pytest.raises(InputError, match="accepts"):
        model.generate(task="text2text", text="hi", video=media["video"])
    with pytest.raises(InputError, match="requires"):
        model.generate(task="audio_video_mcqa", video=media["video"], question="q", options=["a", "b"])
    with pytest.raises(InputError, match="not a saved model"):
        Model.from_pretrained(media["image"])


def test_saved_model_reloads_to_identical_logits(model, tmp_path):
    model.save_pretrained(tmp_path)
    again = Model.from_pretrained(tmp_path)
    batch = model.processor({"text": "a red circle", "target": "left"})
    with torch.no_grad():
        assert torch.equal(model.network(**batch).logits, again.network(**batch).logits)


def test_list_valued_fields_are_shared_or_per_item_as_the_task_declares(media):
    """Three clips with one Gato-style `inputs` list: every row gets the whole list (regress declares `inputs` as a
    list field); a list of three lists gives each row its own."""
    from unified.task_zoo import get_task

    _, processor, network = tiny_stack()
    model, task = Model(network, processor), get_task("regress")
    clips = [media["video"]] * 3
    rows, batched = model._rows(task, {"video": clips, "inputs": [0.1, 0.2, 0.3]})
    assert batched and [r["inputs"] for r in rows] == [[0.1, 0.2, 0.3]] * 3
    rows, _ = model._rows(task, {"video": clips, "inputs": [[1.0], [2.0], [3.0]]})
    assert [r["inputs"] for r in rows] == [[1.0], [2.0], [3.0]]

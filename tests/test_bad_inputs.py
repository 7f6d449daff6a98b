"""Every public entry point under bad input: one table, each case a named input that must end in a
`unified.errors` error naming it and saying why. Nothing a user gave is dropped silently.

Each case is (name, call, error class, pattern the message must match). `call` takes the fixtures bundle."""

from __future__ import annotations

import numpy as np
import pytest
from task_rows import tiny_stack, write_media

from unified import Model
from unified.errors import InputError, MediaDecodeError, UnifiedError


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    _, processor, network = tiny_stack()
    Model(network, processor).save_pretrained(directory)
    media = write_media(tmp_path_factory.mktemp("media"))
    return {"model": Model.from_pretrained(directory), "media": media, "dir": directory,
            "frames": np.zeros((6, 16, 16, 3), np.uint8)}


def _gen(task, **kwargs):
    return lambda e: e["model"].generate(task=task, **{k: (e["media"][v[1:]] if isinstance(v, str) and
                                                              v.startswith("@") else v) for k, v in kwargs.items()})


CASES = [
    # Model.generate: batched arguments of mismatched lengths (2 videos, 3 questions)
    ("generate/batch-length-mismatch", lambda e: e["model"].generate(
        task="vqa", video=[e["media"]["video"]] * 2, question=["a?", "b?", "c?"]),
     InputError, r"question=.*3 item.*2 media item"),
    ("generate/list-for-one-input", lambda e: e["model"].generate(
        task="vqa", video=e["media"]["video"], question=["a?", "b?"]),
     InputError, r"question=.*list of 2 for one input"),
    ("generate/options-lists-mismatch", lambda e: e["model"].generate(
        task="video_mcqa", video=[e["media"]["video"]] * 2, question="q?", options=[["a", "b"]] * 3),
     InputError, r"options=.*3 item"),
    # unknown keyword arguments are refused, never dropped
    ("generate/unknown-keyword", _gen("caption", video="@video", prompt="describe"),
     InputError, r"caption keyword='prompt': not an input of this task"),
    ("generate/typo-keyword", _gen("caption", vidoe="@video"),
     InputError, r"'vidoe'.*did you mean 'video'"),
    ("generate/target-field-given", _gen("caption", video="@video", caption="a cat"),
     InputError, r"caption caption='a cat': is what this task answers"),
    ("generate/field-of-another-task", _gen("caption", video="@video", question="what?"),
     InputError, r"keyword='question': not an input"),
    # a still image is not a video
    ("generate/png-as-video", _gen("caption", video="@image"),
     MediaDecodeError, r"still image .*give it as image="),
    # frames in memory carry their rate, or are refused
    ("generate/frames-without-rate", lambda e: e["model"].generate(task="caption", video=e["frames"]),
     InputError, r"video=.*frames in memory.*source_fps"),
    ("generate/rate-for-a-file", _gen("caption", video="@video", source_fps=4),
     InputError, r"source_fps=4: only for a video given as frames in memory"),
    ("generate/rate-without-video", _gen("caption", image="@image", source_fps=4),
     InputError, r"source_fps=4"),
    ("generate/bad-rate", lambda e: e["model"].generate(task="caption", video=e["frames"], source_fps=-1),
     InputError, r"source_fps=-1: expected a positive"),
]


@pytest.mark.parametrize(("name", "call", "error", "pattern"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named(env, name, call, error, pattern):
    with pytest.raises(error, match=pattern) as caught:
        call(env)
    assert isinstance(caught.value, UnifiedError)


def test_source_fps_sets_the_clip_length(env):
    """6 frames at 4 fps last 1.5 s: a span answered about them lies inside [0, 1.5], and the derived duration is
    1.5 (taken at 1 fps it would be 6)."""
    model = env["model"]
    start, end = model.generate(task="temporal_grounding", video=env["frames"], source_fps=4.0, question="when?")
    assert 0.0 <= start <= end <= 1.5
    from unified.media.video import Frames

    assert model.processor.duration(Frames(env["frames"], 4.0)) == pytest.approx(1.5)

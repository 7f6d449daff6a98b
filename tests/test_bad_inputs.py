"""Every public entry point under bad input: one table, each case a named input that must end in a
`unified.errors` error naming it and saying why. Nothing a user gave is dropped silently.

Each case is (name, call, error class, pattern the message must match). `call` takes the fixtures bundle."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from task_rows import tiny_stack, write_media

from unified import Model
from unified.data import read_rows
from unified.data.conversations import read_conversations
from unified.errors import ConfigError, InputError, MediaDecodeError, UnifiedError
from unified.training.config import load_config


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    _, processor, network = tiny_stack()
    Model(network, processor).save_pretrained(directory)
    media = write_media(tmp_path_factory.mktemp("media"))
    return {"model": Model.from_pretrained(directory), "media": media, "dir": directory,
            "frames": np.zeros((6, 16, 16, 3), np.uint8), "tmp": tmp_path_factory.mktemp("cases")}


def _rows(task, row, suffix=".jsonl", **kwargs):
    """A data file in a fresh folder holding `row` (media names "@video" etc. copied in next to it) -> read_rows."""
    def call(e):
        folder = e["tmp"] / f"rows{len(list(e['tmp'].iterdir()))}"
        (folder / "sub").mkdir(parents=True)
        fixed = {}
        for key, value in row.items():
            if isinstance(value, str) and value.startswith("@"):
                source = e["media"][value[1:]]
                shutil.copy(source, folder / Path(source).name)
                value = Path(source).name
            fixed[key] = value
        path = folder / "sub" / f"{task}{suffix}" if kwargs.pop("nested", False) else folder / f"{task}{suffix}"
        path.write_text(json.dumps(fixed) + "\n")
        return read_rows(path, task, **kwargs)
    return call


def _conversations(text, fmt):
    def call(e):
        path = e["tmp"] / "conversations.json"
        path.write_text(text)
        return read_conversations(path, fmt)
    return call


def _config(text=None, overrides=()):
    def call(e):
        path = None
        if text is not None:
            path = e["tmp"] / "config.yaml"
            path.write_text(text)
        return load_config(path, list(overrides))
    return call


def _pickled_model(e):
    folder = e["tmp"] / "pickled"
    folder.mkdir(exist_ok=True)
    shutil.copy(e["dir"] / "config.json", folder / "config.json")
    import torch

    torch.save({"shared.weight": torch.zeros(2, 2)}, folder / "pytorch_model.bin")
    return Model.from_pretrained(folder)


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
    # data files: fields of the wrong kind, paths that leave the data directory
    ("data/number-as-media-path", _rows("vqa", {"video": 7, "question": "q?", "answer": "a"}),
     InputError, r"vqa.jsonl row 1.*video=7: expected a media file path \(str\), got int"),
    ("data/list-as-question", _rows("vqa", {"video": "@video", "question": ["a", "b"], "answer": "a"}),
     InputError, r"vqa.jsonl row 1: vqa question=\['a', 'b'\]: expected text, got list"),
    ("data/text-as-options", _rows("video_mcqa", {"video": "@video", "question": "q?", "options": "a, b",
                                                   "answer_index": 0}),
     InputError, r"video_mcqa.jsonl row 1: video_mcqa options='a, b': expected list"),
    ("data/path-outside-directory", _rows("vqa", {"video": "../clip.mp4", "question": "q?", "answer": "a"},
                                          nested=True),
     InputError, r"row 1.*'../clip.mp4': points outside the data directory"),
    ("data/value-outside-range", _rows("regress", {"question": "q?", "values": [300.0], "value_range": [0, 10]}),
     InputError, r"regress values=\[300.0\]: outside the row's value_range \[0.0, 10.0\]"),
    ("data/inverted-value-range", _rows("regress", {"question": "q?", "values": [3.0], "value_range": [10, 0]}),
     InputError, r"value_range=\[10, 0\]: expected \[low, high\]"),
    # configs: ranges, object tags
    ("config/negative-lr", _config(overrides=["data.synthetic.n_train=4", "optim.lr=-0.001"]),
     ConfigError, r"'optim.lr'=-0.001: expected a learning rate > 0"),
    ("config/dropout-above-1", _config(overrides=["data.synthetic.n_train=4", "lora.dropout=1.5"]),
     ConfigError, r"'lora.dropout'=1.5: expected a probability"),
    # configs: settings that would be accepted and do nothing
    ("config/weights-under-uniform", _config(overrides=["data.synthetic.n_train=4", "mixture.strategy=uniform",
                                                        "mixture.weights={vqa: 2}"]),
     ConfigError, r"'mixture.weights'=\{'vqa': 2\}: mixture.strategy 'uniform' does not read it"),
    ("config/temperature-under-proportional", _config(overrides=["data.synthetic.n_train=4",
                                                                 "mixture.strategy=proportional",
                                                                 "mixture.temperature=5"]),
     ConfigError, r"'mixture.temperature'=5.0: mixture.strategy 'proportional' does not read it"),
    ("config/anneal-steps-under-temperature", _config(overrides=["data.synthetic.n_train=4",
                                                                 "mixture.strategy=temperature",
                                                                 "mixture.anneal_steps=50"]),
     ConfigError, r"'mixture.anneal_steps'=50: .*only annealed"),
    ("config/lora-rank-without-lora", _config(overrides=["data.synthetic.n_train=4", "lora.r=4"]),
     ConfigError, r"'lora.r'=4: lora.enabled is false"),
    ("config/lora-groups-without-lora", _config(overrides=["data.synthetic.n_train=4", "lora.groups={vqa: a}"]),
     ConfigError, r"'lora.groups'=.*lora.enabled is false"),
    ("config/unknown-strategy", _config(overrides=["data.synthetic.n_train=4", "mixture.strategy=random"]),
     ConfigError, r"'mixture.strategy'='random': expected one of 'proportional', "),
    ("config/yaml-object-tag", _config("optim: !!python/object/apply:os.system ['echo owned']\n"),
     ConfigError, r"config.yaml.*object tags .* are refused"),
    ("config/override-object-tag", _config(overrides=["optim.lr=!!python/object/apply:os.system [ls]"]),
     ConfigError, r"'optim.lr'.*not a YAML value"),
    # conversation files to import (a bad record is listed with its reason, not raised: tests/test_conversations.py)
    ("import/unknown-format", _conversations("[]", "alpaca"),
     InputError, r"format='alpaca': expected one of \['llava', 'openai', 'sharegpt'\]"),
    ("import/not-a-list", _conversations('{"conversations": []}', "sharegpt"),
     InputError, r"conversation file=.*conversations.json': expected a JSON list of records \(or JSONL\)"),
    # saved models: pickle weights are refused
    ("from_pretrained/pickle-weights", _pickled_model,
     InputError, r"model=.*pickled.*holds weights only as pickle \(pytorch_model.bin\)"),
    ("from_pretrained/not-a-model", lambda e: Model.from_pretrained(e["tmp"]),
     InputError, r"not a saved model: no config.json"),
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


CLI_CASES = [
    ("cli/generate-missing-file", ["generate", "--task", "caption", "--video", "/no/such/clip.mp4", "--model", "@dir"],
     r"argument --video: expected an existing file, got '/no/such/clip.mp4'"),
    ("cli/generate-unknown-task", ["generate", "--task", "cption", "--video", "@video", "--model", "@dir"],
     r"cption"),
    ("cli/generate-png-as-video", ["generate", "--task", "caption", "--video", "@image", "--model", "@dir"],
     r"still image"),
    ("cli/eval-missing-data", ["eval", "--data", "/no/such/dir", "--model", "@dir"],
     r"argument --data: expected an existing directory"),
    ("cli/data-check-missing-dir", ["data", "check", "/no/such/dir"], r"argument dir: expected an existing directory"),
    ("cli/train-negative-lr", ["train", "@smoke", "optim.lr=-1"], r"'optim.lr'=-1.0: expected a learning rate > 0"),
    ("cli/train-resume-not-a-checkpoint", ["train", "@smoke", "output_dir=@tmp/run", "--resume", "@tmp"],
     r"not a training checkpoint"),
]


@pytest.mark.parametrize(("name", "argv", "pattern"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_user_errors_print_one_line_and_exit_2(env, capsys, name, argv, pattern):
    from unified.cli import main

    smoke = Path(__file__).parents[1] / "training" / "configs" / "tiny-smoke.yaml"
    subs = {"@dir": str(env["dir"]), "@video": env["media"]["video"], "@image": env["media"]["image"],
            "@smoke": str(smoke), "@tmp": str(env["tmp"])}
    args = [next((a.replace(k, v) for k, v in subs.items() if k in a), a) for a in argv]
    try:
        code = main(args)
    except SystemExit as exit_:  # a flag's value refused as it was parsed (`unified.arguments`)
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("unified") and ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in err, err  # one line, no traceback (progress bars may precede)
    assert err.rstrip().endswith(errors[0]) and re.search(pattern, errors[0]), errors[0]


def test_cli_keeps_the_traceback_for_bugs(env, monkeypatch):
    """Only `unified.errors` are user errors; anything else is a bug and propagates with its traceback."""
    from unified.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Model, "from_pretrained", classmethod(lambda cls, *a, **k: broken()))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["generate", "--task", "caption", "--video", env["media"]["video"], "--model", str(env["dir"])])

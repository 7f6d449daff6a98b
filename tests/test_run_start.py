"""Runs that start and resume deliberately: every media file decoded before step 0 (`unified data check` and the
training pre-flight), and resuming only when asked, stopping when the config or data changed since the checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from unified.cli import main as cli
from unified.data.synthetic import write_split
from unified.errors import ConfigError, MediaDecodeError
from unified.training import load_config, train

pytestmark = pytest.mark.slow  # training runs

SMOKE = Path(__file__).parents[1] / "training" / "configs" / "tiny-smoke.yaml"


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "train"
    write_split(root, 8, seed=0, split="train", progress=False)
    return root


def _copy(clean, tmp_path) -> Path:
    data = tmp_path / "train"
    shutil.copytree(clean, data)
    return data


def _rows_of(data: Path, clip: str) -> list[str]:
    """file:row of every row naming `clip` (the truth the check must report), read straight from the JSONL."""
    from unified.task_zoo import list_tasks

    found = []
    for file in sorted(f for f in data.glob("*.jsonl") if f.stem in list_tasks()):
        for index, line in enumerate(file.read_text().splitlines(), start=1):
            if clip in json.loads(line).values():
                found.append(f"{file.name}:{index}")
    return found


def _config(tmp_path, data, *extra):
    return load_config(SMOKE, [f"output_dir={tmp_path / 'run'}", f"data.train_dir={data}", "data.synthetic=null",
                               "optim.max_steps=2", "checkpoint.every=2", "tokenizer.text_vocab_size=200",
                               "log_with=none", *extra])


def test_bad_media_are_found_before_step_0(clean, tmp_path, capsys):
    data = _copy(clean, tmp_path)
    clips = sorted(p.name for p in (data / "clips").glob("*.mp4"))
    truncated, still = f"clips/{clips[0]}", f"clips/{clips[1]}"
    (data / truncated).write_bytes((data / truncated).read_bytes()[:2000])  # cut mid-stream: header survives
    Image.new("RGB", (8, 8)).save(data / still, format="PNG")  # a still image under a video's name
    expected = sorted(_rows_of(data, truncated) + _rows_of(data, still))
    assert expected

    assert cli(["data", "check", str(data), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert sorted(b["row"] for b in report["bad"]) == expected
    assert all("still image" in b["reason"] for b in report["bad"] if b["row"] in _rows_of(data, still))

    with pytest.raises(MediaDecodeError, match=rf"{len(expected)} row\(s\).*media that do not decode"):
        train(_config(tmp_path, data), progress=False)
    summary = train(_config(tmp_path, data, "data.skip_bad_rows=true"), progress=False, overwrite=True)
    assert summary["steps"] == 2
    assert (data / ".unified_check.json").is_file()  # the second look read the cache


def test_resume_is_deliberate(clean, tmp_path):
    data = _copy(clean, tmp_path)
    train(_config(tmp_path, data), progress=False)
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    assert (ckpt / "fingerprint.json").is_file()

    with pytest.raises(ConfigError, match=r"holds an earlier run and --resume never"):
        train(_config(tmp_path, data), progress=False, resume="never")
    with pytest.raises(ConfigError, match=r"config optim.lr changed: 0.003 -> 0.0005"):
        train(_config(tmp_path, data, "optim.lr=5e-4"), progress=False)
    train(_config(tmp_path, data, "optim.lr=5e-4"), progress=False, allow_changes=True)  # told to go on
    # the resumed run's checkpoint records the new rate; running longer is not a change
    train(_config(tmp_path, data, "optim.lr=5e-4", "optim.max_steps=3"), progress=False)

    with open(data / "vqa.jsonl", "a") as f:  # one more row: the data changed
        f.write(json.dumps({"video": f"clips/{min(p.name for p in (data / 'clips').iterdir())}",
                            "question": "what colour?", "answer": "red"}) + "\n")
    with pytest.raises(ConfigError, match=r"data train/vqa changed"):
        train(_config(tmp_path, data, "optim.lr=5e-4", "optim.max_steps=3"), progress=False)
    with pytest.raises(ConfigError, match=r"not a training checkpoint"):
        train(_config(tmp_path, data), progress=False, resume=str(tmp_path))

    summary = train(_config(tmp_path, data), progress=False, overwrite=True)  # afresh: step 0 to 2
    assert summary["steps"] == 2
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000002"]


def test_a_checkpoint_whose_optimizer_state_does_not_fit_is_refused_by_name(clean, tmp_path):
    """A checkpoint written for another parameter layout (here: one parameter fewer in its first optimizer group, as
    a model from before a module change has) stops the resume with an InputError naming it and the way on."""
    import torch

    from unified.errors import InputError
    from unified.training.checkpoint import write_manifest

    data = _copy(clean, tmp_path)
    train(_config(tmp_path, data), progress=False)
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    state = torch.load(ckpt / "trainer.pt", weights_only=True)
    state["optimizer"]["param_groups"][0]["params"].pop()
    torch.save(state, ckpt / "trainer.pt")
    write_manifest(ckpt)  # as such a checkpoint was written: whole (a file changed since is refused as damaged)
    with pytest.raises(InputError, match=r"trainer.pt.*optimizer state does not fit.*model.init_from="):
        train(_config(tmp_path, data, "optim.max_steps=3"), progress=False)

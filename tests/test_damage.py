"""Damaged files explain themselves (#40 items 2 and 4): every kind of file the library writes is corrupted the
ways disks and kills corrupt files (cut short, bytes flipped, a member removed, an offset shifted, JSON garbled, a
file removed), and the loader must raise `InputError` naming that file and what is wrong, never a raw error of
safetensors, json or tarfile, while what is intact stays usable. Then `unified train` is killed (SIGKILL, through its
test hook) mid-step, between writing the model and the trainer state, and mid-save: resuming gives bitwise the run
that was not killed; a damaged newest checkpoint stops `--resume auto` by name, and `--resume last-intact` goes on
from the newest intact one."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from task_rows import tiny_stack, write_media

from unified import Model
from unified.cli import main as cli
from unified.data import load_data_dir
from unified.data.shard_rows import INDEX, check_shards
from unified.data.shards import write_shards
from unified.errors import ConfigError, InputError
from unified.model import UnifiedModel
from unified.model.adapters import TaskAdapters
from unified.training import load_config, loop, train
from unified.training.checkpoint import KILL_AT, checkpoint_damage, newest_intact, save_checkpoint

ROOT = Path(__file__).parents[1]
SMOKE = ROOT / "training" / "configs" / "tiny-smoke.yaml"


# ------------------------------------------------------------------------------------------------ mutations
def truncate(file: Path, keep: float = 0.5) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep)])


def flip(file: Path, at: int) -> None:
    data = bytearray(file.read_bytes())
    data[at] ^= 0xFF
    file.write_bytes(bytes(data))


def _header_byte(file: Path) -> int:  # a byte inside a safetensors file's JSON header
    return 8 + struct.unpack("<Q", file.read_bytes()[:8])[0] // 2


def _data_byte(file: Path) -> int:  # a byte of the tensors' data (the header's hash cannot see it)
    return 8 + struct.unpack("<Q", file.read_bytes()[:8])[0] + 100


def _other_model_type(file: Path) -> None:
    config = json.loads(file.read_text())
    file.write_text(json.dumps({**config, "model_type": "t5"}))


CHECKPOINT_DAMAGE = {  # name: (file, mutation, what the reason says, whether Model.from_pretrained must refuse it)
    "weights cut short": ("model.safetensors", truncate, "cut short", True),
    "weights header flipped": ("model.safetensors", lambda f: flip(f, _header_byte(f)), "header is not valid JSON",
                               True),
    "weights data flipped": ("model.safetensors", lambda f: flip(f, _data_byte(f)), "sha256 differs", False),
    "weights removed": ("model.safetensors", Path.unlink, "missing", False),
    "config garbled": ("config.json", lambda f: truncate(f, 0.6), "not valid JSON", True),
    "config of another model": ("config.json", _other_model_type, "declares model_type 't5'", True),
    "processor config garbled": ("processor_config.json", lambda f: truncate(f, 0.5), "not valid JSON", True),
    "trainer state cut short": ("trainer.pt", truncate, "not a whole torch archive", False),
    "trainer state flipped": ("trainer.pt", lambda f: flip(f, f.stat().st_size // 2), "damaged", False),
    "fingerprint cut at a boundary": ("fingerprint.json", lambda f: f.write_text("{}"), "written as", False),
    "trainer state removed": ("trainer.pt", Path.unlink, "missing", False),
    "manifest garbled": ("manifest.json", lambda f: truncate(f, 0.5), "not valid JSON", False),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two checkpoints (steps 1 and 2) of the tiny model, as training writes them."""
    root = tmp_path_factory.mktemp("ckpt")
    _, processor, network = tiny_stack()
    for step in (1, 2):
        save_checkpoint(root, step, network, processor, {"optimizer": {"w": torch.arange(5.0)}}, keep=5,
                        extra={"fingerprint.json": json.dumps({"config": {}, "data": {}})})
    return root


@pytest.mark.parametrize("case", list(CHECKPOINT_DAMAGE))
def test_a_damaged_checkpoint_names_its_file_and_the_intact_one_stays(checkpoints, tmp_path, case):
    name, mutate, reason, refused_on_load = CHECKPOINT_DAMAGE[case]
    root = tmp_path / "checkpoints"
    shutil.copytree(checkpoints, root)
    newest = root / "step-00000002"
    assert checkpoint_damage(newest) is None  # intact as written
    mutate(newest / name)
    damage = checkpoint_damage(newest)
    assert isinstance(damage, InputError) and str(damage.value).endswith(name) and reason in damage.reason, damage
    assert checkpoint_damage(root / "step-00000001") is None
    assert newest_intact(root, log=lambda msg: None) == root / "step-00000001"  # nothing else is lost
    if refused_on_load:  # the front door names the file too (safetensors' and json's own errors name neither)
        with pytest.raises(InputError, match=name.replace(".", r"\.")):
            Model.from_pretrained(newest)


def test_a_model_saved_without_a_manifest_is_still_checked(checkpoints, tmp_path):
    """A servable model (final/, or a checkpoint from before manifests): framing, JSON and model_type are checked."""
    model = tmp_path / "model"
    shutil.copytree(checkpoints / "step-00000001", model)
    (model / "manifest.json").unlink()
    (model / "trainer.pt").unlink()
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data + b"\0" * 64)  # bytes after the last tensor
    with pytest.raises(InputError, match=r"model\.safetensors.*64 bytes after its last tensor"):
        Model.from_pretrained(model)
    (model / "model.safetensors").write_bytes(data[:5])
    with pytest.raises(InputError, match="shorter than the 8-byte header length"):
        Model.from_pretrained(model)
    (model / "model.safetensors").unlink()
    with pytest.raises(InputError, match="holds no weights"):
        UnifiedModel.from_pretrained(model)  # transformers' own loader too (and the Auto classes through it)


@pytest.mark.parametrize("damage", ["index garbled", "weights cut short", "index without names"])
def test_damaged_adapters_name_their_file(tmp_path, damage):
    _, _, network = tiny_stack()
    TaskAdapters.attach(network, ["vqa", "caption"], r=2).save(tmp_path / "adapters")
    folder = tmp_path / "adapters"
    index, weights = folder / "adapters.json", folder / "vqa" / "adapter_model.safetensors"
    _, _, fresh = tiny_stack()
    if damage == "index garbled":
        truncate(index)
        file, reason = "adapters.json", "not valid JSON"
    elif damage == "weights cut short":
        truncate(weights)
        file, reason = "adapter_model.safetensors", "cut short"
    else:
        index.write_text(json.dumps({"groups": {}}))
        file, reason = "adapters.json", "no valid 'names' entry"
    with pytest.raises(InputError, match=rf"{file}.*{reason}"):
        TaskAdapters.load(fresh, tmp_path / "adapters")


# ------------------------------------------------------------------------------------------------ shards
@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """Shards of hand-written rows: 3 caption rows (video), 3 vqa rows (image), two rows per tar."""
    root = tmp_path_factory.mktemp("packed")
    media = write_media(root)
    files = root / "files"
    files.mkdir()
    captions = [{"video": media["video"], "caption": f"a red circle moves {w}"} for w in ("left", "up", "down")]
    questions = [{"image": media["image"], "question": f"what colour is it {w}?", "answer": "red"}
                 for w in ("now", "here", "first")]
    for task, rows in (("caption", captions), ("vqa", questions)):
        (files / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_shards(files, root / "shards", rows_per_shard=2, progress=False)
    return root / "shards"


def _remove_member(tar_path: Path, member: str) -> None:
    with tarfile.open(tar_path) as tar:
        kept = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.name != member]
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in kept:
            tar.addfile(info, io.BytesIO(data))


def _shift_offset(directory: Path) -> None:
    index = json.loads((directory / INDEX).read_text())
    index["tasks"]["vqa"]["shards"][0]["rows"][1][0] += 512
    (directory / INDEX).write_text(json.dumps(index))


def _swap_offsets(directory: Path) -> None:  # each offset still points at a whole row: the other one
    index = json.loads((directory / INDEX).read_text())
    rows = index["tasks"]["vqa"]["shards"][0]["rows"]
    rows[0], rows[1] = rows[1], rows[0]
    (directory / INDEX).write_text(json.dumps(index))


def _flip_row(directory: Path) -> None:
    index = json.loads((directory / INDEX).read_text())
    offset, _ = index["tasks"]["vqa"]["shards"][1]["rows"][0]
    flip(directory / "vqa-00001.tar", offset + 1)


SHARD_DAMAGE = {  # name: (mutation of the shard directory, damaged rows (task, row), what the report says)
    "tar cut short": (lambda d: truncate(d / "caption-00000.tar", 0.4), {("caption", 1)}, "cut short"),
    "member removed": (lambda d: _remove_member(d / "caption-00000.tar", "00000000.video0.mp4"),
                       {("caption", 0), ("caption", 1)}, "the index and the tar disagree"),
    "offset shifted": (_shift_offset, {("vqa", 1)}, "the index and the tar disagree"),
    "offsets swapped": (_swap_offsets, {("vqa", 0), ("vqa", 1)}, "the index and the tar disagree"),
    "row bytes flipped": (_flip_row, {("vqa", 2)}, "not a row"),
    "tar removed": (lambda d: (d / "vqa-00001.tar").unlink(), {("vqa", 2)}, "missing"),
}


@pytest.mark.parametrize("case", list(SHARD_DAMAGE))
def test_damaged_shards_are_reported_row_by_row(packed, tmp_path, case, capsys):
    mutate, damaged, reason = SHARD_DAMAGE[case]
    shards = tmp_path / "shards"
    shutil.copytree(packed, shards)
    mutate(shards)
    intact, problems = check_shards(shards)
    # each problem says what is wrong: the case's own reason, or a neighbour's (offsets past a removed member no
    # longer meet their headers, or lie past the shortened tar)
    assert problems and all(any(r in why for r in (reason, "the index and the tar disagree", "cut short"))
                            for _, why in problems), problems
    assert any(reason in why for _, why in problems), problems
    reported = {(task, int(where.split(" row ")[1].split()[0])) for where, _ in problems
                for task in ("caption", "vqa") if f" {task} row " in where}
    assert reported == damaged or (case == "tar cut short" and damaged <= reported), problems
    assert sum(len(r) for r in intact.values()) == 6 - len(reported)  # every other row still reads
    rows, _ = load_data_dir(shards)
    for task, i in damaged:  # reading a damaged row names the shard and the row
        with pytest.raises(InputError, match=rf"{task} row {i}|{task}-0000\d\.tar"):
            rows[task][i]
    # `unified data check` lists each damaged row and exits 1; never a traceback
    assert cli(["data", "check", str(shards), "--workers", "1"]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.err and out.out.count("\n") == len(problems) + 1
    assert f"6 rows in 2 task file(s): {len(problems)} bad" in out.out


def test_a_garbled_shard_index_stops_the_check_with_one_line(packed, tmp_path, capsys):
    shards = tmp_path / "shards"
    shutil.copytree(packed, shards)
    truncate(shards / INDEX, 0.5)
    assert cli(["data", "check", str(shards)]) == 2
    err = capsys.readouterr().err
    assert "shards.json" in err and "not valid JSON" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ kills
@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    """Text rows only: the kill points and the resume do not depend on media, whose decoding would cost the most."""
    root = tmp_path_factory.mktemp("killdata") / "train"
    root.mkdir()
    rows = [{"text": f"a {c} {s} moves {w}. which way does the {c} {s} move?", "target": w}
            for c in ("red", "green", "blue") for s in ("circle", "square") for w in ("left", "right", "up", "down")]
    (root / "text2text.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _common(train_dir: Path) -> list[str]:
    return [f"data.train_dir={train_dir}", "data.synthetic=null", "optim.max_steps=4", "optim.batch_size=4",
            "checkpoint.every=1", "checkpoint.keep=10", "tokenizer.text_vocab_size=120", "optim.warmup_steps=2"]


def _train(out: Path, train_dir: Path, kill_at: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != KILL_AT}
    if kill_at is not None:
        env[KILL_AT] = kill_at
    return subprocess.Popen([sys.executable, "-m", "unified.cli", "train", str(SMOKE), f"output_dir={out}",
                             *_common(train_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env)


def test_killed_at_each_point_then_resumed_equals_the_run_never_killed(train_dir, tmp_path, monkeypatch):
    straight = _train(tmp_path / "straight", train_dir)  # alongside the killed chain: two cores
    run = tmp_path / "killed"
    ckpts = run / "checkpoints"
    # killed in step 1 (its gradients computed, not applied); then twice while saving step 2, each time resumed
    for kill_at in ("mid-step:1", "between-model-and-state:2", "mid-save:2"):
        killed = _train(run, train_dir, kill_at)
        assert killed.wait(timeout=300) == -signal.SIGKILL, killed.stderr.read()  # the hook fired
        names = sorted(p.name for p in ckpts.glob("step-*"))
        assert names == ["step-00000001"], (kill_at, names)  # what was being saved is not there; step 1 is
        assert checkpoint_damage(ckpts / "step-00000001") is None
    cfg = load_config(SMOKE, [f"output_dir={run}", *_common(train_dir)])
    train(cfg, progress=False)  # resumed here (the same thread count as `unified train`: bitwise the same maths)
    assert straight.wait(timeout=300) == 0, straight.stderr.read()
    assert not list(ckpts.glob(".tmp-*"))  # what the killed saves left half-written was cleared
    for step in (1, 2, 3, 4):
        a = load_file(tmp_path / "straight" / "checkpoints" / f"step-{step:08d}" / "model.safetensors")
        b = load_file(ckpts / f"step-{step:08d}" / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), step

    # the newest checkpoint damaged: --resume auto stops, naming it and the way on
    truncate(ckpts / "step-00000004" / "model.safetensors")
    with pytest.raises(InputError, match=r"step-00000004/model\.safetensors.*cut short.*newest intact one is "
                                         r"step-00000003: resume from it with --resume last-intact"):
        train(cfg, progress=False)
    # --resume last-intact: restarts at step 3, passing over the damaged one; what it writes is what was lost
    logged = []
    monkeypatch.setattr(loop.tqdm, "write", logged.append)
    train(cfg, progress=False, resume="last-intact")
    assert any("restarting from step 3" in line for line in logged), logged
    assert any("passing over the damaged checkpoint step-00000004" in line for line in logged), logged
    a = load_file(tmp_path / "straight" / "checkpoints" / "step-00000004" / "model.safetensors")
    b = load_file(ckpts / "step-00000004" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_values_are_checked_before_any_work(tmp_path):
    cfg = load_config(SMOKE, [f"output_dir={tmp_path}", "optim.max_steps=1"])
    with pytest.raises(ConfigError, match="--overwrite"):
        train(cfg, progress=False, resume="last-intact", overwrite=True)

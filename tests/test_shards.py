"""Tar shards (`unified data shard`): rows and media read back byte for byte, every row once per epoch across two
ranks x two DataLoader workers (also across a resume mid-epoch), and training from shards equal to training from
the files they were packed from."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from unified.cli import main as cli
from unified.data import load_data_dir
from unified.data.shards import ShardedRows, write_shards
from unified.data.synthetic import write_split
from unified.errors import InputError, MediaDecodeError
from unified.media import Member
from unified.training import load_config, train
from unified.training.batches import PlannedBatches, Planner, batch_loader
from unified.training.data import RowStream
from unified.training.mixture import TaskSampler

ROOT = Path(__file__).parents[1]
SMOKE = ROOT / "training" / "configs" / "tiny-smoke.yaml"


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_split(root / "files", 30, seed=0, split="train", progress=False)
    write_shards(root / "files", root / "shards", rows_per_shard=7, progress=False)
    return root


def test_rows_and_media_read_back_as_packed(packed):
    files, _ = load_data_dir(packed / "files")
    shards, reports = load_data_dir(packed / "shards")
    assert reports == [] and shards.keys() == files.keys()
    for task, rows in shards.items():
        assert isinstance(rows, ShardedRows) and len(rows) == len(files[task])
        for i in random.Random(task).sample(range(len(rows)), 4):
            row, truth = rows[i], files[task][i]
            assert row.keys() == truth.keys()
            for key, value in truth.items():
                if key in ("image", "video", "audio"):
                    got = row[key] if isinstance(row[key], list) else [row[key]]
                    want = value if isinstance(value, list) else [value]
                    assert all(isinstance(m, Member) and m.read() == Path(p).read_bytes() for m, p in zip(got, want))
                else:
                    assert row[key] == value  # _source still names the original file and row
    assert len(list((packed / "shards").glob("vqa-*.tar"))) == -(-len(files["vqa"]) // 7)


@dataclass
class Sources:
    plan: Any
    sources: list


class SourcesOnly(PlannedBatches):
    """Workers read each planned row from its shard and hand back where it came from (no model needed)."""

    def __getitem__(self, plan):
        return Sources(plan, [self.rows[t][i]["_source"] for t, i in plan.rows])


def test_every_row_once_per_epoch_across_two_ranks_and_two_workers_and_a_resume(packed):
    rows = load_data_dir(packed / "shards", ["vqa"])[0]
    n = len(rows["vqa"])  # 72 rows in 11 shards; batch 4 x 2 ranks = 8 rows a step: 9 steps are one epoch
    cfg = load_config(SMOKE, ["optim.batch_size=4", f"optim.max_steps={n // 8}", "data.tasks=[vqa]"])
    tasks = {"vqa": type("T", (), {"own_loss": False})()}

    def loader(rank, state=None):
        sampler, stream = TaskSampler({"vqa": n}, seed=0), RowStream(rows, seed=0)
        planner = Planner(cfg, sampler, stream, tasks, rank=rank, world=2)
        if state is not None:
            stream.load_state_dict(state["stream"])
            sampler.load_state_dict(state["sampler"])
            planner.load_state_dict(state["planner"])
        return planner, batch_loader(planner, SourcesOnly(tasks, None, rows, 0), num_workers=2, prefetch=2, seed=0)

    seen = []
    for rank in (0, 1):
        planner, batches = loader(rank)
        for _ in range(4):  # stop mid-epoch with plans prepared ahead, as a checkpoint finds them
            batch = next(batches)
            planner.consumed(batch.plan)
            seen += batch.sources
        state = {"stream": planner.stream.state_dict(), "sampler": planner.sampler.state_dict(),
                 "planner": planner.state_dict()}
        assert len(state["planner"]["pending"]) == 4  # 2 workers x prefetch 2
        batches.close()
        planner, batches = loader(rank, state)
        for batch in batches:
            planner.consumed(batch.plan)
            seen += batch.sources
    assert sorted(seen) == sorted(row["_source"] for row in rows["vqa"])


@pytest.mark.slow
def test_training_from_shards_with_workers_equals_training_from_files(packed, tmp_path):
    """Files, shards read by 2 workers, and shards decoded ahead at the run's own sampling (`--decode` with the
    run's config): the same weights, bit for bit."""
    from unified.cli import main as cli

    assert cli(["data", "shard", str(packed / "files"), "--out", str(tmp_path / "decoded"), "--decode", str(SMOKE),
                "--tasks", *TRAINED]) == 0
    common = ["data.synthetic=null", "optim.max_steps=8", "checkpoint.every=100", "tokenizer.text_vocab_size=200",
              "mixture.mixed_batches=true", f"data.tasks=[{', '.join(TRAINED)}]"]
    for name, data, extra in (("files", packed / "files", []), ("shards", packed / "shards", ["data.num_workers=2"]),
                              ("decoded", tmp_path / "decoded", [])):
        train(load_config(SMOKE, [f"output_dir={tmp_path / name}", f"data.train_dir={data}", *common, *extra]),
              progress=False)
    a, b, c = (load_file(tmp_path / n / "final" / "model.safetensors") for n in ("files", "shards", "decoded"))
    assert a.keys() == b.keys() == c.keys() and all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)


TRAINED = ["vqa", "caption", "retrieval", "audio_video_mcqa", "grounding"]


def test_decoded_shards_hold_the_processors_frames_and_refuse_other_settings(packed, tmp_path):
    from unified.api import DEFAULT_MODEL_DIR
    from unified.processing import UnifiedProcessor
    from unified.training.build import processor_settings

    write_shards(packed / "files", tmp_path / "decoded", tasks=["audio_video_mcqa"], progress=False,
                 decode=processor_settings(DEFAULT_MODEL_DIR, packed / "files"))
    row = load_data_dir(tmp_path / "decoded")[0]["audio_video_mcqa"][0]
    truth = load_data_dir(packed / "files", ["audio_video_mcqa"])[0]["audio_video_mcqa"][0]
    processor = UnifiedProcessor.from_pretrained(DEFAULT_MODEL_DIR)  # samples as the shards were decoded
    got, want = processor.video(row["video"], "audio_video_mcqa"), processor.video(truth["video"], "audio_video_mcqa")
    assert row["video"].name.endswith(".npy") and torch.equal(got.frames, want.frames)
    assert torch.equal(got.timestamps, want.timestamps) and got.size == want.size and got.duration == want.duration
    assert torch.equal(processor._mel(row["audio"]), processor._mel(truth["audio"]))
    from unified.media import load_audio, load_video

    with pytest.raises(InputError, match=r"fps=4.0 \(asked 2.0\)"):
        load_video(row["video"], fps=2.0, max_frames=8, size=64)
    with pytest.raises(InputError, match=r"sampling_rate=16000 \(asked 8000\)"):
        load_audio(row["audio"], sampling_rate=8000)


def test_packing_refuses_bad_media_and_a_used_directory(packed, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(packed / "files", bad)
    (bad / "clips" / min(p.name for p in (bad / "clips").glob("*.mp4"))).write_bytes(b"not a video" * 9)
    assert cli(["data", "shard", str(bad), "--out", str(tmp_path / "out"), "--tasks", "vqa"]) == 2
    err = capsys.readouterr().err
    assert err.count("unified: error:") == 1 and "vqa.jsonl:" in err and "do not decode" in err
    assert cli(["data", "shard", str(bad), "--out", str(tmp_path / "out"), "--tasks", "vqa", "--skip-bad-rows"]) == 0
    kept = load_data_dir(tmp_path / "out")[0]["vqa"]
    assert 0 < len(kept) < len(load_data_dir(bad, ["vqa"])[0]["vqa"])
    with pytest.raises(InputError, match="already holds shards"):
        write_shards(bad, tmp_path / "out", tasks=["vqa"], progress=False)


def test_a_truncated_shard_names_its_member(packed, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(packed / "shards", copy)
    rows = load_data_dir(copy, ["vqa"])[0]["vqa"]
    member = rows[6]["video"]
    with open(member.shard, "r+b") as f:
        f.truncate(member.offset + 10)
    with pytest.raises(MediaDecodeError, match="truncated"):
        member.read()


def test_a_streamed_datasets_iterable_packs_row_by_row_and_reads_back(packed, tmp_path):
    """A `datasets.IterableDataset` (rows streamed, never a list) through `write_shards_from`: the rows read back
    equal the file's rows, media byte for byte; a bad row in the stream is named by its index, or skipped and
    reported; the digest a resume compares equals the one of the file's rows."""
    import datasets

    from unified.data.shards import write_shards_from
    from unified.training.checkpoint import fingerprint
    from unified.training.config import TrainConfig

    files = packed / "files"
    raw = [json.loads(line) for line in (files / "vqa.jsonl").read_text().splitlines()]
    stream = datasets.Dataset.from_list(raw).to_iterable_dataset()
    write_shards_from({"vqa": stream}, tmp_path / "a", base_dir=files, rows_per_shard=5, progress=False)
    got = load_data_dir(tmp_path / "a")[0]["vqa"]
    truth = load_data_dir(files, ["vqa"])[0]["vqa"]
    assert len(got) == len(truth) and len(list((tmp_path / "a").glob("vqa-*.tar"))) == -(-len(truth) // 5)
    for a, b in zip(got, truth):
        assert {k: v for k, v in a.items() if k not in ("video", "image", "_source")} == \
               {k: v for k, v in b.items() if k not in ("video", "image", "_source")}
        media = a.get("video") or a.get("image")
        assert media.read() == Path(b.get("video") or b.get("image")).read_bytes()
    assert [r["_source"] for r in got[:2]] == ["vqa:1", "vqa:2"]
    bad = [*raw[:3], {**raw[3], "answer": ["not", "text"]}, *raw[4:6]]
    with pytest.raises(InputError, match="vqa row 4"):
        write_shards_from({"vqa": iter(bad)}, tmp_path / "b", base_dir=files, progress=False)
    index = write_shards_from({"vqa": iter(bad)}, tmp_path / "c", base_dir=files, skip_bad_rows=True, progress=False)
    assert index["tasks"]["vqa"]["rows"] == 5 and len(load_data_dir(tmp_path / "c")[0]["vqa"]) == 5
    cfg = TrainConfig()
    assert fingerprint(cfg, load_data_dir(packed / "shards", ["vqa"])[0], {})["data"] == \
           fingerprint(cfg, {"vqa": truth}, {})["data"]


def test_data_check_decodes_the_members_of_shards_and_names_a_bad_one(packed, tmp_path, capsys):
    """`unified data check SHARDS` decodes each member in place (plain and `--decode` shards): clean shards pass;
    a member overwritten with noise is a bad row naming its original file:row and the shard member."""
    copy = tmp_path / "shards"
    shutil.copytree(packed / "shards", copy)
    assert cli(["data", "check", str(copy), "--tasks", "vqa", "caption"]) == 0
    rows = load_data_dir(copy, ["vqa"])[0]["vqa"]
    member = next(r["video"] for r in rows if "video" in r)
    with open(member.shard, "r+b") as f:
        f.seek(member.offset)
        f.write(b"\0" * member.size)
    capsys.readouterr()
    assert cli(["data", "check", str(copy), "--tasks", "vqa"]) == 1
    out = capsys.readouterr().out
    assert "vqa.jsonl:" in out and member.name in out and "1 bad" in out
    from unified.api import DEFAULT_MODEL_DIR

    assert cli(["data", "shard", str(packed / "files"), "--out", str(tmp_path / "decoded"), "--tasks", "caption",
                "--decode", str(DEFAULT_MODEL_DIR)]) == 0
    assert cli(["data", "check", str(tmp_path / "decoded")]) == 0

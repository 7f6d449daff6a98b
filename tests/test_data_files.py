"""Rows from JSONL / CSV / parquet and from a `datasets.Dataset`: media paths relative to the file, bad rows named
by file and row, `skip_bad_rows` counting what it skips."""

from __future__ import annotations

import json
import random

import datasets
import pytest
from media_fixtures import write_index_video
from task_rows import tiny_stack

from unified.data import load_data_dir, read_rows, rows_from_dataset
from unified.errors import InputError, MediaDecodeError
from unified.task_zoo import get_task
from unified.task_zoo.batching import task_batch


@pytest.fixture
def data_dir(tmp_path):
    (tmp_path / "clips").mkdir()
    write_index_video(tmp_path / "clips" / "a.mp4", num_frames=4, fps=2)
    rows = [{"video": "clips/a.mp4", "question": "what colour?", "answer": "red"},
            {"video": "clips/a.mp4", "question": "what shape?", "answer": "circle"}]
    (tmp_path / "vqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mcqa = [{"video": "clips/a.mp4", "question": "which way?", "options": ["left", "right"], "answer_index": 1}]
    datasets.Dataset.from_list(mcqa).to_parquet(str(tmp_path / "video_mcqa.parquet"))
    (tmp_path / "text2text.csv").write_text('text,target\n"say yes",yes\n"say no",no\n')
    return tmp_path


def test_every_format_loads_with_media_resolved(data_dir):
    data, reports = load_data_dir(data_dir)
    assert sorted(data) == ["text2text", "video_mcqa", "vqa"]
    assert [r["answer"] for r in data["vqa"]] == ["red", "circle"]
    assert data["vqa"][0]["video"] == str(data_dir / "clips" / "a.mp4")
    assert data["video_mcqa"][0]["options"] == ["left", "right"]
    assert data["text2text"][1] == {"text": "say no", "target": "no", "_source": "text2text.csv:2"}
    assert all(not r.skipped for r in reports)


def test_csv_list_columns_are_json(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"")
    write_index_video(tmp_path / "clip.mp4", num_frames=4, fps=2)
    (tmp_path / "video_mcqa.csv").write_text('video,question,options,answer_index\n'
                                             'clip.mp4,which?,"[""up"", ""down""]",0\n')
    rows, _ = read_rows(tmp_path / "video_mcqa.csv", "video_mcqa")
    assert rows[0]["options"] == ["up", "down"] and rows[0]["answer_index"] == 0


def test_bad_rows_raise_with_file_and_row_or_are_skipped_and_counted(data_dir):
    with open(data_dir / "vqa.jsonl", "a") as f:
        f.write(json.dumps({"video": "clips/missing.mp4", "question": "q", "answer": "a"}) + "\n")
        f.write(json.dumps({"video": "clips/a.mp4", "question": "q"}) + "\n")
    with pytest.raises(InputError, match=r"vqa.jsonl row 3.*missing file"):
        read_rows(data_dir / "vqa.jsonl", "vqa")
    rows, report = read_rows(data_dir / "vqa.jsonl", "vqa", skip_bad_rows=True)
    assert len(rows) == 2 and report.loaded == 2
    assert [b.source for b in report.skipped] == ["vqa.jsonl:3", "vqa.jsonl:4"]
    assert "missing field" in report.skipped[1].reason
    assert "2 skipped" in report.summary()


def test_undecodable_media_names_its_row(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all" * 10)
    (tmp_path / "vqa.jsonl").write_text(json.dumps({"video": "broken.mp4", "question": "q", "answer": "a"}) + "\n")
    rows, _ = read_rows(tmp_path / "vqa.jsonl", "vqa")
    _, processor, _ = tiny_stack()
    with pytest.raises(MediaDecodeError, match="vqa.jsonl:1"):
        task_batch(get_task("vqa"), rows, processor, rng=random.Random(0))


def test_a_datasets_dataset_is_a_source(data_dir):
    dataset = datasets.Dataset.from_list([{"video": "clips/a.mp4", "question": "q?", "answer": "a"},
                                          {"video": None, "question": "q?", "answer": "b"}])
    rows, report = rows_from_dataset(dataset, "vqa", base_dir=data_dir)
    assert len(rows) == 2 and "video" not in rows[1] and report.loaded == 2


def test_directory_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_data_dir(tmp_path / "nope")
    with pytest.raises(InputError, match="no file named after a task"):
        load_data_dir(tmp_path)
    (tmp_path / "vqa.jsonl").write_text("")
    with pytest.raises(InputError, match="caption"):
        load_data_dir(tmp_path, ["caption"])

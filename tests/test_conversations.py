"""Conversations in ShareGPT, OpenAI and LLaVA format -> rows of our tasks: the rule, multi-turn context, several
media, system prompts, and every left-out record listed with its reason. Files are written here as each format's own
documentation shows them (LLaMA-Factory's data/README, OpenAI's fine-tuning guide, LLaVA's training JSON)."""

from __future__ import annotations

import base64
import json
import shutil

import pytest

from unified.cli import main
from unified.data import load_data_dir
from unified.data.chat import chat_row
from unified.data.conversations import answer_index, read_conversations, split_options
from unified.data.sources import MediaPolicy
from unified.errors import ConfigError, InputError
from unified.samples import CLIP, FRAME
from unified.task_zoo import get_task
from unified.training.config import load_config
from unified.training.data import load_training_data


@pytest.fixture
def media(tmp_path):
    (tmp_path / "media").mkdir()
    shutil.copy(FRAME, tmp_path / "media" / "a.png")
    shutil.copy(FRAME, tmp_path / "media" / "b.png")
    shutil.copy(CLIP, tmp_path / "media" / "clip.mp4")
    return tmp_path


def _write(path, records, jsonl=False):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) if jsonl else json.dumps(records))
    return path


def _by_source(rows):
    return {row["_source"]: {k: v for k, v in row.items() if k != "_source"} for task in rows.values() for row in task}


def test_sharegpt_multi_turn_system_prompt_several_images_and_options(media):
    root = media / "media"
    records = [
        {"conversations": [{"from": "human", "value": "<image>What colour is the shape?"},
                           {"from": "gpt", "value": "blue"},
                           {"from": "human", "value": "And which way does it point?"},
                           {"from": "gpt", "value": "up"}],
         "system": "Answer in one word.", "images": ["media/a.png"]},
        {"conversations": [{"from": "human", "value": "<image><image>Describe these pictures."},
                           {"from": "gpt", "value": "two triangles."}], "images": ["media/a.png", "media/b.png"]},
        {"messages": [{"role": "user", "content": "<video><audio>Which sound plays?\nOptions:\n(A) low\n(B) high\n"
                                                 "Answer with the letter."},
                      {"role": "assistant", "content": "(B)"}],
         "videos": ["media/clip.mp4"], "audios": ["media/clip.mp4"]},
        {"conversations": [{"from": "human", "value": "what is the opposite of up?"},
                           {"from": "gpt", "value": "down"}]},
        {"conversations": [{"from": "human", "value": "<image>What is it?"}, {"from": "gpt", "value": "a shape"}],
         "images": ["media/a.png", "media/b.png"]},
        {"conversations": [{"from": "human", "value": "weather?"}, {"from": "function_call", "value": "{}"}]},
        {"conversations": [{"from": "human", "value": "<image>What is it?"}, {"from": "gpt", "value": "x"}],
         "images": ["../outside.png"]},
    ]
    rows, report = read_conversations(_write(media / "data.json", records), "sharegpt")
    got = _by_source(rows)
    assert got == {
        "data.json:1 reply 1": {"image": str(root / "a.png"), "question": "system: Answer in one word. user: What "
                               "colour is the shape?", "answer": "blue"},
        "data.json:1 reply 2": {"image": str(root / "a.png"), "question": "system: Answer in one word. user: What "
                               "colour is the shape? assistant: blue user: And which way does it point?",
                               "answer": "up"},
        "data.json:2 reply 1": {"image": [str(root / "a.png"), str(root / "b.png")], "caption": "two triangles."},
        "data.json:3 reply 1": {"video": str(root / "clip.mp4"), "audio": str(root / "clip.mp4"),
                               "question": "Which sound plays?", "options": ["low", "high"], "answer_index": 1},
        "data.json:4 reply 1": {"text": "what is the opposite of up?", "target": "down"},
    }
    assert sorted(rows) == ["audio_video_mcqa", "caption", "text2text", "vqa"]
    assert [(b.source, b.reason) for b in report.skipped] == [
        ("data.json:5", "1 <image> tag(s) in the messages but 2 images"),
        ("data.json:6", "conversations[1].from is 'function_call': expected one of ['assistant', 'gpt', 'human', "
                        "'system', 'user'] (tool calls and observations are not mapped)"),
        ("data.json:7", "images[0]: outside the media root (paths are read only under --media-root)"),
    ]
    assert report.loaded == 5


def test_openai_jsonl_shares_the_servers_parser(media):
    png = base64.b64encode(FRAME.read_bytes()).decode()
    wav_like = base64.b64encode(b"RIFF" + bytes(40)).decode()
    records = [
        {"messages": [{"role": "system", "content": "You are brief."},
                      {"role": "user", "content": [{"type": "text", "text": "what shape is it?"},
                                                   {"type": "image_url", "image_url": {"url": "media/a.png"}}]},
                      {"role": "assistant", "content": "a triangle"}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url",
                                                    "image_url": {"url": f"data:image/png;base64,{png}"}}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "a blue triangle."}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url",
                                                    "image_url": {"url": "https://example.com/x.png"}}]},
                      {"role": "assistant", "content": "?"}]},
        {"messages": [{"role": "user", "content": [{"type": "input_audio",
                                                    "input_audio": {"data": wav_like, "format": "wav"}},
                                                   {"type": "text", "text": "what is heard?"}]},
                      {"role": "assistant", "content": "a beep"}]},
    ]
    path = _write(media / "chat.jsonl", records, jsonl=True)
    with open(path, "a") as handle:
        handle.write("{not json\n")
    rows, report = read_conversations(path, "openai", media_dir=media / "inline")
    got = _by_source(rows)
    inline = media / "inline" / next(p.name for p in (media / "inline").iterdir())
    assert got == {
        "chat.jsonl:1 reply 1": {"image": str(media / "media" / "a.png"),
                                "question": "system: You are brief. user: what shape is it?", "answer": "a triangle"},
        "chat.jsonl:2 reply 1": {"image": str(inline), "caption": "a blue triangle."},
    }
    assert inline.suffix == ".png" and inline.read_bytes() == FRAME.read_bytes()
    reasons = {b.source: b.reason for b in report.skipped}
    assert reasons["chat.jsonl:3"].startswith("messages[0].content[0].image_url: URL scheme 'https' is refused")
    assert reasons["chat.jsonl:4 reply 1"] == ("a question turn with ['audio']: no task takes it (tasks taking "
                                               "question turns: ['vqa'])")
    assert reasons["chat.jsonl:5"].startswith("line 5: not valid JSON")
    # one mapper: the server's row for the same user message is the importer's row minus the reply
    message = records[0]["messages"][1]
    served = chat_row(get_task("vqa"), [message], {}, MediaPolicy(media, 2**20)).row
    assert served == {"image": str(media / "media" / "a.png"), "question": "what shape is it?"}


def test_llava_json_and_the_task_override(media):
    records = [
        {"id": "000000033471", "image": "media/a.png",
         "conversations": [{"from": "human", "value": "<image>\nWhat is the colour of the shape?"},
                           {"from": "gpt", "value": "It is blue."},
                           {"from": "human", "value": "Describe the image in detail."},
                           {"from": "gpt", "value": "A blue triangle on black."}]},
        {"id": "v1", "video": "media/clip.mp4",
         "conversations": [{"from": "human", "value": "<video>\nWhich way does it move?\nA. left\nB. up\n"},
                           {"from": "gpt", "value": "up"}]},
        {"id": "v2", "video": "media/clip.mp4", "conversations": [{"from": "human", "value": "<video>\nHi?"}]},
    ]
    path = _write(media / "llava.json", records)
    rows, report = read_conversations(path, "llava")
    got = _by_source(rows)
    assert got["llava.json:1 reply 1"]["question"] == "What is the colour of the shape?"
    assert got["llava.json:1 reply 2"] == {"image": str(media / "media" / "a.png"),
                                           "caption": "A blue triangle on black."}
    assert got["llava.json:2 reply 1"] == {"video": str(media / "media" / "clip.mp4"), "question": "Which way does it "
                                          "move?", "options": ["left", "up"], "answer_index": 1}
    assert [(b.source, b.reason) for b in report.skipped] == [
        ("llava.json:3 reply 1", "a user message with no assistant reply after it")]
    forced, report = read_conversations(path, "llava", task="vqa")
    assert sorted(forced) == ["vqa"] and len(forced["vqa"]) == 3
    assert forced["vqa"][1]["question"] == ("user: What is the colour of the shape? assistant: It is blue. user: "
                                            "Describe the image in detail.")
    with pytest.raises(InputError, match="no task registered"):
        read_conversations(path, "llava", task="no_such_task")
    with pytest.raises(InputError, match="expected one of"):
        read_conversations(path, "alpaca")


def test_options_and_replies_by_hand():
    assert split_options("Which?\nA. red\nB. blue\nAnswer with the letter.") == ("Which?", ["red", "blue"])
    assert split_options("Which?\n(A) red\n(C) blue") == ("Which?\n(A) red\n(C) blue", [])  # not A, B, ...
    assert [answer_index(r, ["red", "blue"]) for r in ("B", "(B)", "B. blue", "Blue.", "A")] == [1, 1, 1, 1, 0]


def test_cli_import_writes_a_data_directory_and_the_skipped_list(media, capsys):
    records = [{"conversations": [{"from": "human", "value": "<image>What colour?"}, {"from": "gpt", "value": "blue"}],
                "images": ["a.png"]},
               {"conversations": [{"from": "human", "value": "<image>What colour?"}, {"from": "gpt", "value": "red"}],
                "images": ["missing.png"]}]
    path = _write(media / "conv.json", records)
    out = media / "out"
    code = main(["data", "import", str(path), "--format", "sharegpt", "--out", str(out), "--media-root",
                 str(media / "media")])
    printed = capsys.readouterr().out
    assert code == 0
    assert "conv.json: 1 rows, 1 skipped (conv.json:2: images[0]: no such file under the media root)" in printed
    data, _ = load_data_dir(out)
    assert data["vqa"][0]["answer"] == "blue" and data["vqa"][0]["image"] == str(media / "media" / "a.png")
    assert [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()] == [
        {"record": "conv.json:2", "reason": "images[0]: no such file under the media root"}]


def test_a_conversation_file_is_a_training_data_source(media):
    records = [{"conversations": [{"from": "human", "value": "<image>What colour?"}, {"from": "gpt", "value": "blue"},
                                  {"from": "human", "value": "Describe it."}, {"from": "gpt", "value": "a shape."}],
                "images": ["a.png"]},
               {"conversations": [{"from": "human", "value": "say yes"}]}]
    path = _write(media / "train.json", records)
    base = ["data.format=sharegpt", f"data.train_dir={path}", f"data.media_root={media / 'media'}",
            f"output_dir={media / 'run'}"]
    with pytest.raises(InputError, match=r"1 record\(s\)'?: left out by the sharegpt import rule: .*train.json:2 reply "
                                         r"1: a user message with no assistant reply"):
        load_training_data(load_config(None, base))
    train, evaluation = load_training_data(load_config(None, [*base, "data.skip_bad_rows=true"]), log=lambda _: None)
    assert evaluation == {}
    assert {t: [r["_source"] for r in rows] for t, rows in train.items()} == {
        "vqa": ["train.json:1 reply 1"], "caption": ["train.json:1 reply 2"]}
    with pytest.raises(ConfigError, match="data.media_root.*data.format is 'tasks'"):
        load_config(None, [f"data.train_dir={media}", f"data.media_root={media}"])

"""The lmms-eval adapter: requests answered as `Model.generate` answers the same inputs, likelihoods against a
teacher-forced forward pass by hand, and `lmms-eval --model unified` run end to end on tasks written here over
local files (in lmms-eval's environment of its own, `tests/lmms_env.py`), its logged answers and scores compared
with this process's own model."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lmms_env import LMMS_EVAL, ROOT, Unavailable, environment, install_checkout
from PIL import Image

from unified import Model, harness
from unified.api import DEFAULT_MODEL_DIR
from unified.errors import InputError
from unified.media.audio import load_audio
from unified.task_zoo import build_tasks
from unified.task_zoo.batching import task_batch

CLIP = str(ROOT / "unified" / "samples" / "clip.mp4")
FRAME = str(ROOT / "unified" / "samples" / "frame.png")
OPTIONS = ["red circle", "blue square", "green triangle"]
QUESTION = "which shape appears first?"


@pytest.fixture(scope="module")
def model():
    return Model.from_pretrained(DEFAULT_MODEL_DIR)


def _requests(docs, kind_arg, visual, contexts):
    """Requests as lmms-eval builds them: (context, gen_kwargs | continuation, doc_to_visual, doc_id, task, split)."""
    docs["t"] = {"test": [{"v": visual}]}
    return [(context, arg, lambda doc: doc["v"], 0, "t", "test") for context, arg in zip(contexts, kind_arg)]


def test_visuals_become_media_keywords():
    image = Image.new("RGB", (8, 8))
    samples = np.zeros(1600, dtype=np.float64)
    got = harness.media_inputs([image, "a/clip.MP4", {"array": samples, "sampling_rate": 8000}])
    assert got["image"] is image and got["video"] == "a/clip.MP4" and got["source_rate"] == 8000
    assert got["audio"].dtype == np.float32 and got["audio"].shape == (1600,)
    assert harness.media_inputs(["x.png", "y.wav"]) == {"image": "x.png", "audio": "y.wav"}
    assert harness.media_inputs(None) == {}
    with pytest.raises(InputError, match=r"visuals\[1\].*a second video"):
        harness.media_inputs(["a.mp4", "b.mp4"])
    with pytest.raises(InputError, match=r"visuals\[0\].*audio"):
        harness.media_inputs([{"path": "x.wav"}])
    with pytest.raises(InputError, match=r"visuals\[0\]"):
        harness.media_inputs([3])


@pytest.mark.slow
def test_generate_until_answers_as_generate_does(model):
    docs: dict = {}
    lines = [f"{'ABC'[i]}. {o}" for i, o in enumerate(OPTIONS)]
    lettered = "\n".join([QUESTION, *lines, "Answer with a letter."])
    contexts = ["what moves?", "what moves?", "Describe the clip.", lettered]
    kwargs = [{"max_new_tokens": 16}, {"until": [" "]}, {}, {}]
    got = harness.generate_until(model, _requests(docs, kwargs, [CLIP], contexts), docs)
    said = model.generate(task="vqa", video=CLIP, question="what moves?", max_new_tokens=16)
    assert got[0] == said and " " in said
    assert got[1] == said.split(" ")[0]  # cut at the first stop string
    assert got[2] == model.generate(task="caption", video=CLIP)  # the rule: a request for a description
    picked = model.generate(task="video_mcqa", video=CLIP, question=QUESTION, options=OPTIONS)
    assert got[3] == "ABC"[OPTIONS.index(picked)]  # lettered options: the letter of the option chosen
    questions = ["what moves?", "which shape appears first?", "what moves?"]
    docs["t"] = {"test": [{"v": [CLIP]}] * 3}
    requests = [(q, {}, lambda doc: doc["v"], i, "t", "test") for i, q in enumerate(questions)]
    batched = harness.generate_until(model, requests, docs, batch_size=2)  # the first two asked together
    assert batched[:2] == model.generate(task="vqa", video=[CLIP, CLIP], question=questions[:2])
    assert batched[2] == model.generate(task="vqa", video=CLIP, question=questions[2])
    given = harness.generate_until(model, _requests(docs, [{}], [CLIP], ["what moves?"]), docs, task="caption")
    assert given == [model.generate(task="caption", video=CLIP)]  # model_args task= overrides the rule
    with pytest.raises(InputError, match="needs options"):
        harness.generate_until(model, _requests(docs, [{}], [CLIP], ["what moves?"]), docs, task="video_mcqa")


def _by_hand(model, task_name, row, answer):
    """Mean log-probability of `answer` as the row's target: one teacher-forced forward pass, cross-entropy by hand."""
    task = build_tasks([task_name], {task_name: model.task_options.get(task_name, {})},
                       model.processor.tokenizer.layout)[task_name]
    batch = task_batch(task, [row], model.processor, with_target=False)
    labels = torch.tensor([model.processor.tokenizer.encode(answer, add_eos=True)])
    with torch.no_grad():
        logits = model.network(**batch, labels=labels).logits
    return -float(F.cross_entropy(logits[0].float(), labels[0], reduction="mean")), labels.shape[1]


def test_loglikelihood_scores_each_choice_as_ranked_multiple_choice_does(model):
    docs: dict = {}
    audio = load_audio(CLIP).numpy()
    requests = _requests(docs, [f" {o}" for o in OPTIONS], [CLIP, {"array": audio, "sampling_rate": 16000}],
                         [QUESTION] * 3)
    got = harness.loglikelihood(model, requests, docs)  # video and audio: the audio-video multiple-choice task
    assert len(got) == 3 and all(isinstance(g, bool) for _, g in got)
    row = {"video": CLIP, "audio": CLIP, "question": QUESTION, "options": OPTIONS}
    for (nll, _), option in zip(got, OPTIONS):
        mean, _ = _by_hand(model, "audio_video_mcqa", row, option)
        assert nll == pytest.approx(-mean, abs=1e-4)
    best = model.generate(task="audio_video_mcqa", video=CLIP, audio=audio, source_rate=16000, question=QUESTION,
                          options=OPTIONS, return_score=True)
    assert OPTIONS[int(np.argmin([n for n, _ in got]))] == best.answer
    assert min(n for n, _ in got) == pytest.approx(-best.score, abs=1e-4)


def test_loglikelihood_of_a_free_answer_and_model_loglikelihood(model):
    said = model.generate(task="vqa", video=CLIP, question="what moves?")
    docs: dict = {}
    (nll, greedy), = harness.loglikelihood(model, _requests(docs, [" green"], [CLIP], ["what moves?"]), docs)
    mean, tokens = _by_hand(model, "vqa", {"video": CLIP, "question": "what moves?"}, "green")
    assert nll == pytest.approx(-mean, abs=1e-4) and greedy is False
    scores = model.loglikelihood("vqa", [said, "green"], video=CLIP, question="what moves?")
    assert scores[1].tokens == tokens and scores[1].logprob == pytest.approx(mean * tokens, abs=1e-3)
    assert scores[0].logprob > scores[1].logprob  # what it says is likelier than a word it does not
    with pytest.raises(InputError, match="answers"):
        model.loglikelihood("vqa", "green", video=CLIP, question="what moves?")
    with pytest.raises(InputError, match="one input"):
        model.loglikelihood("vqa", ["green"], video=[CLIP, CLIP], question="what moves?")


# ------------------------------------------------------------------------------------------ lmms-eval itself
UTILS = '''
from PIL import Image
from unified.media.audio import load_audio


def video(doc):
    return [doc["video"]]


def image(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def video_and_audio(doc):  # audio as HF datasets' Audio feature gives it
    return [doc["video"], {"array": load_audio(doc["video"]).numpy(), "sampling_rate": 16000}]


def question(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def describe(doc, lmms_eval_specific_kwargs=None):
    return "Describe the image."


def lettered(doc, lmms_eval_specific_kwargs=None):
    lines = [f"{chr(65 + i)}. {o}" for i, o in enumerate(doc["options"])]
    return "\\n".join([doc["question"], *lines, "Answer with the option's letter."])


def options(doc):
    return doc["options"]
'''

TASK = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {rows}
test_split: test
output_type: {output_type}
doc_to_visual: !function utils.{visual}
doc_to_text: !function utils.{text}
doc_to_target: {target}
{extra}
metric_list:
  - metric: {metric}
    aggregation: mean
    higher_is_better: true
"""
GENERATE = "generation_kwargs:\n  max_new_tokens: 16\n  until: [\"\\n\"]"
TASKS = {  # name: (output_type, visual, text, target, extra, metric)
    "u_vqa": ("generate_until", "video", "question", "answer", GENERATE, "exact_match"),
    "u_caption": ("generate_until", "image", "describe", "answer", GENERATE, "exact_match"),
    "u_letters": ("generate_until", "video", "lettered", "letter", GENERATE, "exact_match"),
    "u_choice": ("multiple_choice", "video_and_audio", "question", "answer_index",
                 "doc_to_choice: !function utils.options", "acc"),
}
ROWS = [{"question": QUESTION, "options": OPTIONS, "answer_index": 0},
        {"question": "which shape appears last?", "options": OPTIONS[::-1], "answer_index": 2}]


def _write_tasks(folder: Path) -> Path:
    rows = folder / "rows.jsonl"
    rows.write_text("".join(json.dumps({**r, "video": CLIP, "image": FRAME, "answer": "a red circle",
                                        "letter": "A"}) + "\n" for r in ROWS))
    tasks = folder / "tasks"
    tasks.mkdir()
    (tasks / "utils.py").write_text(UTILS)
    for name, (output_type, visual, text, target, extra, metric) in TASKS.items():
        (tasks / f"{name}.yaml").write_text(TASK.format(name=name, rows=rows, output_type=output_type, visual=visual,
                                                        text=text, target=target, extra=extra, metric=metric))
    return tasks


def _samples(out: Path, task: str) -> list[dict]:
    files = sorted(out.rglob(f"*samples_{task}.jsonl"))
    assert files, f"no samples logged for {task} under {out}"
    return sorted((json.loads(line) for line in files[-1].read_text().splitlines()), key=lambda s: s["doc_id"])


@pytest.mark.slow
def test_lmms_eval_runs_the_model_on_local_tasks_and_refuses_unknown_model_args(model, tmp_path):
    try:
        python = environment()  # built once (a few minutes), then reused
        env = {**os.environ, **install_checkout(python, tmp_path / "site"), "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TOKENIZERS_PARALLELISM": "false"}
    except (Unavailable, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"{LMMS_EVAL} could not be installed in its own environment: {exc}")
    tasks = _write_tasks(tmp_path)
    out = tmp_path / "out"
    done = subprocess.run([str(python.parent / "lmms-eval"), "--model", "unified", "--model_args",
                           f"pretrained={DEFAULT_MODEL_DIR},device=cpu", "--tasks", ",".join(TASKS),
                           "--include_path", str(tasks), "--output_path", str(out), "--log_samples",
                           "--batch_size", "2"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0 and "Error during evaluation" not in done.stdout + done.stderr, (
        done.stdout[-3000:] + done.stderr[-3000:])

    said = model.generate(task="vqa", video=[CLIP, CLIP], question=[r["question"] for r in ROWS],
                          max_new_tokens=16)  # asked together, as --batch_size 2 asks them
    assert [s["filtered_resps"] for s in _samples(out, "u_vqa")] == [[a] for a in said]
    caption = model.generate(task="caption", image=Image.open(FRAME).convert("RGB"), max_new_tokens=16)
    assert [s["filtered_resps"] for s in _samples(out, "u_caption")] == [[caption]] * 2
    for sample, row in zip(_samples(out, "u_letters"), ROWS):
        picked = model.generate(task="video_mcqa", video=CLIP, question=row["question"], options=row["options"])
        assert sample["filtered_resps"] == [chr(65 + row["options"].index(picked))]
    audio = load_audio(CLIP)
    for sample, row in zip(_samples(out, "u_choice"), ROWS):
        scores = model.loglikelihood("audio_video_mcqa", row["options"], video=CLIP, audio=audio, source_rate=16000,
                                     question=row["question"], options=row["options"])
        logged = [float(r[0]) for r in sample["filtered_resps"]]
        assert logged == pytest.approx([-s.logprob / s.tokens for s in scores], abs=1e-4)
        assert sample["acc"] == float(int(np.argmin(logged)) == row["answer_index"])
    results = json.loads(next(out.rglob("*_results.json")).read_text())["results"]
    assert set(TASKS) <= set(results)

    refused = subprocess.run([str(python), "-c", REFUSED], capture_output=True, text=True, env=env, timeout=120)
    assert "refused:" in refused.stdout and "tsak" in refused.stdout, refused.stdout + refused.stderr[-2000:]


REFUSED = textwrap.dedent("""
    from lmms_eval.models import get_model
    try:
        get_model("unified").create_from_arg_string("pretrained=x,tsak=vqa")  # a typo of task=
    except TypeError as exc:
        print("refused:", exc)
""")

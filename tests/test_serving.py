"""`unified serve` on the built-in default model, as a subprocess on 127.0.0.1, driven by the official `openai`
client: every built-in task's answer equals `Model.generate`'s, streaming, embeddings, metrics, and every error case
with its status and OpenAI error type."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from serving_fixtures import chat_request, data_url, same_answer, start_cli_server, stop

openai = pytest.importorskip("openai", reason="the official client comes with the dev extra")
pytest.importorskip("fastapi", reason="the server needs the serve extra")

KEY = "test-key"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from unified import Model
    from unified.data import load_data_dir
    from unified.data.synthetic import write_split

    root = tmp_path_factory.mktemp("clips")
    write_split(root, 1, seed=7, split="test", progress=False)
    data, _ = load_data_dir(root, None)
    model = Model.default()
    log = root / "server.log"
    proc, base = start_cli_server(["--media-root", str(root), "--api-key", KEY, "--max-upload-mb", "1",
                                   "--name", "shapes"], log)
    yield {"root": root, "data": data, "model": model, "base": base}
    stop(proc)


@pytest.fixture(scope="module")
def client(world):
    return openai.OpenAI(base_url=f"{world['base']}/v1", api_key=KEY, max_retries=0, timeout=60)


def _task(model, name):
    from unified.task_zoo import build_tasks

    return build_tasks([name], {name: model.task_options.get(name, {})}, model.processor.tokenizer.layout)[name]


def _inputs(task, row):
    return {k: v for k, v in task.inputs(row).items() if not k.startswith("_")}


TASKS = ["caption", "vqa", "video_mcqa", "audio_video_mcqa", "grounding", "temporal_grounding", "classify",
         "regress", "text2text"]


@pytest.mark.parametrize("name", TASKS)
def test_chat_answer_equals_generate(world, client, name):
    model = world["model"]
    task = _task(model, name)
    row = world["data"][name][0]
    inputs = _inputs(task, row)
    messages, extra = chat_request(task, inputs, inline=name != "classify", root=world["root"])  # one by path
    reply = client.chat.completions.create(model="shapes", messages=messages, extra_body=extra)
    scored = model.generate(task=name, **inputs, return_score=True)
    message = reply.choices[0].message
    served = message.model_extra
    assert same_answer(task, served, scored.answer, task.complete(inputs, model.processor),
                       model.processor.tokenizer.layout)
    assert message.content == task.show(scored.answer)
    assert served["score"] == pytest.approx(scored.score, abs=1e-4)
    assert reply.usage.completion_tokens >= 1 and reply.usage.prompt_tokens >= 1
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.choices[0].finish_reason == "stop" and reply.model == "shapes"
    if task.grammar == "options":
        assert served["answer"]["index"] == [str(o) for o in inputs.get("options", inputs.get("labels"))].index(
            scored.answer)


def test_streaming_free_text_and_typed(world, client):
    model = world["model"]
    task = _task(model, "caption")
    inputs = _inputs(task, world["data"]["caption"][0])
    messages, extra = chat_request(task, inputs)
    chunks = list(client.chat.completions.create(model="shapes", messages=messages, extra_body=extra, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    expected = model.generate(task="caption", **inputs)
    assert text == expected and len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 2
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-2].choices[0].delta.model_extra["answer"] == {"type": "text", "value": expected}
    assert chunks[-1].usage.completion_tokens >= 3 and not chunks[-1].choices
    # max_tokens is honoured: the answer is cut and says so
    cut = client.chat.completions.create(model="shapes", messages=messages, extra_body=extra, max_tokens=2)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 2
    assert model.generate(task="caption", **inputs, max_new_tokens=2) == cut.choices[0].message.content
    # a typed answer streams as one chunk
    task = _task(model, "grounding")
    inputs = _inputs(task, world["data"]["grounding"][0])
    messages, extra = chat_request(task, inputs)
    chunks = list(client.chat.completions.create(model="shapes", messages=messages, extra_body=extra, stream=True))
    typed = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(typed) == 1 and typed[0].choices[0].delta.model_extra["answer"]["type"] == "box"


def test_embeddings(world, client):
    model = world["model"]
    row = world["data"]["retrieval"][0]
    out = client.embeddings.create(model="shapes", input=[row["text"], {"type": "video_url",
                                                                       "video_url": {"url": data_url(row["video"])}}])
    text, video = (np.asarray(d.embedding) for d in out.data)
    assert np.allclose(text, model.generate(task="retrieval", text=row["text"]).numpy(), atol=1e-5)
    assert np.allclose(video, model.generate(task="retrieval", video=row["video"]).numpy(), atol=1e-5)
    assert abs(np.linalg.norm(video) - 1) < 1e-5 and out.usage.prompt_tokens > 0
    plain = httpx.post(f"{world['base']}/v1/embeddings", headers={"authorization": f"Bearer {KEY}"},
                       json={"model": "shapes", "input": row["text"], "encoding_format": "float"}).json()
    assert np.allclose(plain["data"][0]["embedding"], text, atol=1e-6)


def test_models_health_metrics(world, client):
    from prometheus_client.parser import text_string_to_metric_families

    listed = client.models.list().data
    assert [m.id for m in listed] == ["shapes"]
    assert {t["name"] for t in listed[0].model_extra["tasks"]} == set(world["model"].task_options)
    assert httpx.get(f"{world['base']}/health").json()["status"] == "ok"
    text = httpx.get(f"{world['base']}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}  # prometheus' own parser
    assert {"unified_requests", "unified_request_seconds", "unified_batch_size", "unified_queue_depth"} <= set(families)
    answered = [s for s in families["unified_requests"].samples if s.labels.get("status") == "200"]
    assert sum(s.value for s in answered) >= len(TASKS)


def _error(base, body, *, key=KEY, status):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    reply = httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_error_cases(world, client):
    base, root = world["base"], world["root"]
    row = world["data"]["vqa"][0]
    video = data_url(row["video"])

    def body(content=None, **extra):
        return {"model": "shapes", "task": "vqa", **extra,
                "messages": [{"role": "user", "content": content or [
                    {"type": "text", "text": "what colour?"}, {"type": "video_url", "video_url": {"url": video}}]}]}

    assert _error(base, body(task="dance"), status=400)["param"] == "task"
    assert _error(base, body(phrase="red"), status=400)["param"] == "phrase"  # a field vqa does not take
    broken = "data:video/mp4;base64," + base64.b64encode(b"\x00not a video" * 50).decode()
    assert _error(base, body([{"type": "text", "text": "q"}, {"type": "video_url", "video_url": {"url": broken}}]),
                  status=400)["code"] == "media_decode_error"
    big = "data:video/mp4;base64," + base64.b64encode(b"\x00" * (2 * 2**20)).decode()
    assert _error(base, body([{"type": "video_url", "video_url": {"url": big}}]), status=413)["code"] == \
        "upload_too_large"
    outside = root.parent / "secret.mp4"
    outside.write_bytes(b"x")
    for url in ("../secret.mp4", str(outside), f"file://{outside}", "http://127.0.0.1:9/clip.mp4",
                "ftp://host/clip.mp4"):
        error = _error(base, body([{"type": "text", "text": "q"}, {"type": "video_url", "video_url": {"url": url}}]),
                       status=400)
        assert "media root" in error["message"] or "scheme" in error["message"]
    assert _error(base, body(), key=None, status=401)["code"] == "invalid_api_key"
    assert _error(base, body(), key="wrong", status=401)["code"] == "invalid_api_key"
    assert _error(base, body(model="gpt-4o"), status=404)["code"] == "model_not_found"
    for extra, param in (({"temperature": 0.8}, "temperature"), ({"n": 2}, "n"), ({"top_p": 0.5}, "top_p"),
                         ({"tools": [{"type": "function"}]}, "tools"), ({"stop": ["\n"]}, "stop"),
                         ({"logprobs": True}, "logprobs"), ({"max_tokens": 0}, "max_tokens")):
        assert _error(base, body(**extra), status=400)["param"] == param
    system = body()
    system["messages"].insert(0, {"role": "system", "content": "You are helpful."})
    assert _error(base, system, status=400)["param"] == "messages[0]"
    caption = body(task="caption")  # a fixed prompt: its text would be dropped, so it is refused
    assert "takes no text" in _error(base, caption, status=400)["message"]
    reply = httpx.post(f"{base}/v1/chat/completions", content=b"{not json", timeout=30,
                       headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"})
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_json"
    assert httpx.get(f"{base}/v1/nothing", headers={"authorization": f"Bearer {KEY}"}).status_code == 404
    # the official client raises the matching exception classes
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=body()["messages"], extra_body={"task": "vqa"})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="shapes", messages=body()["messages"], extra_body={"task": "x"})
    assert httpx.get(f"{base}/health").json()["status"] == "ok"  # still up and answering
    assert client.chat.completions.create(model="shapes", messages=body()["messages"],
                                          extra_body={"task": "vqa"}).choices[0].message.content

"""The server under load, on a tiny model with per-task LoRA adapters, in a thread of this process on 127.0.0.1:
64 requests from 16 concurrent official clients, mixed tasks and adapters with bad requests in between. Every good
request's answer equals its sequential `Model.generate` answer (from a second copy of the model), every bad one
gets its 4xx, batches really form, and the server is healthy afterwards. Also: a request over --timeout gets 504."""

from __future__ import annotations

import base64
import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from serving_fixtures import ThreadServer, chat_request, same_answer
from task_rows import task_rows, tiny_stack, write_media

openai = pytest.importorskip("openai", reason="the official client comes with the dev extra")
pytest.importorskip("fastapi", reason="the server needs the serve extra")

GROUPS = {"caption": "describe", "classify": "describe", "vqa": "ask", "video_mcqa": "ask",
          "audio_video_mcqa": "ask", "grounding": "locate", "temporal_grounding": "locate", "text2text": "ask"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from unified import Model
    from unified.model.adapters import TaskAdapters

    root = tmp_path_factory.mktemp("adapters")
    media = write_media(root)
    _, processor, network = tiny_stack(seed=5)
    TaskAdapters.attach(network, list(GROUPS), GROUPS, r=4)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # peft starts B at zero (a no-op adapter); random B makes each adapter answer its own way
        for name, param in network.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    options = {name: {"max_new_tokens": 6} for name in GROUPS}
    Model(network, processor, options).save_pretrained(root / "model")
    return root, media, Model.from_pretrained(root / "model"), Model.from_pretrained(root / "model")


def _requests(reference, media):
    """(messages, extra_body, expected answer, task, completed row) per good request, cycling over tasks and rows."""
    from unified.task_zoo import build_tasks

    rows = task_rows(media)
    tasks = build_tasks(GROUPS, reference.task_options, reference.processor.tokenizer.layout)
    good = []
    for name, task in tasks.items():
        for row in rows[name]:
            inputs = dict(task.inputs(row).items())
            messages, extra = chat_request(task, inputs)
            expected = reference.generate(task=name, **inputs)
            good.append((messages, extra, expected, task, task.complete(inputs, reference.processor)))
    return good


def _bad(media):
    video = "data:video/mp4;base64," + base64.b64encode(Path(media["video"]).read_bytes()).decode()
    junk = "data:video/mp4;base64," + base64.b64encode(b"\x00junk" * 64).decode()
    user = [{"role": "user", "content": [{"type": "text", "text": "what colour?"},
                                         {"type": "video_url", "video_url": {"url": video}}]}]
    return [({"messages": user, "task": "juggle"}, 400), ({"messages": user, "task": "vqa", "phrase": "x"}, 400),
            ({"messages": [{"role": "user", "content": [{"type": "text", "text": "q"}, {"type": "video_url",
              "video_url": {"url": junk}}]}], "task": "vqa"}, 400),
            ({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {
                "url": "https://127.0.0.1/x.mp4"}}]}], "task": "caption"}, 400),
            ({"messages": user, "task": "vqa", "temperature": 1.0}, 400)]


def test_load_mixed_tasks_adapters_and_bad_requests(served):
    from unified.serving import ServingConfig
    from unified.serving.app import create_app

    _, media, model, reference = served
    good, bad = _requests(reference, media), _bad(media)
    plan = []  # 64 requests: 8 bad ones spread among 56 good ones
    cycle_good, cycle_bad = itertools.cycle(range(len(good))), itertools.cycle(range(len(bad)))
    for i in range(64):
        plan.append(("bad", next(cycle_bad)) if i % 8 == 3 else ("good", next(cycle_good)))
    config = ServingConfig(model_name="tiny", max_batch=8, max_wait_ms=20)
    app = create_app(model, config)
    with ThreadServer(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=120)

        def send(entry):
            kind, index = entry
            if kind == "good":
                messages, extra, *_ = good[index]
                reply = client.chat.completions.create(model="tiny", messages=messages, extra_body=extra)
                return reply.choices[0].message.model_extra
            body, _ = bad[index]
            return httpx.post(f"{base}/v1/chat/completions", json={"model": "tiny", **body}, timeout=120)

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(send, plan))
        layout = reference.processor.tokenizer.layout
        for (kind, index), result in zip(plan, results):
            if kind == "good":
                _, _, expected, task, row = good[index]
                assert same_answer(task, result, expected, row, layout), (task.name, result, expected)
            else:
                assert result.status_code == bad[index][1], result.text
                assert result.json()["error"]["type"] == "invalid_request_error"
        assert httpx.get(f"{base}/health").json()["status"] == "ok"
        assert client.chat.completions.create(model="tiny", messages=good[0][0], extra_body=good[0][1])
    batches = app.state.engine.metrics.batch_size
    sizes = {key: batches._values[key] for key in batches._values}
    adapters = {key[1] for key in sizes}
    assert adapters == {"describe", "ask", "locate"}  # one queue per (task, adapter)
    rows = sum(total for _, total in sizes.values())
    calls = sum(sum(counts) for counts, _ in sizes.values())
    assert rows == 56 + 1 and calls < rows  # batches formed: fewer model calls than rows


def test_timeout_gets_504_and_the_server_goes_on(served):
    from unified.serving import ServingConfig
    from unified.serving.app import create_app

    _, media, model, reference = served
    messages, extra, *_ = _requests(reference, media)[0]
    # the first request of a batch waits 2 s for company, past the 0.3 s timeout
    app = create_app(model, ServingConfig(model_name="tiny", max_wait_ms=2000, timeout=0.3))
    with ThreadServer(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=60)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="tiny", messages=messages, extra_body=extra)
        assert caught.value.status_code == 504 and caught.value.body["code"] == "timeout"
        assert httpx.get(f"{base}/health").json()["status"] == "ok"

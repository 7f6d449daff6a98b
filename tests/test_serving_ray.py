"""Ray on one local node (2 CPUs): the server as a 2-replica Ray Serve deployment (requests reach both replicas,
answers unchanged) and `unified predict --ray` with 2 actors at fractional CPUs (the same predictions as without
Ray). Slow; skipped with the reason when Ray cannot start here."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serving_fixtures import chat_request, free_port, wait_healthy

ray = pytest.importorskip("ray", reason="Ray comes with the ray extra")
pytest.importorskip("ray.serve", reason="Ray Serve comes with the ray extra")
openai = pytest.importorskip("openai", reason="the official client comes with the dev extra")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as err:  # noqa: BLE001  (whatever stops Ray here is the skip reason)
        pytest.skip(f"Ray cannot start on this machine: {type(err).__name__}: {err}")
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from unified import Model
    from unified.data import load_data_dir
    from unified.data.synthetic import write_split

    root = tmp_path_factory.mktemp("ray")
    write_split(root / "data", 1, seed=3, split="test", progress=False)
    data, _ = load_data_dir(root / "data", None)
    return root, data, Model.default()


def test_serve_two_replicas(local_ray, world):
    from ray import serve

    from unified.serving import ServingConfig
    from unified.serving.ray import deployment
    from unified.task_zoo import build_tasks

    _, data, model = world
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(deployment(None, ServingConfig(model_name="shapes", max_wait_ms=5), replicas=2, num_cpus=0.5),
              name="unified", route_prefix="/")
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base, limit=120)
    requests = []
    for name in ("caption", "vqa", "grounding", "video_mcqa"):
        task = build_tasks([name], {name: model.task_options[name]}, model.processor.tokenizer.layout)[name]
        for row in data[name]:
            inputs = {k: v for k, v in task.inputs(row).items() if not k.startswith("_")}
            messages, extra = chat_request(task, inputs)
            requests.append((messages, extra, task.show(model.generate(task=name, **inputs))))

    def send(request):
        messages, extra, _ = request
        reply = httpx.post(f"{base}/v1/chat/completions", json={"model": "shapes", "messages": messages, **extra},
                           timeout=120)
        assert reply.status_code == 200, reply.text
        return reply.headers["x-unified-replica"], reply.json()["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, requests * 4))
    assert [a for _, a in answers] == [want for *_, want in requests * 4]
    assert len({replica for replica, _ in answers}) == 2  # both replicas answered
    serve.delete("unified")


def test_predict_with_ray_equals_without(local_ray, world):
    from unified.serving.predict import run_predict
    from unified.serving.ray import predict_shards

    root, _, _ = world
    plain = run_predict(None, root / "data", root / "plain.jsonl", workers=0, progress=False)
    spread = run_predict(None, root / "data", root / "ray.jsonl", spread=predict_shards, actors=2, actor_cpus=0.5,
                         batch_size=4, progress=False)
    assert plain["answered"] == spread["answered"] == plain["rows"] and plain["bad"] == 0
    lines = [(root / f).read_text().splitlines() for f in ("plain.jsonl", "ray.jsonl")]
    assert [json.loads(x)["_source"] for x in lines[0]] == [json.loads(x)["_source"] for x in lines[1]]
    for a, b in zip(*lines):
        a, b = json.loads(a), json.loads(b)
        assert a["answer"] == b["answer"] or a["answer"]["type"] in ("box", "span", "numbers", "embedding")
        assert a["text"] == b["text"] or a["answer"]["type"] == "embedding"

"""Scaling out on Ray: the same server as a Ray Serve deployment, and `unified predict` over Ray Data.

    unified serve MODEL --ray --replicas N
        Ray Serve runs N replicas of the FastAPI app (`unified.serving.app`), each with its own model, engine and
        dynamic batching; Serve's proxy spreads requests over them (one replica per GPU when there are GPUs).
    unified predict MODEL --data DIR --out predictions.jsonl --ray --actors N
        the rows go into a Ray Dataset; `map_batches` runs one model per actor (N actors); each block's lines are
        written as JSON shards, then merged into the predictions file in corpus order.

Ray is the `ray` extra (`pip install unified[ray]`); on one machine it starts a local Ray
(`ray.init(num_cpus=...)`), or joins the cluster `RAY_ADDRESS` names.

    >>> serve_with_ray("runs/shapes/best", ServingConfig(model_name="shapes"), replicas=2, num_cpus=0.5)
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve

from unified.api import DEFAULT_MODEL_DIR, Model
from unified.serving.app import install_routes, use_engine
from unified.serving.engine import Engine, ServingConfig
from unified.serving.predict import Prepared, answer_lines
from unified.task_zoo import build_tasks


def start_ray(num_cpus: float | None = None) -> None:
    """Join the running Ray (or `RAY_ADDRESS`'s cluster), else start a local one."""
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)


def deployment(model_path: str | Path | None, config: ServingConfig, *, replicas: int = 1, num_cpus: float = 1.0,
               num_gpus: float | None = None):
    """A bound Ray Serve application: `replicas` copies of the app, each loading the model in its own process."""
    import torch

    if num_gpus is None:
        num_gpus = 1.0 if torch.cuda.is_available() else 0.0
    app = FastAPI(title=f"unified: {config.model_name}")
    install_routes(app)
    path = str(model_path) if model_path is not None else None

    @serve.deployment(num_replicas=replicas, ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
                      max_ongoing_requests=max(64, 4 * config.max_batch))
    @serve.ingress(app)
    class UnifiedServer:
        def __init__(self, model_path: str | None, settings: dict[str, Any]):
            device = "cuda" if torch.cuda.is_available() else None
            model = Model.from_pretrained(model_path, device=device) if model_path else Model.default()
            # each replica names itself (process id) in `x-unified-replica`
            self.engine = Engine(model, ServingConfig(**{**settings, "replica": ServingConfig().replica}))
            use_engine(self.engine)

    settings = {k: v for k, v in vars(config).items() if k != "replica"}
    return UnifiedServer.bind(path, settings)


def serve_with_ray(model_path: str | Path | None, config: ServingConfig, *, host: str = "127.0.0.1",
                   port: int = 8000, replicas: int = 1, num_cpus: float = 1.0, num_gpus: float | None = None,
                   block: bool = True) -> int:
    """Run the deployment behind Serve's HTTP proxy on host:port; with `block`, until interrupted."""
    start_ray()
    serve.start(http_options={"host": host, "port": port})
    serve.run(deployment(model_path, config, replicas=replicas, num_cpus=num_cpus, num_gpus=num_gpus),
              name="unified", route_prefix="/")
    if block:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return 0


class _ShardPredictor:
    """One model per Ray Data actor: a block of rows (JSON text, with their task) -> JSON lines."""

    def __init__(self, model_path: str, task_options: Mapping[str, Any]):
        self.model = Model.from_pretrained(model_path)
        self.options = dict(task_options)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list]:
        rows = [json.loads(r) for r in batch["row"]]
        out: dict[str, list] = {"order": [], "line": []}
        for name in dict.fromkeys(batch["task"]):
            picked = [(int(o), r) for o, t, r in zip(batch["order"], batch["task"], rows) if t == name]
            task = build_tasks([name], {name: self.options.get(name, {})}, self.model.processor.tokenizer.layout)[name]
            prepared = Prepared(task, [r for _, r in picked], self.model.processor)
            lines = answer_lines(task, self.model, [prepared[i] for i in range(len(picked))],
                                 [r["_source"] for _, r in picked])
            out["order"] += [o for o, _ in picked]
            out["line"] += [json.dumps(line) for line in lines]
        return out


def predict_shards(model_dir: str | Path, todo: Sequence[tuple[str, list[dict]]], task_options: Mapping[str, Any], *,
                   actors: int = 2, actor_cpus: float = 1.0, batch_size: int = 16) -> Iterator[list[dict]]:
    """`todo` ({task: rows}) answered by `actors` Ray Data actors; shards merged in corpus order, yielded as one
    list of lines."""
    items = [{"order": i, "task": name, "row": json.dumps(row)}
             for i, (name, row) in enumerate((name, row) for name, rows in todo for row in rows)]
    if not items:
        return
    start_ray()
    dataset = ray.data.from_items(items).map_batches(
        _ShardPredictor, fn_constructor_args=(str(model_dir or DEFAULT_MODEL_DIR), dict(task_options)),
        concurrency=actors, num_cpus=actor_cpus, batch_size=batch_size, batch_format="numpy")
    with tempfile.TemporaryDirectory(prefix="unified-predict-") as shards:
        dataset.write_json(shards)
        merged = []
        for shard in sorted(Path(shards).glob("*.json*")):
            for text in shard.read_text().splitlines():
                if text.strip():
                    record = json.loads(text)
                    merged.append((int(record["order"]), json.loads(record["line"])))
    yield [line for _, line in sorted(merged, key=lambda pair: pair[0])]

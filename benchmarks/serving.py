"""The server's throughput with dynamic batching against `--max-batch 1`, measured in one process, one run.

    .venv/bin/python benchmarks/serving.py                    # the built-in default model, vqa on a clip
    .venv/bin/python benchmarks/serving.py --requests 48 --task caption
    .venv/bin/python benchmarks/serving.py --tiny-backbone    # a tiny random T5 + SigLIP through lora-t5.yaml

For each of 1, 4 and 16 concurrent clients (threads, one HTTP connection pool each), the same requests (a synthetic
clip as a data: URL, its question) go to a server on 127.0.0.1 started with `--max-batch 16` and one with
`--max-batch 1`; requests/s and p50 / p95 latency are printed, and the ratio of requests/s. Both servers run in
this process (uvicorn in a thread) on the same loaded model, one after the other; the clients run in their own
process, so their HTTP work does not share the server's interpreter.

`--tiny-backbone` serves a pretrained-backbone model instead: the tests' tiny random T5 and SigLIP
(`tests/test_backbone_training.py`) through `training/configs/lora-t5.yaml` for a few steps (vqa only); its
untrained answers are capped at `--max-tokens`.
"""

from __future__ import annotations

import argparse
import base64
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
import uvicorn

from unified import Model
from unified.data import load_data_dir
from unified.data.synthetic import write_split
from unified.serving import ServingConfig
from unified.serving.app import create_app


def _serve(app) -> tuple[uvicorn.Server, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return server, base
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def _tiny_backbone_model(tmp: Path) -> Model:
    """A servable model on a tiny random pretrained-format T5 and SigLIP, after a few steps of lora-t5.yaml."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_backbone_training import tiny_backbone, tiny_vision_tower

    from unified.training import load_config, train

    path, vision = tiny_backbone(tmp / "backbones", "t5"), tiny_vision_tower(tmp / "siglip")
    config = Path(__file__).resolve().parents[1] / "training" / "configs" / "lora-t5.yaml"
    train(load_config(config, [
        f"output_dir={tmp / 'run'}", f"model.text.pretrained_path={path}", f"model.vision.pretrained_path={vision}",
        "processor.image_size=64", "data.synthetic={n_train: 16, n_eval: 0, seed: 6}", "data.tasks=[vqa]",
        "optim.max_steps=5", "optim.warmup_steps=1", "optim.batch_size=4", "eval.every=0",
        "checkpoint.every=1000", "log_with=none"]), progress=False)
    return Model.from_pretrained(tmp / "run" / "final")


def _bodies(task: str, rows: list[dict]) -> list[dict]:
    bodies = []
    for row in rows:
        video = "data:video/mp4;base64," + base64.b64encode(Path(row["video"]).read_bytes()).decode()
        content = [{"type": "video_url", "video_url": {"url": video}}]
        if row.get("question"):
            content.insert(0, {"type": "text", "text": row["question"]})
        bodies.append({"model": "bench", "task": task, "messages": [{"role": "user", "content": content}]})
    return bodies


def _clients(base: str, bodies: list[dict], clients: int, requests: int) -> tuple[float, list[float]]:
    """(seconds, latencies) of `requests` requests from `clients` threads (run in the client process)."""
    latencies: list[float] = []

    def one(i: int) -> None:
        started = time.perf_counter()
        reply = httpx.post(f"{base}/v1/chat/completions", json=bodies[i % len(bodies)], timeout=300)
        reply.raise_for_status()
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(requests)))
    return time.perf_counter() - started, latencies


def _run(pool: ProcessPoolExecutor, base: str, bodies: list[dict], clients: int, requests: int
         ) -> dict[str, float]:
    seconds, latencies = pool.submit(_clients, base, bodies, clients, requests).result()
    ordered = sorted(latencies)
    return {"rps": requests / seconds, "p50": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="vqa")
    parser.add_argument("--requests", type=int, default=48, help="requests per level (at least 4 per client)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tiny-backbone", action="store_true", help="a tiny pretrained-backbone model (vqa)")
    parser.add_argument("--max-tokens", type=int, default=None, help="max_tokens of every request")
    args = parser.parse_args()
    with TemporaryDirectory() as tmp, ProcessPoolExecutor(1) as clients_process:
        model = _tiny_backbone_model(Path(tmp)) if args.tiny_backbone else Model.default()
        write_split(Path(tmp) / "data", 4, seed=11, split="test", progress=False)
        data, _ = load_data_dir(Path(tmp) / "data", [args.task])
        bodies = _bodies(args.task, [r for r in data[args.task] if r.get("video")])
        if args.max_tokens is not None:
            bodies = [{**body, "max_tokens": args.max_tokens} for body in bodies]
        results = {}
        for max_batch in (16, 1):
            server, base = _serve(create_app(model, ServingConfig(model_name="bench", max_batch=max_batch,
                                                                  max_wait_ms=10)))
            _run(clients_process, base, bodies, 4, 8)  # warm-up
            for clients in args.clients:
                results[max_batch, clients] = _run(clients_process, base, bodies, clients,
                                                   max(args.requests, 4 * clients))
            server.should_exit = True
            time.sleep(0.5)
    described = "tiny pretrained-backbone model (T5 + SigLIP, lora-t5)" if args.tiny_backbone else "default model"
    print(f"task {args.task}, {described}, {max(args.requests, 4)}+ requests per level")
    print("| clients | batched req/s | p50 / p95 s | --max-batch 1 req/s | p50 / p95 s | ratio |")
    print("|---|---|---|---|---|---|")
    for clients in args.clients:
        b, one = results[16, clients], results[1, clients]
        print(f"| {clients} | {b['rps']:.1f} | {b['p50']:.3f} / {b['p95']:.3f} | {one['rps']:.1f} | "
              f"{one['p50']:.3f} / {one['p95']:.3f} | {b['rps'] / one['rps']:.2f}x |")


if __name__ == "__main__":
    main()

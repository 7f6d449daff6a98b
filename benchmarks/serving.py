"""The server's throughput with dynamic batching against `--max-batch 1`, measured in one process, one run.

    .venv/bin/python benchmarks/serving.py                    # the built-in default model, vqa on a clip
    .venv/bin/python benchmarks/serving.py --requests 48 --task caption

For each of 1, 4 and 16 concurrent clients (threads, one HTTP connection pool each), the same requests (a synthetic
clip as a data: URL, its question) go to a server on 127.0.0.1 started with `--max-batch 16` and one with
`--max-batch 1`; requests/s and p50 / p95 latency are printed, and the ratio of requests/s. Both servers run in
this process (uvicorn in a thread) on the same loaded model, one after the other.
"""

from __future__ import annotations

import argparse
import base64
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
import uvicorn

from unified import Model
from unified.data import load_data_dir
from unified.data.synthetic import write_split
from unified.serving import ServingConfig, create_app


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


def _bodies(task: str, rows: list[dict]) -> list[dict]:
    bodies = []
    for row in rows:
        video = "data:video/mp4;base64," + base64.b64encode(Path(row["video"]).read_bytes()).decode()
        content = [{"type": "video_url", "video_url": {"url": video}}]
        if row.get("question"):
            content.insert(0, {"type": "text", "text": row["question"]})
        bodies.append({"model": "bench", "task": task, "messages": [{"role": "user", "content": content}]})
    return bodies


def _run(base: str, bodies: list[dict], clients: int, requests: int) -> dict[str, float]:
    latencies: list[float] = []

    def one(i: int) -> None:
        started = time.perf_counter()
        reply = httpx.post(f"{base}/v1/chat/completions", json=bodies[i % len(bodies)], timeout=300)
        reply.raise_for_status()
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(requests)))
    seconds = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"rps": requests / seconds, "p50": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="vqa")
    parser.add_argument("--requests", type=int, default=48, help="requests per level (at least 4 per client)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    model = Model.default()
    with TemporaryDirectory() as tmp:
        write_split(tmp, 4, seed=11, split="test", progress=False)
        data, _ = load_data_dir(tmp, [args.task])
        bodies = _bodies(args.task, [r for r in data[args.task] if r.get("video")])
        results = {}
        for max_batch in (16, 1):
            server, base = _serve(create_app(model, ServingConfig(model_name="bench", max_batch=max_batch,
                                                                  max_wait_ms=10)))
            _run(base, bodies, 4, 8)  # warm-up
            for clients in args.clients:
                results[max_batch, clients] = _run(base, bodies, clients, max(args.requests, 4 * clients))
            server.should_exit = True
            time.sleep(0.5)
    print(f"task {args.task}, default model, {max(args.requests, 4)}+ requests per level")
    print("| clients | batched req/s | p50 / p95 s | --max-batch 1 req/s | p50 / p95 s | ratio |")
    print("|---|---|---|---|---|---|")
    for clients in args.clients:
        b, one = results[16, clients], results[1, clients]
        print(f"| {clients} | {b['rps']:.1f} | {b['p50']:.3f} / {b['p95']:.3f} | {one['rps']:.1f} | "
              f"{one['p50']:.3f} / {one['p95']:.3f} | {b['rps'] / one['rps']:.2f}x |")


if __name__ == "__main__":
    main()

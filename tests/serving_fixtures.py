"""Helpers for the serving tests: a real server on 127.0.0.1 (a `unified serve` subprocess, or uvicorn in a thread
of the test process), media as the official client sends them, and answers compared as the server promises."""

from __future__ import annotations

import base64
import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

PART = {"image": "image_url", "video": "video_url", "audio": "audio_url"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen | None = None, log: Path | None = None,
                 limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-3000:] if log else ''}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {base} not healthy after {limit} s: {log.read_text()[-3000:] if log else ''}")


def start_cli_server(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """`unified serve ARGS --port P` in a subprocess; returns (process, base URL) once /health answers."""
    port = free_port()
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "unified.cli", "serve", *args, "--port", str(port)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, log)
    except Exception:
        proc.kill()
        raise
    return proc, base


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class ThreadServer:
    """uvicorn serving `app` in a thread of this process on a free port (`with ThreadServer(app) as base:`)."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        base = f"http://127.0.0.1:{self.port}"
        wait_healthy(base)
        return base

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def data_url(path: str | Path) -> str:
    return "data:application/octet-stream;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def chat_request(task, inputs: dict, *, inline: bool = True, root: Path | None = None) -> tuple[list, dict]:
    """(messages, extra_body) for `inputs` (what `Model.generate` takes): media as data: URLs (`inline`) or as
    paths relative to `root`, the task's message field as the text part, its other fields beside the messages."""
    content, fields = [], {"task": task.name}
    for key, value in inputs.items():
        if key in PART:
            url = data_url(value) if inline else str(Path(value).relative_to(root))
            content.append({"type": PART[key], PART[key]: {"url": url}})
        elif key == task.message_field:
            content.insert(0, {"type": "text", "text": value})
        elif not key.startswith("_"):
            fields[key] = value
    return [{"role": "user", "content": content}], fields


def steps(task, row: dict, layout) -> float:
    """One quantisation step of a typed answer: a box's pixels per location bin, a span's seconds per time bin."""
    if task.grammar == "loc":
        return max(row["image_size"]) / layout.num_loc_bins
    if task.grammar == "time":
        return row["duration"] / layout.num_time_bins
    return 0.0


def same_answer(task, served: dict, expected, row: dict, layout) -> bool:
    """The server's typed answer against `Model.generate`'s: exact for text and options, within one step of the
    tokens' quantisation for boxes and spans (padding in a batch may move the last bits of a logit)."""
    value = served["answer"]["value"]
    if task.grammar in ("loc", "time"):
        want = list(expected)
        tol = steps(task, row, layout) * (1 + 1e-6)
        return len(value) == len(want) and all(math.isclose(a, b, abs_tol=tol) for a, b in zip(value, want))
    if task.grammar == "val":
        return len(value) == len(expected) and all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
                                                   for a, b in zip(value, expected))
    return value == expected

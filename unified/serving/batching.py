"""Dynamic batching: requests that share a key ((task, adapter, kind)) wait together for at most `max_wait_ms`
after the first arrives, or until `max_batch` are there, and are answered by one call of `run(key, payloads)`.

    request -> submit(key, payload) --queue per key--> worker: collect <= max_batch within max_wait_ms
            -> run(key, payloads) on the model's one thread (one batch at a time) -> each request's future

While a batch runs, the next requests gather in their queue, so under load batches fill by themselves; alone, a
request waits at most `max_wait_ms`. A request whose caller gave up (a timeout) before its batch started is left
out of it. `run` returns one result per payload, an exception instance failing only its own request.

    >>> batcher = Batcher(run, max_batch=8, max_wait_ms=5, executor=ThreadPoolExecutor(1))
    >>> answer = await batcher.submit(("vqa", None, "answer"), payload)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from typing import Any

from unified.errors import ConfigError


class Batcher:
    """One queue and one worker per key; see the module docstring. `on_batch(key, size, seconds)` and
    `on_depth(key, depth)` report to metrics."""

    def __init__(self, run: Callable[[Hashable, list[Any]], Sequence[Any]], *, max_batch: int, max_wait_ms: float,
                 executor: Executor, on_batch: Callable[[Hashable, int, float], None] | None = None,
                 on_depth: Callable[[Hashable, int], None] | None = None):
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError("max_batch", max_batch, "expected a positive whole number of requests")
        if not max_wait_ms >= 0:
            raise ConfigError("max_wait_ms", max_wait_ms, "expected milliseconds >= 0")
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000.0
        self.executor, self.on_batch, self.on_depth = executor, on_batch, on_depth
        self._queues: dict[Hashable, deque] = {}
        self._arrived: dict[Hashable, asyncio.Event] = {}
        self._workers: dict[Hashable, asyncio.Task] = {}

    def depth(self) -> dict[Hashable, int]:
        """Requests waiting per key (not counting a batch being answered)."""
        return {key: len(queue) for key, queue in self._queues.items()}

    async def submit(self, key: Hashable, payload: Any) -> Any:
        """Queue `payload` under `key` and wait for its result (raises what `run` gave for it)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if key not in self._queues:
            self._queues[key], self._arrived[key] = deque(), asyncio.Event()
        self._queues[key].append((payload, future))
        self._arrived[key].set()
        self._report_depth(key)
        worker = self._workers.get(key)
        if worker is None or worker.done():
            self._workers[key] = loop.create_task(self._work(key), name=f"batcher {key}")
        return await future

    async def close(self) -> None:
        for worker in self._workers.values():
            worker.cancel()
        self._workers.clear()

    def _report_depth(self, key: Hashable) -> None:
        if self.on_depth is not None:
            self.on_depth(key, len(self._queues[key]))

    async def _collect(self, key: Hashable) -> list[tuple[Any, asyncio.Future]]:
        queue, arrived = self._queues[key], self._arrived[key]
        while not queue:
            arrived.clear()
            await arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        batch: list[tuple[Any, asyncio.Future]] = []
        while True:
            while queue and len(batch) < self.max_batch:
                payload, future = queue.popleft()
                if not future.done():  # a caller that timed out or went away is left out
                    batch.append((payload, future))
            remaining = deadline - loop.time()
            if len(batch) >= self.max_batch or remaining <= 0:
                break
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), remaining)
            except TimeoutError:
                pass
        self._report_depth(key)
        return batch

    async def _work(self, key: Hashable) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(key)
            if not batch:
                continue
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self.run, key, [p for p, _ in batch])
            except Exception as exc:  # noqa: BLE001  (the whole call failed: each request gets the error)
                results = [exc] * len(batch)
            if self.on_batch is not None:
                self.on_batch(key, len(batch), time.perf_counter() - started)
            for (_, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

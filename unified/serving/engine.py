"""The server's core, apart from HTTP: a loaded `Model`, its tasks, the decode threads, the batcher and the model's
one thread.

    request fields --decode pool (threads)--> row (chat mapper) -> task.complete -> checks -> processor item
                   --Batcher, key (task, adapter, kind)--> one `predict(..., items=...)` on the model thread
                   --> Answer(value, json, text, score, tokens) per request

Media are decoded and processed in the decode pool, never on the event loop, so a slow decode holds up only its
own request. A batch's rows are answered as `Model.generate` answers each alone (greedy; see `docs/serving.md` for
what padding may move). If a batched call fails, its rows are answered one by one, so one bad row fails alone.

    >>> engine = Engine(Model.from_pretrained("runs/shapes/best"), ServingConfig(model_name="shapes"))
    >>> answer = await engine.answer("vqa", row_builder)
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unified.api import check_fields
from unified.data.sources import MediaPolicy
from unified.errors import ConfigError, InputError
from unified.serving.batching import Batcher
from unified.serving.metrics import Metrics
from unified.serving.streaming import BatchStreamer
from unified.task_zoo import build_tasks, list_tasks
from unified.task_zoo.base import MODALITIES
from unified.task_zoo.decoding import encode_row, predict

log = logging.getLogger("unified.serving")
KINDS = ("answer", "embed_media", "embed_text")  # what a queued row asks for


@dataclass
class ServingConfig:
    """The server's settings (the `unified serve` flags)."""

    model_name: str = "unified"
    max_batch: int = 8  # rows per batched model call
    max_wait_ms: float = 10.0  # how long the first request of a batch waits for company
    timeout: float = 120.0  # seconds a request may take before it gets 504
    max_upload_mb: float = 25.0  # largest media item (bytes after base64) a request may carry
    media_root: str | None = None  # the only folder local paths may name (None: data: URLs only)
    api_key: str | None = None  # when set, /v1 requests need `Authorization: Bearer KEY`
    decode_workers: int = 4  # threads decoding media
    replica: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    def validate(self) -> ServingConfig:
        if self.timeout <= 0:
            raise ConfigError("timeout", self.timeout, "expected seconds > 0")
        if self.max_upload_mb <= 0:
            raise ConfigError("max_upload_mb", self.max_upload_mb, "expected megabytes > 0")
        if self.decode_workers < 1:
            raise ConfigError("decode_workers", self.decode_workers, "expected at least one thread")
        if self.media_root is not None and not Path(self.media_root).is_dir():
            raise ConfigError("media_root", self.media_root, "not a directory")
        return self

    @property
    def policy(self) -> MediaPolicy:
        root = Path(self.media_root) if self.media_root is not None else None
        return MediaPolicy(root, int(self.max_upload_mb * 2**20))


@dataclass
class Pending:
    """One request's row as it waits for its batch."""

    row: dict[str, Any]
    item: dict[str, Any]
    max_tokens: int | None = None
    on_text: Callable[[str], None] | None = None  # streaming: called (from the model thread) with new text


@dataclass
class Answer:
    value: Any  # what `Model.generate` returns
    json: dict[str, Any]  # `Task.answer_json`
    text: str  # `Task.show`
    score: float | None
    prompt_tokens: int
    answer_tokens: int
    stopped: bool  # False when a free answer reached max_tokens


class Engine:
    """See the module docstring. `tasks`: the model's trained tasks (all registered tasks for a model saved
    without its task list)."""

    def __init__(self, model: Any, config: ServingConfig):
        self.model, self.config = model, config.validate()
        self.policy = config.policy
        names = list(model.task_options) or list_tasks()
        self.tasks = build_tasks(names, model.task_options, model.processor.tokenizer.layout)
        self.metrics = Metrics()
        self.decode_pool = ThreadPoolExecutor(config.decode_workers, thread_name_prefix="unified-decode")
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="unified-model")  # one batch at a time
        self.batcher = Batcher(self._run, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
                               executor=self.model_thread, on_batch=self._on_batch, on_depth=self._on_depth)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ what the model offers
    def task(self, name: Any) -> Any:
        if name is None:
            raise InputError("task", None, f"required: name one of this model's tasks {sorted(self.tasks)} (the "
                             "extension field `task`, in the official client's extra_body)")
        if name not in self.tasks:
            raise InputError("task", name, f"not a task of this model; it serves {sorted(self.tasks)}")
        return self.tasks[name]

    def adapter(self, task: str) -> str | None:
        adapters = getattr(self.model.network, "task_adapters", None)
        return adapters.adapter_for(task) if adapters is not None else None

    def adapters(self) -> dict[str, Any] | None:
        adapters = getattr(self.model.network, "task_adapters", None)
        if adapters is None:
            return None
        return {"names": list(adapters.names), "by_task": {t: self.adapter(t) for t in self.tasks}}

    def embedding_task(self, name: Any) -> Any:
        if name is None:
            embedding = [n for n, t in self.tasks.items() if t.answer_mode == "embed"]
            if len(embedding) != 1:
                raise InputError("task", None, f"required: this model's embedding tasks are {embedding}")
            name = embedding[0]
        task = self.task(name)
        if task.answer_mode != "embed":
            raise InputError("task", name, "does not answer with embeddings; use /v1/chat/completions")
        return task

    # ------------------------------------------------------------------ answering
    def prepare(self, task: Any, build: Callable[[], dict[str, Any]], *, text_side: bool = False
                ) -> tuple[dict[str, Any], dict[str, Any]]:
        """`prepare_row` on `build()`'s fields; runs in the decode pool (media are read and decoded here)."""
        return prepare_row(task, build(), self.model.processor, text_side=text_side)

    async def answer(self, task: Any, build: Callable[[], dict[str, Any]], *, kind: str = "answer",
                     max_tokens: int | None = None, on_text: Callable[[str], None] | None = None) -> Answer:
        """Build the row in the decode pool, then wait for its batch."""
        loop = asyncio.get_running_loop()
        row, item = await loop.run_in_executor(self.decode_pool, lambda: self.prepare(
            task, build, text_side=kind == "embed_text"))
        if max_tokens is not None and task.grammar != "text":
            length = task.answer_length(row)
            if length is not None and task.grammar in ("loc", "time", "val") and max_tokens < length:
                raise InputError("max_tokens", max_tokens, f"task {task.name!r} answers in exactly {length} tokens")
        key = (task.name, self.adapter(task.name), kind)
        return await self.batcher.submit(key, Pending(row, item, max_tokens, on_text))

    def _run(self, key: tuple, pending: list[Pending]) -> list[Any]:
        """One batched call on the model thread; a failing batch is answered row by row."""
        task = self.tasks[key[0]]
        try:
            return self._predict(task, pending)
        except Exception:
            if len(pending) == 1:
                raise
            log.exception("batch of %d %s rows failed; answering them one by one", len(pending), task.name)
        results: list[Any] = []
        for one in pending:
            try:
                results += self._predict(task, [one])
            except Exception as exc:  # noqa: BLE001  (this row's own error, for its own request)
                results.append(exc)
        return results

    def _predict(self, task: Any, pending: list[Pending]) -> list[Answer]:
        rows, items = [p.row for p in pending], [p.item for p in pending]
        details: list = []
        streamer = None
        if any(p.on_text for p in pending):
            sinks = [p.on_text for p in pending]
            tokenizer = self.model.processor.tokenizer
            def streamer(chunk):
                return BatchStreamer(tokenizer, [sinks[i] for i in chunk])
        limits = [p.max_tokens for p in pending]
        kwargs: dict[str, Any] = {"items": items, "details": details, "batch_size": len(rows)}
        if task.answer_mode == "generate":
            kwargs.update(max_new_tokens=limits, streamer=streamer)
        values = predict(task, self.model.network, self.model.processor, rows, **kwargs)
        out = []
        for value, row, item, d in zip(values, rows, items, details):
            out.append(Answer(value, task.answer_json(value, row), task.show(value), d["score"],
                              len(item["input_ids"]), d["answer_tokens"], d["stopped"]))
        return out

    def _on_batch(self, key: tuple, size: int, seconds: float) -> None:
        labels = {"task": key[0], "adapter": key[1] or "-"}
        self.metrics.batch_size.observe(size, **labels)
        self.metrics.batch_seconds.observe(seconds, **labels)

    def _on_depth(self, key: tuple, depth: int) -> None:
        self.metrics.queue_depth.set(depth, task=key[0], adapter=key[1] or "-")

    def describe(self) -> dict[str, Any]:
        """What `GET /v1/models` says about the model beside its name."""
        tasks = []
        for name, task in sorted(self.tasks.items()):
            d = task.describe()
            tasks.append({"name": name, "accepts": d["accepts"], "requires": d["requires"], "answer": d["answer"],
                          "answer_type": task.answer_json(None, {})["type"], "message_field": task.message_field,
                          "fields": sorted(task.input_fields - set(task.derived_fields)),
                          "derived_fields": d["derived_fields"]})
        return {"tasks": tasks, "adapters": self.adapters()}

    def close(self) -> None:
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.model_thread.shutdown(wait=False, cancel_futures=True)


def prepare_row(task: Any, fields: Mapping[str, Any], processor: Any, *, text_side: bool = False
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(row, processor item) for one input's fields, checked as `Model.generate` checks its keyword arguments
    (unknown fields, media the task does not take), completed (a frame size, a duration) and encoded."""
    given = {k: v for k, v in fields.items() if v is not None}
    check_fields(task, given)
    if not text_side:
        task.media_of({m: given[m] for m in MODALITIES if m in given})
    row = task.complete(given, processor)
    task.check_row(row, with_target=False)
    return row, encode_row(task, row, processor, text_side=text_side)


def fields_without(body: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
    """The request's extension fields: everything but the OpenAI fields the route reads."""
    return {k: v for k, v in body.items() if k not in known}

"""`unified predict`: every row of a corpus answered into one JSONL file, resumable.

    --data DIR (one file per task, as `unified eval` reads it) | FILE --task NAME
      -> rows (media paths resolved, targets ignored) -> DataLoader workers: fields -> row -> processor item
      -> batched `predict(..., items=...)` -> one line per row, in corpus order:
         {"_source": "vqa.jsonl:3", "task": "vqa", "answer": {"type", "value", ...}, "text": "red", "score": -0.02}
         {"_source": "vqa.jsonl:4", "task": "vqa", "error": "video=...: missing file ..."}

Lines are flushed and synced after every batch, so a killed run loses nothing it wrote; a rerun reads the file,
drops a torn last line, and skips every row whose `_source` is already there (answered or bad; delete a line to
redo its row). Bad rows are written with their reason and counted, and stop the run only with `strict`.
`spread` answers the rows elsewhere instead of in this process: `unified.serving.ray.predict_shards` (what
`unified predict --ray` passes) spreads them over a Ray cluster (Ray Data, one model per actor); its shards are
merged into the same file in corpus order.

    >>> run_predict("runs/shapes/best", "data/test", "predictions.jsonl")
    {"rows": 120, "answered": 118, "bad": 2, "already_done": 0, "out": "predictions.jsonl"}
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from unified.api import DEFAULT_MODEL_DIR, Model
from unified.data.files import SUFFIXES, read_rows
from unified.errors import InputError
from unified.serving.engine import prepare_row
from unified.task_zoo import build_tasks, list_tasks
from unified.task_zoo.decoding import predict


def corpus(data: str | Path, task: str | None, trained: Sequence[str]) -> list[tuple[str, list[dict], list]]:
    """[(task, rows, bad rows)] of a data directory (files named after the model's tasks) or of one file."""
    path = Path(data)
    if path.is_dir():
        if task is not None:
            raise InputError("--task", task, "only for a single file; a directory's files are named after tasks")
        files = {p.stem: p for p in sorted(path.iterdir()) if p.suffix in SUFFIXES and p.stem in trained}
        if not files:
            raise InputError("--data", str(data), f"holds no file named after a task of this model {sorted(trained)}")
    elif path.is_file():
        if task is None:
            raise InputError("--task", None, "required with a single file: which task its rows are for")
        if task not in trained:
            raise InputError("--task", task, f"not a task of this model; it has {sorted(trained)}")
        files = {task: path}
    else:
        raise InputError("--data", str(data), "no such file or directory")
    out = []
    for name, file in files.items():
        rows, report = read_rows(file, None, skip_bad_rows=True)  # media resolved; bad paths reported
        out.append((name, rows, report.skipped))
    return out


class Prepared(Dataset):
    """Rows of one task -> (index, row, item, error) in DataLoader workers (media decoded there, ahead)."""

    def __init__(self, task: Any, rows: Sequence[dict], processor: Any):
        self.task, self.rows, self.processor = task, rows, processor

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[int, dict | None, dict | None, str | None]:
        try:
            row, item = prepare_row(self.task, self.task.inputs(self.rows[index]), self.processor)
        except InputError as err:
            return index, None, None, str(err)
        return index, row, item, None


def _unbatched(batch: list) -> list:
    return batch


def answer_lines(task: Any, model: Any, prepared: list[tuple[int, Any, Any, str | None]],
                 sources: Sequence[str]) -> list[dict[str, Any]]:
    """JSON lines for prepared rows of one task (bad ones with their error), in the order given."""
    good = [p for p in prepared if p[3] is None]
    answers: dict[int, dict[str, Any]] = {}
    if good:
        details: list = []
        values = predict(task, model.network, model.processor, [p[1] for p in good], items=[p[2] for p in good],
                         details=details, batch_size=len(good))
        for (index, row, _, _), value, d in zip(good, values, details):
            answers[index] = {"answer": task.answer_json(value, row), "text": task.show(value), "score": d["score"]}
    lines = []
    for index, _, _, error in prepared:
        body = answers[index] if error is None else {"error": error}
        lines.append({"_source": sources[index], "task": task.name, **body})
    return lines


class Output:
    """The predictions file: what it already holds (a torn last line dropped) and appends synced per batch."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.done: set[str] = set()
        if self.path.exists():
            raw = self.path.read_bytes()
            keep = raw[: raw.rfind(b"\n") + 1]  # a line without its newline was cut by a kill
            for line in keep.decode().splitlines():
                self.done.add(json.loads(line)["_source"])
            if len(keep) != len(raw):
                with self.path.open("r+b") as f:
                    f.truncate(len(keep))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.path.open("a")

    def write(self, lines: list[dict[str, Any]]) -> None:
        for line in lines:
            self.file.write(json.dumps(line) + "\n")
            self.done.add(line["_source"])
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def run_predict(model_path: str | Path | None, data: str | Path, out: str | Path, *, task: str | None = None,
                strict: bool = False, batch_size: int = 16, workers: int = 2, spread: Callable | None = None,
                actors: int = 2, actor_cpus: float = 1.0, progress: bool = True) -> dict[str, Any]:
    """Answer every row of `data` into `out` (see the module docstring); returns the counts."""
    model_dir = Path(model_path) if model_path is not None else DEFAULT_MODEL_DIR
    model = Model.from_pretrained(model_dir) if model_path is not None else Model.default()
    trained = list(model.task_options) or list_tasks()  # a model saved without its task list: every task
    parts = corpus(data, task, trained)
    output = Output(out)
    already = len(output.done)
    counts = {"rows": 0, "answered": 0, "bad": 0}
    todo: list[tuple[str, list[dict]]] = []
    for name, rows, skipped in parts:
        counts["rows"] += len(rows) + len(skipped)
        bad = [{"_source": b.source, "task": name, "error": b.reason} for b in skipped if b.source not in output.done]
        if bad and strict:
            raise InputError(bad[0]["_source"], name, bad[0]["error"])
        output.write(bad)
        todo.append((name, [r for r in rows if r["_source"] not in output.done]))
    try:
        if spread is not None:
            for lines in spread(model_dir, todo, model.task_options, actors=actors, actor_cpus=actor_cpus,
                                batch_size=batch_size):
                _check_strict(lines, strict)
                output.write(lines)
        else:
            for lines in _predict_local(model, todo, batch_size, workers, progress):
                _check_strict(lines, strict)
                output.write(lines)
    finally:
        output.close()
    for line in _read(output.path):
        key = "bad" if "error" in line else "answered"
        counts[key] += 1
    return {**counts, "already_done": already, "out": str(output.path)}


def _check_strict(lines: list[dict[str, Any]], strict: bool) -> None:
    bad = next((line for line in lines if "error" in line), None)
    if strict and bad is not None:
        raise InputError(bad["_source"], bad["task"], f"{bad['error']} (--strict stops at the first bad row)")


def _predict_local(model: Model, todo: list[tuple[str, list[dict]]], batch_size: int, workers: int,
                   progress: bool) -> Iterator[list[dict[str, Any]]]:
    from tqdm import tqdm

    tasks = build_tasks([name for name, _ in todo], {n: model.task_options.get(n, {}) for n, _ in todo},
                        model.processor.tokenizer.layout)
    bar = tqdm(total=sum(len(rows) for _, rows in todo), disable=not progress, unit="row", desc="predict")
    for name, rows in todo:
        if not rows:
            continue
        loader = DataLoader(Prepared(tasks[name], rows, model.processor), batch_size=batch_size,
                            num_workers=workers, collate_fn=_unbatched)
        sources = [row["_source"] for row in rows]
        for prepared in loader:
            yield answer_lines(tasks[name], model, prepared, sources)
            bar.update(len(prepared))
    bar.close()


def _read(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as f:
        for line in f:
            yield json.loads(line)

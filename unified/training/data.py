"""Training data: rows per task (from files or the synthetic world), a vocabulary trained on them, and a row stream
whose position is part of the checkpoint.

`RowStream` walks each task's rows in a seeded permutation per epoch; step s of a run with W processes takes
`batch_size * W` consecutive rows and rank r keeps every W-th, so ranks see different rows and a resumed run continues
exactly where it stopped. With `data.length_buckets` the permutation is arranged so a step's rows have similar text
lengths (less padding), still one permutation per epoch.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from unified.data import RowReport, load_data_dir
from unified.data.check import check_media, drop_rows
from unified.data.conversations import read_conversations
from unified.data.shards import ShardedRows
from unified.data.synthetic import write_split
from unified.errors import ConfigError, InputError, MediaDecodeError


def _synthetic(out: Path, n: int, seed: int, split: str, log) -> Path:
    """The synthetic split under `out`, written once for these settings; rewritten when they differ (another
    n, seed or split must never train on the clips of the earlier one)."""
    done, wanted = out / ".complete", f"{n} {seed} {split}\n"
    if done.is_file() and done.read_text() == wanted:
        return out
    if out.exists():
        earlier = done.read_text().strip() if done.is_file() else "an unfinished write"
        log(f"{out} holds synthetic clips of other settings ({earlier}); writing {n} {split} clips of seed {seed} "
            "instead")
        shutil.rmtree(out)
    else:
        log(f"writing {n} synthetic {split} clips to {out}")
    write_split(out, n, seed=seed, split=split, progress=True)
    done.write_text(wanted)
    return out


def load_training_data(cfg: Any, log=print) -> tuple[dict[str, list], dict[str, list]]:
    """({task: train rows}, {task: eval rows}) as the config's data section says."""
    d = cfg.data
    train_dir, eval_dir = d.train_dir, d.eval_dir
    if train_dir is None and d.synthetic is not None:
        root = Path(cfg.output_dir) / "data"
        s = d.synthetic
        train_dir = _synthetic(root / "train", s.n_train, s.seed, "train", log)
        if eval_dir is None and s.n_eval > 0:
            eval_dir = _synthetic(root / "test", s.n_eval, s.seed, "test", log)
    train, reports = _read(train_dir, cfg)
    evaluation = {}
    if eval_dir is not None:
        evaluation, more = _read(eval_dir, cfg)
        reports += more
    for report in reports:
        if report.skipped:
            log(f"skipped rows: {report.summary()}")
    if d.check_media:
        train = _media_checked(train, _folder(train_dir), d.skip_bad_rows, log)
        if evaluation:
            evaluation = _media_checked(evaluation, _folder(eval_dir), d.skip_bad_rows, log)
    if d.validation_split:
        train, evaluation = hold_out(train, d.validation_split, cfg.seed, log)
    return train, evaluation


def _read(source: Any, cfg: Any) -> tuple[dict[str, list], list[RowReport]]:
    """A data directory, or with `data.format` a conversation file (`read_conversations`: inline media are written
    under `output_dir/data/media`); a left-out record stops the run unless `data.skip_bad_rows`."""
    d, options = cfg.data, cfg.task_options  # rows are checked by the tasks as configured (labels, modes)
    if d.format == "tasks":
        return load_data_dir(source, d.tasks, skip_bad_rows=d.skip_bad_rows, task_options=options,
                             allow_outside_paths=d.allow_outside_paths)
    rows, report = read_conversations(source, d.format, media_root=d.media_root, task_options=options,
                                      media_dir=Path(cfg.output_dir) / "data" / "media")
    if report.skipped and not d.skip_bad_rows:
        raise InputError(f"data {source}", f"{len(report.skipped)} record(s)", f"left out by the {d.format} import "
                         f"rule: {report.summary()} (data.skip_bad_rows: true trains on the rest; `unified data "
                         "import` lists them all)")
    if d.tasks is not None:
        missing = [t for t in d.tasks if t not in rows]
        if missing:
            raise InputError("data.tasks", missing, f"{source} gives no rows of them; it gives {sorted(rows)}")
        rows = {t: rows[t] for t in d.tasks}
    return rows, [report]


def _folder(source: Any) -> Path:
    path = Path(source)
    return path if path.is_dir() else path.parent  # a conversation file's checks are cached beside it


def hold_out(rows: dict[str, list], fraction: float, seed: int, log=print) -> tuple[dict[str, list], dict[str, list]]:
    """({task: training rows}, {task: validation rows}): round(fraction * n) of each task's rows, at least 1 of a task
    with two or more, drawn with `random.Random(f"{seed}:{task}")`; both parts keep the files' order."""
    kept, held = {}, {}
    for task, task_rows in rows.items():
        if isinstance(task_rows, ShardedRows):
            raise ConfigError("data.validation_split", fraction, f"{task}: tar shards are read in place; pack a "
                              "validation split as its own shards and give it as data.eval_dir")
        n = len(task_rows)
        count = min(n - 1, max(1, round(fraction * n))) if n >= 2 else 0
        chosen = set(random.Random(f"{seed}:{task}").sample(range(n), count))
        kept[task] = [row for i, row in enumerate(task_rows) if i not in chosen]
        held[task] = [row for i, row in enumerate(task_rows) if i in chosen]
        log(f"{task}: {count} of {n} training rows held back for validation (data.validation_split {fraction})")
    return kept, {task: part for task, part in held.items() if part}


def _media_checked(data: dict[str, list], directory: Any, skip: bool, log) -> dict[str, list]:
    """Every media file decoded before step 0 (`unified.data.check_media`, cached beside the data): bad rows stop
    the run naming file:row, or with `skip_bad_rows` are dropped and reported."""
    if any(isinstance(rows, ShardedRows) for rows in data.values()):
        log(f"{directory}: tar shards, whose media were decoded when they were packed")
        return data
    bad = check_media(data, cache_dir=directory, progress=True)
    if not bad:
        return data
    shown = "; ".join(f"{b.source}: {b.reason}" for b in bad[:5]) + (f"; +{len(bad) - 5} more" if len(bad) > 5 else "")
    if not skip:
        raise MediaDecodeError(f"data {directory}", f"{len(bad)} row(s)", f"media that do not decode: {shown} "
                               "(data.skip_bad_rows: true skips them; `unified data check DIR` lists them all)")
    log(f"skipped {len(bad)} row(s) whose media do not decode: {shown}")
    return drop_rows(data, bad)


def tokenizer_corpus(train: dict[str, list], tasks: dict[str, Any], per_task: int = 500, seed: int = 0
                     ) -> list[str]:
    """What the vocabulary must cover: each task's `vocabulary` over (a sample of) its training rows, the tasks
    built as the run configures them (`build_tasks`)."""
    rng = random.Random(seed)
    return [text for name, rows in train.items() for text in tasks[name].vocabulary(rows[:per_task], rng)]


def text_lengths(rows, task: Any, tokenizer: Any) -> np.ndarray:
    """(N, 2) int: each row's prompt-side and target-side text in tokens (its fields, not the prompt template), the
    lengths length-aware batching sorts by. Media add about the same tokens to every row of a task."""
    def tokens(value: Any) -> int:
        if isinstance(value, str):
            return len(tokenizer.encode(value))
        if isinstance(value, (list, tuple)):
            return sum(tokens(v) for v in value)
        return 1 if isinstance(value, (int, float)) else 0

    targets = set(task.target_fields)
    out = np.zeros((len(rows), 2), dtype=np.int64)
    for i, row in enumerate(rows):
        for key, value in row.items():
            if key.startswith("_") or key in ("image", "video", "audio"):
                continue
            out[i, int(key in targets)] += tokens(value)
    return out


class RowStream:
    """Each task's rows in a seeded permutation per epoch. With `lengths` ({task: (N, 2) text lengths}) and
    `bucket` rows, the permutation is cut into chunks of `bucket` rows, each chunk sorted by (prompt, target)
    length and cut into groups of `group` rows (one step's take), and the groups shuffled within their chunk: a
    step's rows have similar lengths, the epoch is still a permutation, and the order depends only on the seed."""

    def __init__(self, data: dict[str, list], seed: int = 0, *, lengths: dict[str, np.ndarray] | None = None,
                 bucket: int = 0, group: int = 1):
        self.data, self.seed = data, seed
        self.lengths, self.bucket, self.group = lengths or {}, bucket, max(1, group)
        self.position = {task: [0, 0] for task in data}  # task -> [epoch, index]

    def _order(self, task: str, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch, sorted(self.data).index(task)])
        order = rng.permutation(len(self.data[task]))
        if not self.bucket or task not in self.lengths:
            return order
        lengths = self.lengths[task]
        chunks = []
        for start in range(0, len(order), self.bucket):
            chunk = order[start:start + self.bucket]
            chunk = chunk[np.lexsort((lengths[chunk, 1], lengths[chunk, 0]))]  # by prompt, then target length
            groups = [chunk[i:i + self.group] for i in range(0, len(chunk), self.group)]
            chunks += [groups[g] for g in rng.permutation(len(groups))]
        return np.concatenate(chunks)

    def take_indices(self, task: str, count: int) -> list[int]:
        """The next `count` row indices of `task` (into `data[task]`), continuing into the next epoch's order."""
        taken: list[int] = []
        while len(taken) < count:
            epoch, index = self.position[task]
            order = self._order(task, epoch)
            take = order[index:index + count - len(taken)]
            taken += [int(i) for i in take]
            index += len(take)
            self.position[task] = [epoch + 1, 0] if index >= len(order) else [epoch, index]
        return taken

    def take(self, task: str, count: int) -> list[dict]:
        return [self.data[task][i] for i in self.take_indices(task, count)]

    def batch_indices(self, task: str, batch_size: int, rank: int = 0, world: int = 1) -> list[int]:
        return self.take_indices(task, batch_size * world)[rank::world]

    def batch(self, task: str, batch_size: int, rank: int = 0, world: int = 1) -> list[dict]:
        return [self.data[task][i] for i in self.batch_indices(task, batch_size, rank, world)]

    def state_dict(self) -> dict:
        return {"position": {k: list(v) for k, v in self.position.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.position.update({k: list(v) for k, v in state["position"].items()})

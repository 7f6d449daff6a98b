"""Rows from local files (JSONL, CSV, parquet) or a `datasets.Dataset`, checked against a task.

A data directory holds one file per task, named after it (`caption.jsonl`, `vqa.csv`, `grounding.parquet`...).
Media columns (`image`, `video`, `audio`) hold paths relative to the file; they become absolute paths here and are
decoded later by our own loaders. Every row remembers where it came from (`row["_source"] = "file:line"`), so an
error much later (an undecodable clip in a batch) still names the file and row.

    >>> rows, report = read_rows("data/vqa.jsonl", task="vqa", skip_bad_rows=True)
    >>> report.summary()
    'vqa.jsonl: 998 rows, 2 skipped (row 17: missing file clips/a.mp4; row 40: missing field(s) ["answer"])'

A bad row raises `InputError` naming the file and row; with `skip_bad_rows=True` it is skipped, counted and listed in
the `RowReport` instead. Nothing disappears silently.

Field kinds follow the task's example row (`Task.field_kinds`): a list or mapping where text belongs (a question, a
caption) or a number where a media path belongs is a bad row; a number where text belongs becomes its text (`3` ->
``"3"``: CSV readers type a column of digits as numbers).

Media paths: absolute paths are taken as given; a relative path must stay inside the data file's directory
(``../../x.mp4`` is a bad row) unless `allow_outside_paths=True` (the config's `data.allow_outside_paths`). Paths
are compared as written, so a symlinked folder inside the directory is fine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unified.data.shard_rows import is_shard_dir, load_shards
from unified.errors import InputError
from unified.task_zoo import build_tasks, get_task, list_tasks

MEDIA_COLUMNS = ("image", "video", "audio")
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass
class BadRow:
    source: str  # "file:row"
    reason: str


@dataclass
class RowReport:
    """What loading kept and what it skipped (and why)."""

    name: str
    loaded: int = 0
    skipped: list[BadRow] = field(default_factory=list)

    def summary(self, limit: int = 5) -> str:
        text = f"{self.name}: {self.loaded} rows, {len(self.skipped)} skipped"
        if self.skipped:
            shown = "; ".join(f"{b.source}: {b.reason}" for b in self.skipped[:limit])
            more = f"; +{len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
            text += f" ({shown}{more})"
        return text


def _read_table(path: Path) -> list[dict[str, Any]]:
    """The file's rows as plain dicts, read through `datasets` (offline: local files only)."""
    import datasets

    loaders = {".jsonl": datasets.Dataset.from_json, ".json": datasets.Dataset.from_json,
               ".csv": datasets.Dataset.from_csv, ".parquet": datasets.Dataset.from_parquet}
    if path.suffix not in loaders:
        raise InputError("data file", str(path), f"expected one of {SUFFIXES}")
    if not path.is_file():
        raise InputError("data file", str(path), "does not exist")
    if path.stat().st_size == 0:
        return []
    datasets.disable_progress_bars()
    try:
        table = loaders[path.suffix](str(path), keep_in_memory=True)
    except Exception as exc:  # datasets raises many types for a malformed file
        raise InputError("data file", str(path), f"could not be read as {path.suffix[1:]}: {exc}") from exc
    rows = table.to_list()
    if path.suffix == ".csv":  # CSV has no lists: options/box/span columns are written as JSON
        rows = [{k: _maybe_json(v) for k, v in row.items()} for row in rows]
    return rows


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _resolve_media(row: dict[str, Any], base: Path | None, allow_outside_paths: bool = False) -> None:
    """Make media paths absolute (relative to `base`) and check they are paths, inside `base`, and exist."""
    for column in MEDIA_COLUMNS:
        value = row.get(column)
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        resolved = []
        for item in items:
            if not isinstance(item, str) or not item:
                raise InputError(column, item, f"expected a media file path (str), got {type(item).__name__}")
            path = Path(item) if base is None or Path(item).is_absolute() else base / item
            if base is not None and not Path(item).is_absolute() and not allow_outside_paths:
                inside = os.path.normpath(base.absolute())
                if os.path.commonpath([inside, os.path.normpath(path.absolute())]) != inside:
                    raise InputError(column, item, f"points outside the data directory {base} (set "
                                     "data.allow_outside_paths: true, or give an absolute path, to allow it)")
            if not path.is_file():
                raise InputError(column, item, f"missing file {path}")
            resolved.append(str(path))
        row[column] = resolved if isinstance(value, list) else resolved[0]


def _text_numbers(row: dict[str, Any], task: Any) -> None:
    # a number where the task takes text is that text (CSV types a column of digits as numbers)
    for key, kind in task.field_kinds.items():
        value = row.get(key)
        if kind == "text" and isinstance(value, (int, float)) and not isinstance(value, bool):
            row[key] = str(value)


def iter_checked_rows(raw: Iterable[Mapping[str, Any]], name: str, base: Path | None, task: Any,
                      skip_bad_rows: bool, allow_outside_paths: bool = False, report: RowReport | None = None):
    """The rows of `raw` checked one at a time (a stream never held in memory); a bad row raises naming
    `name` and its 1-based index, or with `skip_bad_rows` is counted in `report` and left out."""
    report = report if report is not None else RowReport(name)
    for index, original in enumerate(raw, start=1):
        row = {k: v for k, v in dict(original).items() if v is not None}  # Arrow fills absent columns with None
        row["_source"] = f"{name}:{index}"
        try:
            _resolve_media(row, base, allow_outside_paths)
            if task is not None:
                _text_numbers(row, task)
                task.check_row(row)
                task.media_of(row)
        except InputError as exc:
            if not skip_bad_rows:
                raise InputError(f"{name} row {index}: {exc.what}", exc.value, exc.reason) from exc
            report.skipped.append(BadRow(row["_source"], exc.reason))
            continue
        report.loaded += 1
        yield row


def _check_rows(raw: Iterable[Mapping[str, Any]], name: str, base: Path | None, task: Any,
                skip_bad_rows: bool, allow_outside_paths: bool = False) -> tuple[list[dict[str, Any]], RowReport]:
    report = RowReport(name)
    rows = list(iter_checked_rows(raw, name, base, task, skip_bad_rows, allow_outside_paths, report))
    return rows, report


def _task(task: Any) -> Any:
    if task is None or not isinstance(task, str):
        return task

    return get_task(task)


def read_rows(path: str | Path, task: Any = None, *, skip_bad_rows: bool = False, allow_outside_paths: bool = False
              ) -> tuple[list[dict[str, Any]], RowReport]:
    """One JSONL/CSV/parquet file -> (rows, report). `task` (a name or a `Task`) checks each row's fields and media."""
    path = Path(path)
    return _check_rows(_read_table(path), path.name, path.parent, _task(task), skip_bad_rows, allow_outside_paths)


def rows_from_dataset(dataset: Any, task: Any = None, *, base_dir: str | Path | None = None,
                      skip_bad_rows: bool = False, name: str = "dataset") -> tuple[list[dict[str, Any]], RowReport]:
    """Any `datasets.Dataset` (or iterable of mappings) -> (rows, report); media paths are relative to `base_dir`."""
    return _check_rows(dataset, name, None if base_dir is None else Path(base_dir), _task(task), skip_bad_rows)


def load_data_dir(directory: str | Path, tasks: Iterable[str] | None = None, *, skip_bad_rows: bool = False,
                  task_options: Mapping[str, Mapping[str, Any]] | None = None, allow_outside_paths: bool = False
                  ) -> tuple[dict[str, list[dict[str, Any]]], list[RowReport]]:
    """A directory with one file per task (`{task}.jsonl|.csv|.parquet`) -> ({task: rows}, reports).

    `tasks` limits which are read (each must have a file); by default every file named after a registered task is.
    Rows are checked by each task built with its `task_options` (e.g. the labels multiple choice allows). A
    directory written by `unified data shard` (it holds `shards.json`) gives `ShardedRows`, read lazily.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError("data directory", str(directory), "does not exist")
    if is_shard_dir(directory):  # `unified data shard` output: rows were checked when packed, read when asked for
        return load_shards(directory, tasks), []
    files = {p.stem: p for p in sorted(directory.iterdir()) if p.suffix in SUFFIXES}
    wanted = list(tasks) if tasks is not None else [t for t in list_tasks() if t in files]
    missing = [t for t in wanted if t not in files]
    if missing:
        raise InputError("tasks", missing, f"no {'/'.join(SUFFIXES)} file for them in {directory}; "
                         f"found {sorted(files)}")
    if not wanted:
        raise InputError("data directory", str(directory), f"holds no file named after a task; tasks: {list_tasks()}")
    built = build_tasks(wanted, {n: o for n, o in (task_options or {}).items() if n in wanted})
    rows, reports = {}, []
    for name in wanted:
        rows[name], report = read_rows(files[name], built[name], skip_bad_rows=skip_bad_rows,
                                       allow_outside_paths=allow_outside_paths)
        reports.append(report)
    return rows, reports

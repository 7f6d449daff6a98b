"""Decode every media file of a data set before training: `check_media(rows)` -> the rows whose media fail, by
file:row, so a corrupt clip stops a run at step 0 (or is skipped and reported) instead of hours in.

    >>> data, _ = load_data_dir("data/train")
    >>> bad = check_media(data, workers=8)          # [BadRow("vqa.jsonl:17", "video='clips/a.mp4': ...")]

Each distinct file is decoded once (a clip shared by ten rows costs one decode), in a thread pool (PyAV and
libsndfile release the GIL while decoding). Videos are decoded as training samples them by default (1 fps, at most
32 frames): every container is opened and frames across its length are decoded. Results are cached per file in
`.unified_check.json` beside the data files, keyed by path, size and modification time, so a second run re-checks
only what changed (no cache where the directory is read-only).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from unified.data.files import MEDIA_COLUMNS, BadRow
from unified.errors import InputError
from unified.media.audio import load_audio
from unified.media.image import load_image
from unified.media.member import Member
from unified.media.video import load_video

CACHE_NAME = ".unified_check.json"


def decode_file(kind: str, path: Any) -> str | None:
    """None when `path` (a file, or a `Member` of a tar shard) decodes as `kind` ("image", "video" or "audio"),
    else the reason it does not."""
    if isinstance(path, Member) and path.decoded is not None:  # stored decoded (`unified data shard --decode`)
        try:
            np.load(io.BytesIO(path.read()), allow_pickle=False)
        except (ValueError, OSError, InputError) as err:
            return getattr(err, "reason", str(err))
        return None

    loaders: dict[str, Callable[[str], Any]] = {"image": load_image, "video": lambda p: load_video(p, fps=1.0),
                                                "audio": load_audio}
    try:
        loaders[kind](path)
    except InputError as err:  # MediaDecodeError included
        return err.reason
    return None


def _key(kind: str, path: Any) -> str:
    if isinstance(path, Member):  # shards are written once: the shard's own size and mtime stand for its members
        stat = os.stat(path.shard)
        return f"{kind}|{os.path.abspath(path.shard)}#{path.offset}|{stat.st_size}|{stat.st_mtime_ns}"
    stat = os.stat(path)
    return f"{kind}|{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"


def media_items(row: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(column, path or `Member`) of each media item a row names, in column order."""
    found = []
    for kind in MEDIA_COLUMNS:
        value = row.get(kind)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (str, Member)):
                found.append((kind, item))
    return found


def check_media(data: Mapping[str, Sequence[Mapping[str, Any]]], *, workers: int | None = None,
                cache_dir: str | Path | None = None, progress: bool = False) -> list[BadRow]:
    """The rows (of {task: rows}, as `load_data_dir` returns) whose media do not decode, as `BadRow`s naming
    file:row and why, in row order. `cache_dir`: where `.unified_check.json` lives (None: no cache)."""
    cache_file = Path(cache_dir) / CACHE_NAME if cache_dir is not None else None
    cached: dict[str, str | None] = {}
    if cache_file is not None and cache_file.is_file():
        try:
            cached = json.loads(cache_file.read_text())
        except ValueError:
            cached = {}  # a damaged cache is rebuilt, never trusted
    files = {(kind, path) for rows in data.values() for row in rows for kind, path in media_items(row)}
    keys = {item: _key(*item) for item in sorted(files, key=str)}
    todo = [item for item, key in keys.items() if key not in cached]
    if todo:
        from tqdm.auto import tqdm

        with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
            results = pool.map(lambda item: decode_file(*item), todo)
            for item, reason in tqdm(zip(todo, results), total=len(todo), desc="checking media", unit="file",
                                     disable=not progress):
                cached[keys[item]] = reason
        if cache_file is not None and os.access(cache_file.parent, os.W_OK):
            tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(cached, indent=0))
            tmp.replace(cache_file)  # atomic: a killed check leaves the old cache
    bad = []
    for rows in data.values():
        for row in rows:
            reasons = [f"{kind}={str(path)!r}: {cached[keys[(kind, path)]]}" for kind, path in media_items(row)
                       if cached[keys[(kind, path)]] is not None]
            if reasons:
                bad.append(BadRow(str(row.get("_source", "?")), "; ".join(reasons)))
    return bad


def drop_rows(data: Mapping[str, Sequence[Mapping[str, Any]]], bad: Sequence[BadRow]) -> dict[str, list]:
    """{task: rows} without the rows `bad` names."""
    names = {b.source for b in bad}
    return {task: [r for r in rows if r.get("_source") not in names] for task, rows in data.items()}

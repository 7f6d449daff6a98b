"""Tar shards: a data directory packed into WebDataset-style tar files with the media inside, read row by row
without loading the corpus into memory.

    unified data shard data/ --out shards/ [--rows-per-shard 1000]      # write_shards()
    unified train CONFIG data.train_dir=shards/                         # load_data_dir() sees shards.json

Layout: `OUT/{task}-{k:05d}.tar`, each holding per row `{i:08d}.json` (the row; its media fields name members) and
its media files `{i:08d}.{field}{j}{suffix}`, plus `OUT/shards.json`:

    {"format": 1, "tasks": {task: {"rows": N, "sha256": ..., "shards": [{"file": "vqa-00000.tar",
                                                                          "rows": [[json offset, json size], ...]}]}}}

Rows are checked (fields and media files) when they are packed, exactly as training checks a directory, so a shard
holds only rows that loaded. A loaded task is a `ShardedRows`: a sequence whose row i is read from its shard by
offset when asked for (`os.pread`; nothing is extracted), with its media as `unified.media.Member`s that the
loaders read by offset in turn. Memory: two integers per row. The training row stream indexes rows by number, so
with shards as with files every row is seen once per epoch across ranks and workers, and a resume continues at the
same row; rows are read in the stream's shuffled order (random reads within shards: a local disk, not an object
store). `_source` keeps where a row first came from (`vqa.jsonl:17`).

`--decode CONFIG` (a training YAML or a saved model/processor directory) stores videos and audio already decoded as
that processor samples them for each task (frames at its fps, frame cap and size as uint8 .npy; waveforms at its
rate as float32 .npy), so a corpus is decoded once, not every epoch. A processor asking for other settings gets an
`InputError` naming them (frames sampled once cannot be resampled).
"""

from __future__ import annotations

__all__ = ["ShardedRows", "decode_settings", "is_shard_dir", "load_shards", "write_shards", "write_shards_from"]

import hashlib
import io
import itertools
import json
import os
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unified.data.check import check_media, decode_file, drop_rows, media_items
from unified.data.files import MEDIA_COLUMNS, BadRow, RowReport, iter_checked_rows, load_data_dir
from unified.data.shard_rows import FORMAT, INDEX, ShardedRows, is_shard_dir, load_shards
from unified.errors import InputError
from unified.media import load_audio, load_video
from unified.task_zoo import build_tasks


def write_shards(data_dir: str | Path, out: str | Path, *, tasks: Sequence[str] | None = None,
                 rows_per_shard: int = 1000, task_options: Mapping[str, Mapping[str, Any]] | None = None,
                 skip_bad_rows: bool = False, check: bool = True, decode: Any = None,
                 progress: bool = True) -> dict[str, Any]:
    """Pack `data_dir` (one file per task, as `load_data_dir` reads) into tar shards under `out`; returns the index.
    Every media file is decoded first (`check_media`): a row whose media do not decode stops the packing, or with
    `skip_bad_rows` is left out (`check=False` skips the decoding). `decode`: a `ProcessorConfig` whose sampling
    (each task's budget applied) videos and audio are stored already decoded at, so training decodes nothing."""
    out = _fresh(out, rows_per_shard)
    data, _ = load_data_dir(data_dir, tasks, skip_bad_rows=skip_bad_rows, task_options=task_options)
    if check:
        bad = check_media(data, cache_dir=data_dir, progress=progress)
        if bad and not skip_bad_rows:
            shown = "; ".join(f"{b.source}: {b.reason}" for b in bad[:5])
            raise InputError(f"data {data_dir}", f"{len(bad)} row(s)", f"media that do not decode: {shown} "
                             "(skip_bad_rows drops them; `unified data check DIR` lists them all)")
        data = drop_rows(data, bad)
    return _write_all(out, {task: iter(rows) for task, rows in data.items()}, rows_per_shard, decode,
                      total=sum(len(r) for r in data.values()), progress=progress)


def write_shards_from(sources: Mapping[str, Iterable[Mapping[str, Any]]], out: str | Path, *,
                      base_dir: str | Path | None = None, rows_per_shard: int = 1000,
                      task_options: Mapping[str, Mapping[str, Any]] | None = None, skip_bad_rows: bool = False,
                      check: bool = True, decode: Any = None, progress: bool = True) -> dict[str, Any]:
    """Tar shards from streams of rows, {task: any iterable of mappings}, e.g. a `datasets.IterableDataset`
    streamed from disk: rows are checked, their media decoded (`check`), and written one at a time, so a corpus
    larger than memory is packed without being held (media paths relative to `base_dir`)."""
    out = _fresh(out, rows_per_shard)
    built = build_tasks(list(sources), {n: o for n, o in (task_options or {}).items() if n in sources})
    base = None if base_dir is None else Path(base_dir)
    reports = {}

    def rows(task: str, raw: Iterable[Mapping[str, Any]]):
        reports[task] = RowReport(task)
        for row in iter_checked_rows(raw, task, base, built[task], skip_bad_rows, report=reports[task]):
            bad = [(kind, reason) for kind, item in media_items(row) if (reason := decode_file(kind, item))]
            if bad and not skip_bad_rows:
                raise InputError(f"{row['_source']} {bad[0][0]}", "media", f"does not decode: {bad[0][1]}")
            if bad:
                reports[task].skipped.append(BadRow(row["_source"], bad[0][1]))
                continue
            yield row

    index = _write_all(out, {task: rows(task, raw) if check else
                             iter_checked_rows(raw, task, base, built[task], skip_bad_rows)
                             for task, raw in sources.items()}, rows_per_shard, decode, progress=progress)
    index["skipped"] = {t: [f"{b.source}: {b.reason}" for b in r.skipped] for t, r in reports.items() if r.skipped}
    return index


def _fresh(out: str | Path, rows_per_shard: int) -> Path:
    if isinstance(rows_per_shard, bool) or not isinstance(rows_per_shard, int) or rows_per_shard < 1:
        raise InputError("rows_per_shard", rows_per_shard, "expected an integer >= 1")
    out = Path(out)
    if (out / INDEX).exists():
        raise InputError("out", str(out), f"already holds shards ({INDEX}); choose another directory")
    return out


def _write_all(out: Path, streams: Mapping[str, Iterator[dict[str, Any]]], rows_per_shard: int, decode: Any,
               total: int | None = None, progress: bool = True) -> dict[str, Any]:
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"format": FORMAT, "tasks": {}}
    bar = tqdm(total=total, desc="shard", unit="row", disable=not progress)
    for task, rows in streams.items():
        sampling = None if decode is None else decode_settings(decode, task)
        shards, digest, count = [], hashlib.sha256(b"["), 0
        while True:
            chunk = list(itertools.islice(rows, rows_per_shard))  # one shard's rows in memory at a time
            if not chunk:
                break
            for row in chunk:
                digest.update((", " if count else "").encode() + _row_json(row).encode())
                count += 1
            name = f"{task}-{len(shards):05d}.tar"
            shards.append({"file": name, "rows": _write_shard(out / name, chunk, count - len(chunk), sampling)})
            bar.update(len(chunk))
        digest.update(b"]")
        index["tasks"][task] = {"rows": count, "shards": shards, "sha256": digest.hexdigest()[:16],
                                "decoded": sampling}
    bar.close()
    tmp = out / f".{INDEX}.tmp"
    tmp.write_text(json.dumps(index))
    os.replace(tmp, out / INDEX)  # the index last: a directory with shards.json is complete
    return index


def _row_json(row: Mapping[str, Any]) -> str:
    # as a training fingerprint digests rows read from files: a run resumed on the shards of its data matches
    return json.dumps(dict(row), sort_keys=True, default=str)


def decode_settings(config: Any, task: str) -> dict[str, dict[str, Any]]:
    """What `load_video` / `load_audio` are asked for `task` by a processor with this `ProcessorConfig`."""
    from dataclasses import replace

    c = replace(config, **config.budgets[task]) if task in config.budgets else config
    video = ({"fps": None, "max_frames": 32, "num_frames": c.num_frames} if c.video_fps is None else
             {"fps": c.video_fps, "max_frames": c.max_frames, "num_frames": None})
    return {"video": {**video, "size": c.image_size}, "audio": {"sampling_rate": c.sampling_rate}}


def _decoded(column: str, item: str, sampling: dict[str, dict[str, Any]]) -> tuple[bytes, dict[str, Any]]:
    buffer = io.BytesIO()
    if column == "video":
        video = load_video(item, **sampling["video"])
        np.save(buffer, video.frames.numpy(), allow_pickle=False)
        meta = {"kind": "video", **sampling["video"], "timestamps": video.timestamps.tolist(),
                "duration": video.duration, "source_fps": video.source_fps, "coded_size": list(video.size)}
    else:
        np.save(buffer, load_audio(item, **sampling["audio"]).numpy(), allow_pickle=False)
        meta = {"kind": "audio", **sampling["audio"]}
    return buffer.getvalue(), meta


def _write_shard(path: Path, rows: Sequence[Mapping[str, Any]], first: int,
                 sampling: dict[str, dict[str, Any]] | None = None) -> list[list[int]]:
    offsets = []
    tmp = path.with_name(f".{path.name}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, row in enumerate(rows):
            key = f"{first + i:08d}"
            packed = dict(row)
            for column in MEDIA_COLUMNS:
                value = row.get(column)
                if value is None:
                    continue
                items = value if isinstance(value, list) else [value]
                members = []
                for j, item in enumerate(items):
                    if sampling is not None and column in ("video", "audio"):
                        data, meta = _decoded(column, item, sampling)
                        member = f"{key}.{column}{j}.npy"
                    else:
                        data, meta, member = Path(item).read_bytes(), None, f"{key}.{column}{j}{Path(item).suffix}"
                    info = _add(tar, member, data)
                    members.append({"member": member, "offset": info.offset_data, "size": info.size,
                                    **({"decoded": meta} if meta else {})})
                packed[column] = members if isinstance(value, list) else members[0]
            info = _add(tar, f"{key}.json", json.dumps(packed).encode())
            offsets.append([info.offset_data, info.size])
    os.replace(tmp, path)
    return offsets


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    start = tar.offset
    header = len(info.tobuf(tarfile.USTAR_FORMAT, tar.encoding, tar.errors))  # 512: member names are short
    tar.addfile(info, io.BytesIO(data))
    info.offset, info.offset_data = start, start + header  # where the member's bytes start in the tar
    return info

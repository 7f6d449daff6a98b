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

from unified.data.files import MEDIA_COLUMNS, BadRow
from unified.errors import InputError
from unified.media.member import Member

INDEX = "shards.json"
FORMAT = 1


def write_shards(data_dir: str | Path, out: str | Path, *, tasks: Sequence[str] | None = None,
                 rows_per_shard: int = 1000, task_options: Mapping[str, Mapping[str, Any]] | None = None,
                 skip_bad_rows: bool = False, check: bool = True, decode: Any = None,
                 progress: bool = True) -> dict[str, Any]:
    """Pack `data_dir` (one file per task, as `load_data_dir` reads) into tar shards under `out`; returns the index.
    Every media file is decoded first (`check_media`): a row whose media do not decode stops the packing, or with
    `skip_bad_rows` is left out (`check=False` skips the decoding). `decode`: a `ProcessorConfig` whose sampling
    (each task's budget applied) videos and audio are stored already decoded at, so training decodes nothing."""
    from unified.data.files import load_data_dir

    out = _fresh(out, rows_per_shard)
    data, _ = load_data_dir(data_dir, tasks, skip_bad_rows=skip_bad_rows, task_options=task_options)
    if check:
        from unified.data.check import check_media, drop_rows

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
    from unified.data.check import decode_file, media_items
    from unified.data.files import RowReport, iter_checked_rows
    from unified.task_zoo import build_tasks

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
    from unified.media import load_audio, load_video

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


def is_shard_dir(directory: str | Path) -> bool:
    return (Path(directory) / INDEX).is_file()


def load_shards(directory: str | Path, tasks: Sequence[str] | None = None) -> dict[str, ShardedRows]:
    """{task: ShardedRows} of a `write_shards` directory (`tasks`: which; default all)."""
    directory = Path(directory)
    try:
        index = json.loads((directory / INDEX).read_text())
    except (OSError, ValueError) as exc:
        raise InputError("shard index", str(directory / INDEX), f"cannot be read ({exc})") from exc
    if index.get("format") != FORMAT:
        raise InputError("shard index", str(directory / INDEX), f"format {index.get('format')!r}, expected {FORMAT}")
    known = index["tasks"]
    wanted = list(tasks) if tasks is not None else list(known)
    missing = [t for t in wanted if t not in known]
    if missing:
        raise InputError("tasks", missing, f"not in the shards of {directory}; they hold {sorted(known)}")
    return {task: ShardedRows(directory, task, known[task]) for task in wanted}


class ShardedRows(Sequence):
    """One task's rows in tar shards: `rows[i]` reads row i (a dict, media as `Member`s); `len(rows)` is free."""

    def __init__(self, directory: Path, task: str, entry: Mapping[str, Any]):
        self.directory, self.task, self.sha256 = Path(directory), task, entry["sha256"]
        self._where = [(str(self.directory.absolute() / s["file"]), int(o), int(n))
                       for s in entry["shards"] for o, n in s["rows"]]
        if len(self._where) != entry["rows"]:
            raise InputError("shard index", task, f"lists {len(self._where)} rows, says {entry['rows']}")

    def __len__(self) -> int:
        return len(self._where)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        shard, offset, size = self._where[i]
        row = json.loads(Member(shard, offset, size, f"row {i}").read())
        for column in MEDIA_COLUMNS:
            value = row.get(column)
            if value is not None:
                members = [Member(shard, m["offset"], m["size"], m["member"], m.get("decoded"))
                           for m in (value if isinstance(value, list) else [value])]
                row[column] = members if isinstance(value, list) else members[0]
        return row

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def digest(self) -> str:
        """What a resume compares: the rows as packed (their sha256, from the index)."""
        return f"{len(self)} rows, sha256 {self.sha256}"


def processor_settings(source: str | Path, data_dir: str | Path, tasks: Sequence[str] | None = None) -> Any:
    """The `ProcessorConfig` that `--decode` samples with: a saved model's or processor's directory, or a training
    YAML (its `processor` section and media budgets over the data's tasks, as training builds it)."""
    from unified.processing import PROCESSOR_CONFIG, ProcessorConfig, UnifiedProcessor

    source = Path(source)
    if source.is_dir():
        if not (source / PROCESSOR_CONFIG).is_file():
            raise InputError("--decode", str(source), f"no {PROCESSOR_CONFIG} in this directory")
        return UnifiedProcessor.from_pretrained(source).config
    from unified.data.files import SUFFIXES
    from unified.training.build import media_budgets
    from unified.training.config import load_config

    cfg = load_config(source)
    names = list(tasks) if tasks is not None else sorted(p.stem for p in Path(data_dir).iterdir()
                                                         if p.suffix in SUFFIXES)
    p = cfg.processor
    return ProcessorConfig(image_size=p.image_size, video_fps=p.video_fps, max_frames=p.max_frames, fit=p.fit,
                           budgets=media_budgets(cfg, {n: [] for n in names})).validate()

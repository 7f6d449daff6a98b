"""Reading tar shards (`unified.data.shards` writes them): a task's rows as a sequence read by offset.

    rows = load_shards("shards/")["vqa"]      # ShardedRows: len() is free, rows[i] reads row i from its tar
    rows[17]["video"]                         # a `unified.media.Member`: the loaders read it in place

Memory holds two integers per row; nothing is extracted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from unified.errors import InputError
from unified.media.member import Member
from unified.task_zoo.protocol import MODALITIES as MEDIA_COLUMNS

INDEX = "shards.json"
FORMAT = 1


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

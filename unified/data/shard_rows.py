"""Reading tar shards (`unified.data.shards` writes them): a task's rows as a sequence read by offset.

    rows = load_shards("shards/")["vqa"]      # ShardedRows: len() is free, rows[i] reads row i from its tar
    rows[17]["video"]                         # a `unified.media.Member`: the loaders read it in place

Memory holds two integers per row; nothing is extracted.

`check_shards(directory)` reads every row and media member the index names and checks each against the tar header
in front of it (its name, size and header checksum), so a tar cut short, a member removed, bytes flipped in a
header or row, or an index whose offsets no longer match its tar are each reported by shard, row and member;
`unified data check` runs it on a shard directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from unified.errors import InputError
from unified.local_dirs import read_json
from unified.media.member import Member
from unified.task_zoo.protocol import MODALITIES as MEDIA_COLUMNS

INDEX = "shards.json"
FORMAT = 1


def is_shard_dir(directory: str | Path) -> bool:
    return (Path(directory) / INDEX).is_file()


def _wanted(directory: Path, tasks: Sequence[str] | None) -> tuple[dict[str, Any], list[str]]:
    """(the index of `directory`, the tasks asked for: all by default); a task the shards lack is refused by name."""
    known = read_index(directory)
    wanted = list(tasks) if tasks is not None else list(known)
    missing = [t for t in wanted if t not in known]
    if missing:
        raise InputError("tasks", missing, f"not in the shards of {directory}; they hold {sorted(known)}")
    return known, wanted


def load_shards(directory: str | Path, tasks: Sequence[str] | None = None) -> dict[str, ShardedRows]:
    """{task: ShardedRows} of a `write_shards` directory (`tasks`: which; default all)."""
    directory = Path(directory)
    known, wanted = _wanted(directory, tasks)
    return {task: ShardedRows(directory, task, known[task]) for task in wanted}


def read_index(directory: Path) -> dict[str, Any]:
    """{task: entry} of `shards.json`, its structure checked; `InputError` naming the file and what is wrong."""
    file = directory / INDEX
    index = read_json(file, "shard index")
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        found = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise InputError("shard index", str(file), f"format {found!r}, expected {FORMAT}")
    tasks = index.get("tasks")
    try:
        for task, entry in tasks.items():
            for shard in entry["shards"]:
                if not isinstance(shard["file"], str) or any(len(pair) != 2 for pair in shard["rows"]):
                    raise ValueError(task)
            int(entry["rows"])
            str(entry["sha256"])
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise InputError("shard index", str(file), f"damaged: task entries without valid shards / rows ({err!r})"
                         ) from None
    return tasks


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
        # the tar header in front must name this row: an offset that lands on another row's JSON would otherwise
        # hand over that row without a word
        reason = _member_problem(shard, offset, size, f"{i:08d}.json")
        if reason is not None:
            raise InputError(f"shard {shard}", f"{self.task} row {i}", f"damaged: {reason}; `unified data check "
                             f"{self.directory}` lists every damaged row")
        try:
            row = json.loads(Member(shard, offset, size, f"row {i}").read())
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except (UnicodeDecodeError, ValueError) as err:  # not the row the index points at
            raise InputError(f"shard {shard}", f"{self.task} row {i}", f"damaged: the bytes at offset {offset} are "
                             f"not a row ({str(err)[:60]}): the tar and {INDEX} disagree (a member removed, bytes "
                             f"changed or the index edited); `unified data check {self.directory}` lists every "
                             "damaged row") from None
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


# ------------------------------------------------------------------------------------------------ checking
TAR_BLOCK = 512


def _member_problem(shard: str, offset: int, size: int, name: str) -> str | None:
    """Why the tar member the index places at `offset` (its data; its header is the block before) is not `name` of
    `size` bytes, or None. The header's checksum, name and size are read back, so a shifted offset, a removed or
    renamed member and flipped header bytes are told apart from a whole member."""
    try:
        end = os.stat(shard).st_size
        if offset + size > end:
            return f"cut short: the tar ends at byte {end}, before this member's {size} bytes at offset {offset}"
        if offset < TAR_BLOCK:
            return f"offset {offset} leaves no room for its tar header"
        header = Member(shard, offset - TAR_BLOCK, TAR_BLOCK, name).read()
    except (OSError, InputError) as err:
        return getattr(err, "reason", None) or str(err)
    stored = header[148:156].split(b"\0")[0].strip()
    summed = sum(header[:148]) + 8 * 32 + sum(header[156:])
    try:
        if int(stored or b"-1", 8) != summed:
            raise ValueError
    except ValueError:
        return (f"no tar header before offset {offset}: the index and the tar disagree (a member removed or "
                "moved, the index edited) or the header's bytes changed")
    found = header[:100].split(b"\0")[0].decode("utf-8", "replace")
    if found != name:
        return (f"the tar holds {found!r} at offset {offset}, not {name!r}: the index and the tar disagree (a "
                "member removed or moved?)")
    try:
        length = int(header[124:136].split(b"\0")[0].strip() or b"0", 8)
    except ValueError:
        length = -1
    if length != size:
        return f"{length} bytes in the tar, {size} in the index"
    return None


def check_shards(directory: str | Path, tasks: Sequence[str] | None = None
                 ) -> tuple[dict[str, list[dict[str, Any]]], list[tuple[str, str]]]:
    """Every row and media member of a shard directory, checked against its tar: ({task: intact rows (media as
    `Member`s)}, [(where, what is wrong)] for each damaged shard, row or member). An unreadable or malformed index
    raises `InputError` (nothing else can be checked)."""
    directory = Path(directory)
    known, wanted = _wanted(directory, tasks)
    intact: dict[str, list[dict[str, Any]]] = {}
    problems: list[tuple[str, str]] = []
    for task in wanted:
        entry, rows, i = known[task], [], 0
        for shard_entry in entry["shards"]:
            shard = str(directory.absolute() / shard_entry["file"])
            if not os.path.isfile(shard):
                for _ in shard_entry["rows"]:
                    problems.append((f"{shard} {task} row {i}", "missing: the shard file is not there"))
                    i += 1
                continue
            for offset, size in shard_entry["rows"]:
                where = f"{shard} {task} row {i}"
                key, i = f"{i:08d}", i + 1
                reason = _member_problem(shard, int(offset), int(size), f"{key}.json")
                if reason is None:
                    try:
                        row = json.loads(Member(shard, int(offset), int(size), key).read())
                        if not isinstance(row, dict):
                            raise ValueError("not a JSON object")
                    except (UnicodeDecodeError, ValueError) as err:
                        reason = f"damaged: not a row ({str(err)[:60]})"
                if reason is not None:
                    problems.append((where, reason))
                    continue
                bad = False
                for column in MEDIA_COLUMNS:
                    value = row.get(column)
                    if value is None:
                        continue
                    members = []
                    for m in value if isinstance(value, list) else [value]:
                        try:
                            member = Member(shard, int(m["offset"]), int(m["size"]), str(m["member"]),
                                            m.get("decoded"))
                        except (KeyError, TypeError, ValueError):
                            problems.append((where, f"{column}: not a member reference ({str(m)[:60]})"))
                            bad = True
                            continue
                        reason = _member_problem(shard, member.offset, member.size, member.name)
                        if reason is not None:
                            problems.append((f"{where} {member.name}", reason))
                            bad = True
                        members.append(member)
                    row[column] = members if isinstance(value, list) else (members[0] if members else None)
                if not bad:
                    rows.append(row)
        if i != int(entry["rows"]):
            problems.append((f"{directory / INDEX} {task}", f"lists {i} rows, says {entry['rows']}"))
        intact[task] = rows
    return intact, problems

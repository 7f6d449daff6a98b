"""Conversations in the formats other trainers use -> rows of our tasks, every left-out record listed with its reason.

    file (JSON list or JSONL) --read_records--> records --FORMATS[fmt]--> [Turn] --turn_rows--> (task, row) per reply

Formats (each as its own documentation writes it):
- ``sharegpt`` (LLaMA-Factory, ms-swift): {"conversations": [{"from": "human" | "gpt" | "system", "value"}], or
  "messages": [{"role", "content": str}], "system": str, "images" / "videos" / "audios": [paths]}; each
  ``<image>`` / ``<video>`` / ``<audio>`` tag in a message takes the next item of its list (no tags at all: every item
  belongs to the first user message).
- ``openai`` (fine-tuning JSONL, the chat endpoint's requests): {"messages": [{"role", "content": str | parts}]};
  parts as the server reads them (`unified.data.chat.parse_message`: the same function).
- ``llava`` (LLaVA, LLaVA-OneVision / LLaVA-Video): {"id", "image" | "video": path or [paths], "conversations":
  [{"from": "human" | "gpt", "value"}]}, tags as in ShareGPT.

The rule (`turn_kind`, then `pick_task`: the task declaring that `chat_turn` and taking those media; ``task=``
overrides it): options given (a record's "options" list, or lines ``A. ...`` /
``(B) ...`` in the user's text) -> multiple choice (`audio_video_mcqa` with a video and audio, `video_mcqa` with a
video); media and a request for a description with no question (no text, or words such as "describe", "caption",
"summarise") -> `caption`; media and a question -> `vqa`; no media -> `text2text`. Each assistant turn is one row
(named ``file:record reply n``): the reply is its answer, the user text since the previous reply its question, and
the system prompt and earlier turns its context, written before the question as ``system: ... user: ...
assistant: ... user: <question>``. A caption's prompt is fixed, so its row holds the media and the reply only. A
row carries every media item of the conversation up to its turn. Media paths resolve under `media_root` (never
outside it, never a URL); data: URLs become bytes (`import_conversations` writes them to files).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from unified.data.chat import MediaItem, Turn, parse_message
from unified.data.files import BadRow, RowReport
from unified.data.sources import MediaPolicy
from unified.errors import InputError
from unified.task_zoo import build_tasks, get_task, list_tasks

MEDIA = ("image", "video", "audio")
PLURAL = {"image": "images", "video": "videos", "audio": "audios"}
TAG = re.compile(r"<(image|video|audio)>")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}
OPTION = re.compile(r"^\s*\(?([A-Z])[.):]\s*(\S.*?)\s*$")  # "A. red", "(B) blue", "C: green"
OPTIONS_HEADER = re.compile(r"^\s*(options|choices)\s*:?\s*$", re.IGNORECASE)
DESCRIBE = re.compile(r"\b(describe|description|caption|summari[sz]e|summary|what happens|what is happening|"
                      r"what's happening|tell me about)\b", re.IGNORECASE)
LETTER = re.compile(r"^\(?([A-Z])\)?(?:[.):\s]|$)")
MAX_MEDIA_BYTES = 2**31  # data: URLs in a local file: no upload limit, only a sanity bound


class Skip(Exception):
    """A record or a turn that cannot become a row: the reason goes to the report."""


# ---------------------------------------------------------------------------------------------- reading the file
def read_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based record number, record) of a JSON list or a JSONL file; a JSONL line that is not JSON gives an
    `InputError` as its record, so it is listed as skipped and the rest is read."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError("conversation file", str(path), f"not valid JSON: {exc}") from exc
        if not isinstance(data, list):
            raise InputError("conversation file", str(path), "expected a JSON list of records (or JSONL)")
        yield from enumerate(data, start=1)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except ValueError as exc:
            yield number, InputError(f"line {number}", line[:60], f"not valid JSON: {exc}")


# ---------------------------------------------------------------------------------------------- formats -> turns
def openai_turns(record: Any, policy: MediaPolicy) -> list[Turn]:
    if not isinstance(record, Mapping) or not isinstance(record.get("messages"), list):
        raise Skip("expected {\"messages\": [{role, content}, ...]}")
    return [parse_message(message, index, policy) for index, message in enumerate(record["messages"])]


def sharegpt_turns(record: Any, policy: MediaPolicy) -> list[Turn]:
    if not isinstance(record, Mapping):
        raise Skip("expected a JSON object")
    if isinstance(record.get("conversations"), list):
        key, role_key, text_key = "conversations", "from", "value"
    elif isinstance(record.get("messages"), list):
        key, role_key, text_key = "messages", "role", "content"
    else:
        raise Skip("expected \"conversations\" [{from, value}] or \"messages\" [{role, content}]")
    raw = []
    if isinstance(record.get("system"), str) and record["system"].strip():
        raw.append(("system", record["system"], "system"))
    for index, message in enumerate(record[key]):
        where = f"{key}[{index}]"
        role = message.get(role_key) if isinstance(message, Mapping) else None
        if role not in SHAREGPT_ROLES:
            raise Skip(f"{where}.{role_key} is {role!r}: expected one of {sorted(SHAREGPT_ROLES)} (tool calls and "
                       "observations are not mapped)")
        text = message.get(text_key)
        if not isinstance(text, str):
            raise Skip(f"{where}.{text_key} is {type(text).__name__}: expected text")
        raw.append((SHAREGPT_ROLES[role], text, where))
    lists = {m: record.get(PLURAL[m]) or [] for m in MEDIA}
    return _tagged_turns(raw, lists, policy)


def llava_turns(record: Any, policy: MediaPolicy) -> list[Turn]:
    if not isinstance(record, Mapping) or not isinstance(record.get("conversations"), list):
        raise Skip("expected {\"conversations\": [{from, value}], \"image\" | \"video\": path(s)}")
    raw = []
    for index, message in enumerate(record["conversations"]):
        role = message.get("from") if isinstance(message, Mapping) else None
        if role not in ("human", "gpt"):
            raise Skip(f"conversations[{index}].from is {role!r}: expected 'human' or 'gpt'")
        if not isinstance(message.get("value"), str):
            raise Skip(f"conversations[{index}].value: expected text")
        raw.append((SHAREGPT_ROLES[role], message["value"], f"conversations[{index}]"))
    lists = {}
    for modality in MEDIA:
        value = record.get(modality)
        lists[modality] = [] if value is None else value if isinstance(value, list) else [value]
    return _tagged_turns(raw, lists, policy)


def _tagged_turns(raw: list[tuple[str, str, str]], lists: Mapping[str, Any], policy: MediaPolicy) -> list[Turn]:
    """Messages whose text holds <image> / <video> / <audio> tags, and the lists the tags take their items from."""
    for modality, items in lists.items():
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise Skip(f"{PLURAL[modality]}: expected a list of paths")
    tags = {m: sum(TAG.findall(text).count(m) for _, text, _ in raw) for m in MEDIA}
    for modality, items in lists.items():
        if tags[modality] and tags[modality] != len(items):
            raise Skip(f"{tags[modality]} <{modality}> tag(s) in the messages but {len(items)} {PLURAL[modality]}")
        if not tags[modality] and items and not any(role == "user" for role, _, _ in raw):
            raise Skip(f"{PLURAL[modality]} given but no user message to hold them")
    taken = dict.fromkeys(MEDIA, 0)
    untagged = {m: not tags[m] for m in MEDIA}
    turns = []
    for role, text, where in raw:
        media = []
        found = TAG.findall(text)
        if role != "user" and found:
            raise Skip(f"{where}: a media tag in a {role} message (media go in user messages)")
        if role == "user" and not any(t.role == "user" for t in turns):
            found = [*found, *(m for m in MEDIA if untagged[m] for _ in lists[m])]
        for modality in found:
            number = taken[modality]
            taken[modality] += 1
            what = f"{PLURAL[modality]}[{number}]"
            media.append(MediaItem(modality, policy.resolve(lists[modality][number], what), what, f"<{modality}>"))
        lines = (" ".join(line.split()) for line in TAG.sub(" ", text).splitlines())  # options need their lines
        turns.append(Turn(role, "\n".join(line for line in lines if line), media))
    return turns


FORMATS: dict[str, Callable[[Any, MediaPolicy], list[Turn]]] = {
    "sharegpt": sharegpt_turns, "openai": openai_turns, "llava": llava_turns}


# ---------------------------------------------------------------------------------------------- turns -> rows
def split_options(text: str) -> tuple[str, list[str]]:
    """(the question, the options) of a text listing options on lines of their own, lettered A, B, C... in order;
    (text, []) when it lists fewer than two."""
    question, options = [], []
    for line in text.splitlines():
        match = OPTION.match(line)
        if match and ord(match.group(1)) - ord("A") == len(options):
            options.append(match.group(2))
        elif not options and not OPTIONS_HEADER.match(line):
            question.append(line.strip())
        # lines after the options ("Answer with the letter.") are instructions to the model, not the question
    if len(options) < 2:
        return text, []
    return " ".join(q for q in question if q), options


def answer_index(reply: str, options: list[str]) -> int:
    """The option a reply names: its letter ("B", "(B)", "B. blue") or its text."""
    reply = reply.strip()
    match = LETTER.match(reply)
    if match and ord(match.group(1)) - ord("A") < len(options):
        return ord(match.group(1)) - ord("A")
    texts = [o.strip().lower() for o in options]
    if reply.lower().rstrip(".") in texts:
        return texts.index(reply.lower().rstrip("."))
    raise Skip(f"the reply {reply[:40]!r} names none of the options {[chr(65 + i) for i in range(len(options))]}")


def turn_kind(text: str, modalities: set[str], has_options: bool) -> str:
    """The rule (module docstring): what kind of turn this is, one of `CHAT_TURNS`."""
    if has_options:
        return "options"
    if not modalities:
        return "text"
    return "description" if not text or DESCRIBE.search(text) else "question"


def pick_task(kind: str, modalities: set[str]) -> Any:
    """The registered task that takes turns of this `kind` (`Task.chat_turn`) with these media: among those whose
    `requires` <= media <= `accepts`, the one requiring most (a video and audio: audio_video_mcqa over video_mcqa)."""
    return get_task(_taker(kind, frozenset(modalities)))


@functools.lru_cache(maxsize=64)  # one answer per (kind, media) for a whole file, not 14 task builds per turn
def _taker(kind: str, modalities: frozenset[str]) -> str:
    fits = []
    for name in list_tasks():
        task = get_task(name)
        if task.chat_turn == kind and task.requires <= modalities <= task.accepts:
            fits.append((-len(task.requires), name))
    if not fits:
        takers = sorted(n for n in list_tasks() if get_task(n).chat_turn == kind)
        raise Skip(f"a {kind} turn with {sorted(modalities) or 'no media'}: no task takes it (tasks taking {kind} "
                   f"turns: {takers})")
    return min(fits)[1]


def turn_rows(turns: list[Turn], record: Mapping[str, Any] | None = None, task: Any = None
              ) -> Iterator[tuple[int, Any, Any]]:
    """(reply number, task name, row) for each assistant turn (1 for the first reply), or (reply number, None, the
    reason it is left out)."""
    context: list[str] = []
    asked: list[Turn] = []
    media: list[MediaItem] = []
    given = record.get("options") if isinstance(record, Mapping) else None
    replies = 0
    for turn in turns:
        if turn.role != "assistant":
            if turn.role == "user":
                asked.append(turn)
                media += turn.media
            else:
                context.append(f"system: {turn.text}")
            continue
        replies += 1
        if not asked:
            yield replies, None, "an assistant reply with no user message before it"
            context.append(f"assistant: {turn.text}")
            continue
        text = "\n".join(t.text for t in asked)
        try:
            name, row = _row(text, turn.text, media, context, given, task)
            yield replies, name, row
        except (Skip, InputError) as exc:
            yield replies, None, exc.reason if isinstance(exc, InputError) else str(exc)
        context += [f"user: {' '.join(text.split())}", f"assistant: {turn.text}"]
        asked = []
    if asked:
        yield replies + 1, None, "a user message with no assistant reply after it"


def _row(text: str, reply: str, media: list[MediaItem], context: list[str], given: Any, task: Any
         ) -> tuple[str, dict[str, Any]]:
    question, options = split_options(text)
    if isinstance(given, list) and given:
        options = [str(o) for o in given]
    modalities = {item.modality for item in media}
    chosen = task if task is not None else pick_task(turn_kind(question, modalities, bool(options)), modalities)
    row: dict[str, Any] = {}
    for item in media:
        row.setdefault(item.modality, []).append(item.source)
    row = {m: v[0] if len(v) == 1 else v for m, v in row.items()}
    if "options" not in chosen.row_fields:
        question = text  # the options (if any) stay in the question of a task that takes none
    question = " ".join(question.split())
    if context:
        question = " ".join([*context, f"user: {question}"])
    if "options" in chosen.row_fields:
        if not options:
            raise Skip(f"task {chosen.name!r} needs options: none in the record or the user's text")
        row.update(question=question, options=options, answer_index=answer_index(reply, options))
        return chosen.name, row
    kinds = chosen.field_kinds
    answers = [f for f in chosen.row_fields if f in chosen.target_fields and kinds.get(f) == "text"]
    if len(answers) != 1:
        raise Skip(f"task {chosen.name!r} answers with {chosen.grammar!r}; the importer fills one text answer")
    row[answers[0]] = reply
    if chosen.message_field is not None:
        if not question:
            raise Skip(f"no text for {chosen.name!r}'s {chosen.message_field!r}")
        row[chosen.message_field] = question
    return chosen.name, row


# ---------------------------------------------------------------------------------------------- the readers
def read_conversations(path: str | Path, fmt: str, *, media_root: str | Path | None = None, task: str | None = None,
                       task_options: Mapping[str, Mapping[str, Any]] | None = None,
                       media_dir: str | Path | None = None) -> tuple[dict[str, list[dict[str, Any]]], RowReport]:
    """A conversation file -> ({task: rows}, report): the training data source. Media paths resolve under
    `media_root` (default: the file's folder); data: URLs are written to `media_dir` when given, else kept as bytes.
    Every record or turn left out is in `report.skipped` as ("file:record reply n", reason)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise InputError("format", fmt, f"expected one of {sorted(FORMATS)}")
    if not path.is_file():
        raise InputError("conversation file", str(path), "is not a file" if path.exists() else "does not exist")
    root = Path(media_root) if media_root is not None else path.parent
    if not root.is_dir():
        raise InputError("media root", str(root), "is not a directory")
    policy = MediaPolicy(root, MAX_MEDIA_BYTES)
    override = None if task is None else build_tasks([task], {task: (task_options or {}).get(task) or {}})[task]
    report = RowReport(path.name)
    found: dict[str, list[dict[str, Any]]] = {}
    for number, record in read_records(path):
        where = f"{path.name}:{number}"
        try:
            if isinstance(record, InputError):
                raise record
            turns = FORMATS[fmt](record, policy)
        except (Skip, InputError) as exc:
            report.skipped.append(BadRow(where, _reason(exc)))
            continue
        for turn_number, name, row in turn_rows(turns, record, override):
            if name is None:
                report.skipped.append(BadRow(f"{where} reply {turn_number}", row))
                continue
            row["_source"] = f"{where} reply {turn_number}"
            found.setdefault(name, []).append(row)
    tasks = build_tasks(found, {n: o for n, o in (task_options or {}).items() if n in found})
    rows: dict[str, list[dict[str, Any]]] = {}
    for name, task_rows in found.items():  # each row checked by its task, as a data file's rows are
        for row in task_rows:
            try:
                tasks[name].check_row(row)
                tasks[name].media_of(row)
            except InputError as exc:
                report.skipped.append(BadRow(row["_source"], _reason(exc)))
                continue
            if media_dir is not None:
                _write_inline(row, Path(media_dir))
            rows.setdefault(name, []).append(row)
            report.loaded += 1
    report.skipped.sort(key=lambda b: _order(b.source))
    return rows, report


def _order(source: str) -> tuple[int, int]:
    numbers = [int(n) for n in re.findall(r"\d+", source.rsplit(":", 1)[1])]
    return numbers[0], numbers[1] if len(numbers) > 1 else 0


def _reason(exc: Exception) -> str:
    if isinstance(exc, InputError):
        return f"{exc.what}: {exc.reason}"
    return str(exc)


SNIFF = ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"GIF8", ".gif"), (b"RIFF", ".wav"), (b"ID3", ".mp3"),
         (b"\xff\xfb", ".mp3"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"\x1a\x45\xdf\xa3", ".webm"))


def _write_inline(row: dict[str, Any], folder: Path) -> None:
    """Media given inline (bytes) -> files named by their hash in `folder`, so rows hold paths as data files do."""
    for modality in MEDIA:
        value = row.get(modality)
        items = value if isinstance(value, list) else [value]
        if not any(isinstance(i, bytes) for i in items):
            continue
        written = []
        for item in items:
            if isinstance(item, bytes):
                suffix = next((s for magic, s in SNIFF if item.startswith(magic)), None)
                suffix = suffix or (".mp4" if item[4:8] == b"ftyp" else ".bin")
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / (hashlib.sha1(item).hexdigest()[:16] + suffix)
                if not target.exists():
                    target.write_bytes(item)
                item = str(target.resolve())
            written.append(item)
        row[modality] = written if isinstance(value, list) else written[0]


def import_conversations(path: str | Path, fmt: str, out: str | Path, *, media_root: str | Path | None = None,
                         task: str | None = None) -> tuple[dict[str, tuple[Path, int]], RowReport]:
    """`unified data import`: a conversation file -> a data directory `out` ({task}.jsonl, media given inline in
    `out/media/`) and `out/skipped.jsonl`, one line per record or turn left out with its reason. Returns
    ({task: (file, rows)}, report)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, report = read_conversations(path, fmt, media_root=media_root, task=task, media_dir=out / "media")
    files = {}
    for name, task_rows in rows.items():
        files[name] = (out / f"{name}.jsonl", len(task_rows))
        with open(files[name][0], "w", encoding="utf-8") as handle:
            for row in task_rows:
                handle.write(json.dumps({k: v for k, v in row.items() if k != "_source"}) + "\n")
    with open(out / "skipped.jsonl", "w", encoding="utf-8") as handle:
        for bad in report.skipped:
            handle.write(json.dumps({"record": bad.source, "reason": bad.reason}) + "\n")
    return files, report

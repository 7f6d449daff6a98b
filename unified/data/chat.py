"""Chat messages -> rows of a task: the one mapper behind the server's chat endpoint and `unified data import`.

    OpenAI messages (role + content parts) --parse_message--> Turn(role, text, media items)
    chat_row(task, messages, fields, policy)   the server: one user turn (and an optional reply) -> a row of `task`
    unified.data.conversations                 the importer: every assistant turn of a conversation -> a row

    messages = [{"role": "user", "content": [
        {"type": "text", "text": "where is the red circle?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]}]
    chat_row(get_task("grounding"), messages, {}, policy)
    -> ChatTurn(row={"image": b"...", "phrase": "where is the red circle?"}, reply=None)

Content parts: `text`; `image_url`, `video_url` and (an extension) `audio_url`, each {"url": a data: URL or a path
under the media root}; `input_audio` {"data": base64, "format": "wav" | "mp3" | ...}. A message's content may also be
a plain string (one text part). The text goes to the task's `message_field` (vqa's question, grounding's phrase,
text2text's text); the task's other fields (options, labels, inputs) come from `fields`, which a client sends beside
the messages (the official client's `extra_body`).

The server keeps no conversation, so `chat_row` drops nothing silently: a system message, text for a task whose
prompt is fixed (caption), a field given both as text and as a field, a second image, an unknown part type: each
raises `InputError` naming it. The importer reads system messages and earlier turns as context instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from unified.data.sources import AUDIO_FORMATS, MediaPolicy
from unified.errors import InputError

URL_PARTS = {"image_url": "image", "video_url": "video", "audio_url": "audio"}  # part type -> modality
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


class MediaItem(NamedTuple):
    modality: str  # image | video | audio
    source: Any  # bytes (a data: URL, base64 audio) or an absolute path under the media root
    where: str  # the part it came from, for errors ("messages[0].content[1]")
    kind: str  # the part's type ("image_url", "input_audio", "<image>" for a tag in ShareGPT text)


@dataclass
class Turn:
    """One message: its role (user, assistant or system), its text parts joined by spaces, its media in order."""

    role: str
    text: str
    media: list[MediaItem] = field(default_factory=list)


class ChatTurn(NamedTuple):
    """The row built from the user message, and the assistant's reply when the messages end with one."""

    row: dict[str, Any]
    reply: str | None


def parse_message(message: Any, index: int, policy: MediaPolicy) -> Turn:
    """One OpenAI message -> `Turn`; `InputError` names `messages[index]...` for a bad role, part or media item."""
    role = message.get("role") if isinstance(message, Mapping) else None
    if role not in ROLES:
        raise InputError(f"messages[{index}].role", role, f"expected one of {sorted(ROLES)}")
    content = message.get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, Sequence) or isinstance(parts, (str, bytes)):
        raise InputError(f"messages[{index}].content", content, "expected a string or a list of content parts")
    texts: list[str] = []
    media: list[MediaItem] = []
    for number, part in enumerate(parts):
        where = f"messages[{index}].content[{number}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise InputError(f"{where}.text", part.get("text"), "expected a string")
            texts.append(part["text"])
            continue
        if ROLES[role] != "user":
            raise InputError(where, kind, f"{role!r} messages are text; media go in user messages")
        if kind in URL_PARTS:
            modality, body = URL_PARTS[kind], part.get(kind)
            url = body.get("url") if isinstance(body, Mapping) else body
            source = policy.resolve(url, f"{where}.{kind}")
        elif kind == "input_audio":
            modality, body = "audio", part.get("input_audio")
            if not isinstance(body, Mapping):
                raise InputError(f"{where}.input_audio", body, "expected {data: base64, format: wav | mp3}")
            if body.get("format") not in AUDIO_FORMATS:
                raise InputError(f"{where}.input_audio.format", body.get("format"), f"expected one of {AUDIO_FORMATS}")
            source = policy.decode_base64(body.get("data"), f"{where}.input_audio.data")
        else:
            raise InputError(f"{where}.type", kind, f"expected one of {['text', *URL_PARTS, 'input_audio']}")
        media.append(MediaItem(modality, source, where, kind))
    return Turn(ROLES[role], " ".join(t.strip() for t in texts if t.strip()), media)


def chat_row(task: Any, messages: Any, fields: Mapping[str, Any], policy: MediaPolicy) -> ChatTurn:
    """`messages` (one user turn, optionally followed by the assistant's reply) and extra `fields` -> a row of
    `task` (media as bytes or paths, text in `task.message_field`), as `Model.generate` takes them."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise InputError("messages", messages, "expected a non-empty list of {role, content} messages")
    roles = [m.get("role") if isinstance(m, Mapping) else None for m in messages]
    for index, role in enumerate(roles):
        if role not in ROLES:
            raise InputError(f"messages[{index}].role", role, "expected 'user' (and an optional final 'assistant')")
        if ROLES[role] == "system":
            raise InputError(f"messages[{index}]", role, f"this model answers one user turn with {task.name!r}'s "
                             "own prompt, so a system message would be ignored; leave it out")
    reply = None
    if roles[-1] == "assistant":
        reply = parse_message(messages[-1], len(messages) - 1, policy).text
        roles, messages = roles[:-1], messages[:-1]
    if roles != ["user"]:
        raise InputError("messages", roles, "expected exactly one user message (one turn; this model keeps no "
                         "conversation)")
    turn = parse_message(messages[0], 0, policy)
    row: dict[str, Any] = {}
    for item in turn.media:
        if item.modality in row:
            raise InputError(item.where, item.kind, f"a second {item.modality}: one {item.modality} per request "
                             "(send several requests; the server batches them)")
        row[item.modality] = item.source
    if turn.text:
        field_ = task.message_field
        if field_ is None:
            raise InputError("messages[0].content", turn.text[:80], f"task {task.name!r} takes no text from the "
                             f"message (its prompt is fixed: {task.prompts[0]!r}; its fields "
                             f"{sorted(task.input_fields)} go beside the messages); send only the media")
        row[field_] = turn.text
    for key, value in fields.items():
        if key in row:
            raise InputError(key, value, f"given twice: as a field and in the message (the message's text fills "
                             f"{task.message_field!r})")
        row[key] = value
    return ChatTurn(row, reply)

"""OpenAI chat messages -> one row of a task: the mapper the server uses, and the one an importer of OpenAI-format
data uses too (it gets the assistant's reply back as well).

    messages = [{"role": "user", "content": [
        {"type": "text", "text": "where is the red circle?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]}]
    chat_row(get_task("grounding"), messages, {}, policy)
    -> ChatTurn(row={"image": b"...", "phrase": "where is the red circle?"}, reply=None)

Content parts: `text`; `image_url`, `video_url` and (an extension) `audio_url`, each {"url": a data: URL or a path
under the media root}; `input_audio` {"data": base64, "format": "wav" | "mp3" | ...}. A message's content may also be
a plain string (one text part). The text goes to the task's `message_field` (vqa's question, grounding's phrase,
text2text's text); the task's other fields (options, labels, inputs) come from `fields`, which a client sends beside
the messages (the official client's `extra_body`). One item per modality.

Nothing sent is dropped: a system message, text for a task whose prompt is fixed (caption), a field given both as
text and as a field, a second image, an unknown part type: each raises `InputError` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from unified.errors import InputError
from unified.serving.sources import AUDIO_FORMATS, MediaPolicy

URL_PARTS = {"image_url": "image", "video_url": "video", "audio_url": "audio"}  # part type -> modality


class ChatTurn(NamedTuple):
    """The row built from the user message, and the assistant's reply when the messages end with one."""

    row: dict[str, Any]
    reply: str | None


def chat_row(task: Any, messages: Any, fields: Mapping[str, Any], policy: MediaPolicy) -> ChatTurn:
    """`messages` (one user turn, optionally followed by the assistant's reply) and extra `fields` -> a row of
    `task` (media as bytes or paths, text in `task.message_field`), as `Model.generate` takes them."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise InputError("messages", messages, "expected a non-empty list of {role, content} messages")
    roles = [m.get("role") if isinstance(m, Mapping) else None for m in messages]
    for index, (message, role) in enumerate(zip(messages, roles)):
        if role not in ("user", "assistant", "system", "developer"):
            raise InputError(f"messages[{index}].role", role, "expected 'user' (and an optional final 'assistant')")
        if role in ("system", "developer"):
            raise InputError(f"messages[{index}]", role, f"this model answers one user turn with {task.name!r}'s "
                             "own prompt, so a system message would be ignored; leave it out")
    reply = None
    if roles[-1] == "assistant":
        reply = _text_of(messages[-1], len(messages) - 1)
        roles, messages = roles[:-1], messages[:-1]
    if roles != ["user"]:
        raise InputError("messages", roles, "expected exactly one user message (one turn; this model keeps no "
                         "conversation)")
    row = _user_row(task, messages[0], policy)
    for key, value in fields.items():
        if key in row:
            raise InputError(key, value, f"given twice: as a field and in the message (the message's text fills "
                             f"{task.message_field!r})")
        row[key] = value
    return ChatTurn(row, reply)


def _user_row(task: Any, message: Mapping[str, Any], policy: MediaPolicy) -> dict[str, Any]:
    content = message.get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, Sequence) or isinstance(parts, (str, bytes)):
        raise InputError("messages[0].content", content, "expected a string or a list of content parts")
    row: dict[str, Any] = {}
    texts: list[str] = []
    for index, part in enumerate(parts):
        where = f"messages[0].content[{index}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise InputError(f"{where}.text", part.get("text"), "expected a string")
            texts.append(part["text"])
            continue
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
        if modality in row:
            raise InputError(where, kind, f"a second {modality}: one {modality} per request (send several "
                             "requests; the server batches them)")
        row[modality] = source
    text = " ".join(t.strip() for t in texts if t.strip())
    if text:
        field = task.message_field
        if field is None:
            raise InputError("messages[0].content", text[:80], f"task {task.name!r} takes no text from the message "
                             f"(its prompt is fixed: {task.prompts[0]!r}; its fields {sorted(task.input_fields)} go "
                             "beside the messages); send only the media")
        row[field] = text
    return row


def _text_of(message: Mapping[str, Any], index: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and all(isinstance(p, Mapping) and p.get("type") == "text" for p in content):
        return " ".join(str(p.get("text", "")) for p in content)
    raise InputError(f"messages[{index}].content", content, "an assistant reply is text")

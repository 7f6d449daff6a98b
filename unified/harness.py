"""An evaluation harness's requests -> `Model.generate` / `Model.loglikelihood`: what the lmms-eval adapter
(`unified.lmms_eval`) calls, written without lmms-eval so that it is tested here.

    request (lmms-eval's `Instance.args`)                                  answered by
    generate_until  (context, gen_kwargs, doc_to_visual, doc_id, task, split)   `generate_until`: one text each
    loglikelihood   (context, continuation, doc_to_visual, doc_id, task, split) `loglikelihood`: (nll, greedy) each

`docs[task][split][doc_id]` is the document; `doc_to_visual(doc)` gives its visuals as the harness passes them: PIL
images, file paths (a video, or an image or audio file by its suffix) and audio as {"array", "sampling_rate"}
(HF datasets' Audio feature). They become `image=`, `video=`, `audio=` (+ `source_rate`); one item per modality.

Which of our tasks answers: the `task` given (`--model_args task=vqa`) or, without one, the rule
`unified data import` applies to a conversation turn (`unified.data.conversations`): options (lettered lines
`A. ...` in the context, or a multiple-choice request) -> the multiple-choice task taking those media; media and a
request for a description -> `caption`; media and a question -> `vqa`; no media -> `text2text`.

- generate_until: the context fills the task's `message_field` (vqa's question; a caption's prompt is fixed, so its
  context is not read). A context with lettered options is asked as multiple choice and answered with the letter
  of the chosen option, as the harness's multiple-choice prompts ask. `until` cuts the answer at its first stop
  string; `max_new_tokens` caps it.
- loglikelihood: the requests of one document (one per choice, in order) are scored together: for a task that
  takes options, the continuations are its options (listed in its prompt, as in training), each scored as the
  answer the task writes for it (the option's text in rank mode, its label otherwise); for any other task each
  continuation is scored as the answer to the context. Each gets (mean negative log-likelihood per token, greedy):
  lmms-eval's convention (its multiple-choice `acc` takes the argmin, as its built-in models return a mean loss),
  so its pick is the option ranked multiple choice picks.
  A task whose media need audio (audio_video_mcqa) given only a video file reads that file's soundtrack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from unified.data.conversations import Skip, pick_task, split_options, turn_kind
from unified.errors import InputError
from unified.task_zoo import build_tasks
from unified.task_zoo.base import MODALITIES

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".m4a", ".opus"}
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# (context, gen_kwargs or continuation, doc_to_visual, doc_id, task, split)
Request = tuple[str, Any, Callable[[Any], Any], Any, str, str]
Docs = Mapping[str, Mapping[str, Sequence[Any]]]


def media_inputs(visuals: Any) -> dict[str, Any]:
    """The harness's visuals for one document -> `Model.generate`'s media keywords (and `source_rate` for audio
    samples). InputError names a visual of no known kind or a second one of the same modality."""
    items = [] if visuals is None else list(visuals) if isinstance(visuals, (list, tuple)) else [visuals]
    out: dict[str, Any] = {}
    for index, item in enumerate(items):
        if item is None:
            continue
        modality, value, rate = _modality(item, index)
        if modality in out:
            raise InputError(f"visuals[{index}]", _short(item), f"a second {modality}: this model reads one "
                             f"{modality} per request")
        out[modality] = value
        if rate is not None:
            out["source_rate"] = rate
    return out


def _modality(item: Any, index: int) -> tuple[str, Any, int | None]:
    if isinstance(item, Mapping):
        if "array" not in item or "sampling_rate" not in item:
            raise InputError(f"visuals[{index}]", sorted(item), "a dict visual is audio: expected "
                             "{'array', 'sampling_rate'}")
        return "audio", np.asarray(item["array"], dtype=np.float32), int(item["sampling_rate"])
    if isinstance(item, (str, Path)):
        suffix = Path(item).suffix.lower()
        kind = "image" if suffix in IMAGE_SUFFIXES else "audio" if suffix in AUDIO_SUFFIXES else "video"
        return kind, str(item), None
    if type(item).__module__.startswith("PIL."):
        return "image", item, None
    raise InputError(f"visuals[{index}]", _short(item), "expected a PIL image, a file path or an audio dict "
                     "{'array', 'sampling_rate'}")


def _short(item: Any) -> str:
    return repr(item)[:80]


def answering_task(model: Any, given: str | None, kind: str, media: Mapping[str, Any]) -> Any:
    """The task that answers, with the options `model` was trained with: `given`, or the import rule's pick for a
    turn of `kind` with these media."""
    name = given
    if name is None:
        try:
            name = pick_task(kind, _modalities(media)).name
        except Skip as exc:
            raise InputError("task", None, f"none given (model_args task=...), and by the rule: {exc}") from None
    return build_tasks([name], {name: model.task_options.get(name, {})}, model.processor.tokenizer.layout)[name]


def _modalities(media: Mapping[str, Any]) -> set[str]:
    return {m for m in MODALITIES if m in media}


def _with_soundtrack(task: Any, media: dict[str, Any]) -> dict[str, Any]:
    # the harness passes a video task's clip as one path; its soundtrack is the audio a task requiring audio reads
    if "audio" in task.requires and "audio" not in media and isinstance(media.get("video"), str):
        return {**media, "audio": media["video"]}
    return media


def _visuals(request: Request, docs: Docs) -> dict[str, Any]:
    _, _, doc_to_visual, doc_id, task, split = request
    return media_inputs(doc_to_visual(docs[task][split][doc_id]) if doc_to_visual is not None else None)


class _Asked(NamedTuple):
    """One generate_until request made ready for `Model.generate`."""

    task: Any
    media: dict[str, Any]
    fields: dict[str, Any]
    options: list[str]  # the lettered options of the context (answered by letter), or []
    limit: int | None
    until: Any


def _asked(model: Any, request: Request, docs: Docs, task: str | None) -> _Asked:
    context, gen_kwargs = request[0], dict(request[1] or {})
    media = _visuals(request, docs)
    question, options = split_options(context)
    chosen = answering_task(model, task, turn_kind(question, _modalities(media), bool(options)), media)
    fields: dict[str, Any] = {}
    if "options" in chosen.row_fields:
        if not options:
            raise InputError("context", context[:80], f"task {chosen.name!r} needs options: the context lists "
                             "none as lines 'A. ...', 'B. ...'")
        fields = {"question": question, "options": options}
    elif chosen.message_field is not None:
        fields = {chosen.message_field: context}
    limit = gen_kwargs.get("max_new_tokens")
    return _Asked(chosen, _with_soundtrack(chosen, media), fields, options if "options" in fields else [],
                  int(limit) if limit else None, gen_kwargs.get("until"))


def generate_until(model: Any, requests: Sequence[Request], docs: Docs, *, task: str | None = None,
                   allow_untrained: bool = False, batch_size: int = 1) -> list[str]:
    """One answer text per generate_until request (module docstring). Requests asking the same task with the
    same kinds of media and limits go to `Model.generate` up to `batch_size` at a time (a batch of media)."""
    asked = [_asked(model, request, docs, task) for request in requests]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, a in enumerate(asked):
        key = (a.task.name, tuple(sorted(a.media)), a.media.get("source_rate"), a.limit, tuple(sorted(a.fields)))
        groups.setdefault(key, []).append(index)
    answers: list[Any] = [None] * len(asked)
    for indices in groups.values():
        step = batch_size if _modalities(asked[indices[0]].media) else 1  # a batch is a list of media
        for start in range(0, len(indices), step):
            chunk = [asked[i] for i in indices[start:start + step]]
            first = chunk[0]
            if len(chunk) == 1:
                inputs = {**first.media, **first.fields}
            else:  # lists of media make a batch; each field one value per item
                inputs = {k: [a.media[k] for a in chunk] for k in first.media if k != "source_rate"}
                inputs.update({k: [a.fields[k] for a in chunk] for k in first.fields})
                if "source_rate" in first.media:
                    inputs["source_rate"] = first.media["source_rate"]
            said = model.generate(task=first.task.name, **inputs, max_new_tokens=first.limit,
                                  allow_untrained=allow_untrained)
            for i, answer in zip(indices[start:start + step], said if len(chunk) > 1 else [said]):
                answers[i] = _text(asked[i], answer)
    return answers


def _text(asked: _Asked, answer: Any) -> str:
    if asked.options:  # the letter of the chosen option, as the context lettered them
        text = LETTERS[asked.options.index(answer)] if answer in asked.options else ""
    else:
        value = asked.task.answer_json(answer, asked.fields)["value"]
        text = value if isinstance(value, str) else str(value)
    return _cut(text, asked.until)


def _cut(text: str, until: Any) -> str:
    stops = [until] if isinstance(until, str) else list(until or [])
    for stop in stops:
        if stop and stop in text:
            text = text[:text.index(stop)]
    return text


def loglikelihood(model: Any, requests: Sequence[Request], docs: Docs, *, task: str | None = None,
                  allow_untrained: bool = False) -> list[tuple[float, bool]]:
    """(mean negative log-likelihood per token, greedy) per loglikelihood request (module docstring)."""
    groups: dict[tuple[Any, ...], list[int]] = {}  # one document's choices, scored together
    for index, (context, _, _, doc_id, task_name, split) in enumerate(requests):
        groups.setdefault((task_name, split, doc_id, context), []).append(index)
    out: list[tuple[float, bool] | None] = [None] * len(requests)
    for (_, _, _, context), indices in groups.items():
        media = _visuals(requests[indices[0]], docs)
        answers = [str(requests[i][1]).strip() for i in indices]
        question, _ = split_options(context)
        chosen = answering_task(model, task, turn_kind(question, _modalities(media), len(answers) > 1),
                                media)
        fields: dict[str, Any] = {}
        texts = answers
        if "options" in chosen.row_fields:
            fields = {"question": question, "options": answers}
            texts = chosen.choices(fields)  # the option texts (rank mode), or the labels the decoder writes
        elif chosen.message_field is not None:
            fields = {chosen.message_field: context}
        scored = model.loglikelihood(chosen.name, texts, **_with_soundtrack(chosen, media), **fields,
                                     allow_untrained=allow_untrained)
        for i, s in zip(indices, scored):
            out[i] = (-s.logprob / s.tokens, s.greedy)
    return [x for x in out if x is not None]

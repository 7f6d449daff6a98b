"""From rows to typed predictions: each task's output grammar becomes a decoding constraint, and the generated text
goes through the task's `parse`.

    grammar     the decoder may write                         tokens
    text        text: no media, location, value, int or       up to `max_new_tokens`
                time token (nor pad)
    loc         location tokens only                          exactly `task.answer_length(row)` (a box: 4)
    time        time tokens only                              exactly `task.answer_length(row)` (a span: 2)
    val         value tokens only                             exactly `task.answer_length(row)`
    int         integer tokens, then eos                      up to `task.answer_length(row)` (default 4)
    options     one of `task.choices(row)`                    a choice, then eos
    embedding   nothing: the embedding head answers           -

For loc / time / val, `task.allowed_bins(row)` may narrow the bins (regress: its row's `value_range`) and
`task.increasing` orders them: grounding's (2, 0), (3, 1) keep x1 < x2 and y1 < y2, temporal grounding's (1, 0)
keeps start < end. Location bins span the image and time bins the clip, so boxes stay inside the image and spans
inside the clip by construction.

How a task answers is its `answer_mode`: "generate" (the table above), "rank" (each of `task.choices(row)` scored
by likelihood) or "embed".

Rows whose constraints differ (three options vs four, two values vs one) are generated in separate groups, so every
row gets exactly its own grammar.

    >>> predict(get_task("grounding"), model, processor, rows)     # [Box(...), Box(...), ...]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from unified.errors import InputError
from unified.heads.multiple_choice import score_options
from unified.model.adapters import select_adapter
from unified.model.generation import (
    AllowedTokensLogitsProcessor,
    BinsLogitsProcessor,
    TextOnlyLogitsProcessor,
)
from unified.task_zoo.batching import task_batch, text_batch, to_device
from unified.task_zoo.metrics import get_metric, rank_candidates
from unified.task_zoo.protocol import ANSWER_MODES, FIXED_LENGTH


def bin_ids(grammar: str, tokenizer: Any) -> range:
    """The token ids of a fixed-length grammar's bins ("loc", "time" or "val")."""
    return {"loc": tokenizer.loc_ids, "time": tokenizer.time_ids, "val": tokenizer.val_ids}[grammar]


def constraint(task: Any, row: Mapping[str, Any], tokenizer: Any, max_new_tokens: int | None = None
               ) -> tuple[tuple, dict[str, Any]]:
    """(group key, `generate` keyword arguments) for one row under its task's grammar. A "text" answer is capped at
    `max_new_tokens`, or the task's own `max_new_tokens` when that is None."""
    grammar, eos = task.grammar, tokenizer.eos_token_id
    if grammar == "text":
        # pad is closed; bos is not, since some backbones (BART) force it as the first answer token
        closed = {tokenizer.pad_token_id} - {eos, None}
        text_only = TextOnlyLogitsProcessor(tokenizer.first_non_text_id, closed)
        limit = task.max_new_tokens if max_new_tokens is None else max_new_tokens
        return ("text",), {"max_new_tokens": limit, "logits_processor": [text_only]}
    if grammar in FIXED_LENGTH:
        ids = bin_ids(grammar, tokenizer)
        count, bins = task.answer_length(row), task.allowed_bins(row)
        processor = BinsLogitsProcessor(ids, bins=bins, increasing=task.increasing)
        return (grammar, count, bins), {"max_new_tokens": count, "min_new_tokens": count,
                                        "logits_processor": [processor]}
    if grammar == "int":
        processor = AllowedTokensLogitsProcessor([*tokenizer.int_ids, eos])
        longest = task.answer_length(row)
        return ("int", longest), {"max_new_tokens": longest, "logits_processor": [processor]}
    if grammar == "options":
        options = task.choices(row)
        sequences = [tokenizer.encode(o) for o in options]
        if len({tuple(s) for s in sequences}) < len(sequences):
            raise InputError(f"{task.name} choices", options, "two of them encode to the same tokens in this "
                             "vocabulary (characters it lacks become <unk>); train the tokenizer on them")
        processor = AllowedTokensLogitsProcessor(sequences=sequences, eos_token_id=eos)
        longest = max(len(s) for s in sequences) + 1
        return ("options", tuple(options)), {"max_new_tokens": longest, "logits_processor": [processor]}
    raise InputError(f"task {task.name!r} grammar", grammar, "has no decoding constraint (its answer_mode is "
                     f"{task.answer_mode!r})")


def _groups(keys: Sequence[tuple]) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return groups


@torch.no_grad()
def generate_texts(task: Any, model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], *,
                   batch_size: int = 16, max_new_tokens: int | None = None, num_beams: int = 1,
                   on_batch: Callable[[int], None] | None = None, distributions: list | None = None) -> list[str]:
    """Rows -> generated text per row, each under its grammar (rows grouped by constraint, batched). Given a list as
    `distributions`, it is filled with each row's (steps, bins) probabilities over its grammar's bins at every step
    of the greedy answer (loc / time / val grammars), for `Task.parse_distribution`."""
    tokenizer, device = processor.tokenizer, next(model.parameters()).device
    select_adapter(model, task.name)
    keyed = [constraint(task, row, tokenizer, max_new_tokens) for row in rows]
    texts: list[str] = [""] * len(rows)
    if distributions is not None:
        distributions[:] = [None] * len(rows)
        bins = bin_ids(task.grammar, tokenizer) if task.grammar in FIXED_LENGTH else None
        if bins is None or num_beams != 1:
            raise InputError(f"task {task.name!r} distributions", task.grammar, "read only from greedy decoding "
                             "under a loc / time / val grammar")
    for indices in _groups([key for key, _ in keyed]).values():
        kwargs = keyed[indices[0]][1]
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            batch = to_device(task_batch(task, [rows[i] for i in chunk], processor, with_target=False), device)
            batch.pop("labels", None)
            if distributions is None:
                out = model.generate(**batch, num_beams=num_beams, do_sample=False, **kwargs)
            else:
                result = model.generate(**batch, num_beams=1, do_sample=False, output_scores=True,
                                        return_dict_in_generate=True, **kwargs)
                out = result.sequences
                probs = torch.stack(result.scores, dim=1).float().softmax(-1)[..., bins.start:bins.stop]  # (B, T, n)
                for i, row_probs in zip(chunk, probs.cpu()):
                    distributions[i] = row_probs
            for i, ids in zip(chunk, out.tolist()):
                texts[i] = tokenizer.decode(ids)
            if on_batch:
                on_batch(len(chunk))
    return texts


@torch.no_grad()
def rank_options(task: Any, model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], *,
                 on_batch: Callable[[int], None] | None = None) -> list[str]:
    """Multiple choice by likelihood: each option text scored as the target (mean log-probability per token)."""
    device = next(model.parameters()).device
    select_adapter(model, task.name)
    answers = []
    for row in rows:
        options = task.choices(row)
        example = {**task.to_example(row, rng=None, with_target=False).as_processor_input(), "task": task.name}
        batch = processor([{**example, "target": option} for option in options])
        out = model(**to_device(batch, device))
        scores = score_options(out.logits, batch["labels"].to(device))  # (n_options,)
        answers.append(options[int(scores.argmax())])
        if on_batch:
            on_batch(1)
    return answers


@torch.no_grad()
def embed_rows(task: Any, model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], *, batch_size: int = 16,
               text_side: bool = False) -> torch.Tensor:
    """Rows of an "embed" task -> (N, E) unit embeddings of their media side (`to_example`) or, with
    `text_side=True`, of their pair side (`pair_example`)."""
    device = next(model.parameters()).device
    select_adapter(model, task.name)
    parts = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        batch = text_batch(task, chunk, processor) if text_side else task_batch(task, chunk, processor,
                                                                                with_target=False)
        batch.pop("labels", None)
        parts.append(model(**to_device(batch, device), return_embeddings=True).float().cpu())
    return torch.cat(parts)


def predict(task: Any, model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> list[Any]:
    """Typed predictions for rows of one task (str, Box, (start, end), floats, an option, an embedding), as the
    task's `answer_mode` says."""
    mode = task.answer_mode
    if mode not in ANSWER_MODES:
        raise InputError(f"task {task.name!r} answer_mode", mode, f"expected one of {ANSWER_MODES}")
    if mode == "embed":
        return list(embed_rows(task, model, processor, rows, batch_size=kwargs.get("batch_size", 16)))
    if mode == "rank":
        texts = rank_options(task, model, processor, rows, on_batch=kwargs.get("on_batch"))
    elif task.reads_distribution:  # the answer read from the bin probabilities (regress's decode: mean / median)
        found: list = []
        texts = generate_texts(task, model, processor, rows, distributions=found, **kwargs)
        return [task.parse_distribution(text, probs, row) for text, probs, row in zip(texts, found, rows)]
    else:
        texts = generate_texts(task, model, processor, rows, **kwargs)
    return [task.parse(text, row) for text, row in zip(texts, rows)]


def pair_metrics(task: Any, model: Any, processor: Any, rows: Sequence[Mapping[str, Any]],
                 batch_size: int) -> dict[str, float]:
    """An "embed" task's metrics: each row ranks every distinct pair text of the split (`task.pair_example`); it is
    right when the top candidates include its own pair or one of a row with the same `task.truth` (retrieval: the
    same `group`). Identical texts are one candidate: two clips captioned "a red circle moves left." have the same
    right answer, and listing the text twice would tie the two and score only the first."""
    candidates, index, keys = [], {}, []  # one row per distinct pair text
    for row in rows:
        key = task.pair_example(row).text
        keys.append(key)
        if key not in index:
            index[key] = len(candidates)
            candidates.append(row)
    in_group: dict[Any, set[int]] = {}
    for row, key in zip(rows, keys):
        in_group.setdefault(task.truth(row), set()).add(index[key])
    media = embed_rows(task, model, processor, rows, batch_size=batch_size)  # (N, E)
    texts = embed_rows(task, model, processor, candidates, batch_size=batch_size, text_side=True)  # (C, E)
    ranked = rank_candidates(media @ texts.T)
    truths = [in_group[task.truth(row)] for row in rows]
    return {name: float(get_metric(name)(ranked, truths)) for name in task.metrics}

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

Given `items` (each row already through the processor, `encode_row`), no media are decoded here: a server or a
DataLoader decodes ahead in other threads or processes. Given a list as `details`, it is filled with one dict per
row: `score`, the answer's mean token log-probability under the model's own distribution (what a forward pass with
the answer as labels gives; in "rank" mode the chosen option's length-normalised log-likelihood; None for
embeddings), `prompt_tokens`, `answer_tokens` and `stopped` (False when a free answer reached its token limit).

    >>> predict(get_task("grounding"), model, processor, rows)     # [Box(...), Box(...), ...]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from unified.errors import InputError
from unified.heads.multiple_choice import score_options
from unified.model.adapters import select_adapter
from unified.model.generation import (
    AllowedTokensLogitsProcessor,
    BinsLogitsProcessor,
    TextOnlyLogitsProcessor,
)
from unified.task_zoo.batching import process_row, task_batch, text_batch, to_device
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


def encode_row(task: Any, row: Mapping[str, Any], processor: Any, *, text_side: bool = False) -> dict[str, Any]:
    """One row at inference through the processor (its media decoded): an item `predict(..., items=...)` collates.
    `text_side`: a contrastive task's pair side (`Task.pair_example`)."""
    example = task.pair_example(row) if text_side else task.example(row, rng=None, with_target=False)
    return process_row(processor, task, example, row)


def _batch(task: Any, rows: Sequence[Mapping[str, Any]], processor: Any, items: Sequence[Any] | None,
           indices: Sequence[int], device: Any) -> dict[str, torch.Tensor]:
    if items is None:
        batch = task_batch(task, [rows[i] for i in indices], processor, with_target=False)
    else:
        batch = processor.collate([items[i] for i in indices])
    batch.pop("labels", None)
    return to_device(batch, device)


def answer_logprobs(logits: Sequence[torch.Tensor], tokens: torch.Tensor, eos: int | None, fixed: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean log-probability, count) of each row's answer tokens: `logits` one raw (B, V) tensor per step,
    `tokens` (B, steps) the ids written. A free answer ends at its first eos (counted); later steps are padding."""
    logp = F.log_softmax(torch.stack(list(logits), dim=1).float(), dim=-1)  # (B, steps, V)
    picked = logp.gather(-1, tokens[..., None]).squeeze(-1)  # (B, steps)
    valid = torch.ones_like(tokens, dtype=torch.bool)
    if not fixed and eos is not None:
        ended = (tokens == eos).long().cumsum(1)  # (B, steps): 1 from the first eos on
        valid = (ended == 0) | ((ended == 1) & (tokens == eos))
    count = valid.sum(1)
    return (picked * valid).sum(1) / count.clamp_min(1), count


def _groups(keys: Sequence[tuple]) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return groups


@torch.no_grad()
def generate_texts(task: Any, model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], *,
                   batch_size: int = 16, max_new_tokens: int | Sequence[int | None] | None = None,
                   num_beams: int = 1, on_batch: Callable[[int], None] | None = None,
                   distributions: list | None = None, items: Sequence[Any] | None = None,
                   details: list | None = None, streamer: Callable[[list[int]], Any] | None = None) -> list[str]:
    """Rows -> generated text per row, each under its grammar (rows grouped by constraint, batched). Given a list as
    `distributions`, it is filled with each row's (steps, bins) probabilities over its grammar's bins at every step
    of the greedy answer (loc / time / val grammars), for `Task.parse_distribution`. `max_new_tokens` may be one
    limit per row (rows with different limits are generated apart). `items`, `details`: see the module docstring.
    `streamer(indices)` gives a transformers streamer for the batch of those rows (or None)."""
    tokenizer, device = processor.tokenizer, next(model.parameters()).device
    select_adapter(model, task.name)
    limits = (list(max_new_tokens) if isinstance(max_new_tokens, Sequence) else [max_new_tokens] * len(rows))
    keyed = [constraint(task, row, tokenizer, limit) for row, limit in zip(rows, limits)]
    keys = [(*key, kwargs["max_new_tokens"]) if task.grammar == "text" else key for key, kwargs in keyed]
    texts: list[str] = [""] * len(rows)
    if details is not None:
        details[:] = [None] * len(rows)
        if num_beams != 1:
            raise InputError(f"task {task.name!r} num_beams", num_beams, "answer scores are read from greedy "
                             "decoding (num_beams=1)")
    if distributions is not None:
        distributions[:] = [None] * len(rows)
        bins = bin_ids(task.grammar, tokenizer) if task.grammar in FIXED_LENGTH else None
        if bins is None or num_beams != 1:
            raise InputError(f"task {task.name!r} distributions", task.grammar, "read only from greedy decoding "
                             "under a loc / time / val grammar")
    for indices in _groups(keys).values():
        kwargs = keyed[indices[0]][1]
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            batch = _batch(task, rows, processor, items, chunk, device)
            extra = {} if streamer is None else {"streamer": streamer(chunk)}
            if distributions is None and details is None:
                out = model.generate(**batch, num_beams=num_beams, do_sample=False, **extra, **kwargs)
            else:
                result = model.generate(**batch, num_beams=1, do_sample=False, output_scores=distributions is not None,
                                        output_logits=details is not None, return_dict_in_generate=True,
                                        **extra, **kwargs)
                out = result.sequences
                if distributions is not None:
                    probs = torch.stack(result.scores, dim=1).float().softmax(-1)[..., bins.start:bins.stop]
                    for i, row_probs in zip(chunk, probs.cpu()):  # (T, n) per row
                        distributions[i] = row_probs
                if details is not None:
                    steps = len(result.logits)
                    score, count = answer_logprobs(result.logits, out[:, -steps:], tokenizer.eos_token_id,
                                                   task.grammar in FIXED_LENGTH)
                    prompt = batch["attention_mask"].sum(1)
                    ended = (out[:, -steps:] == tokenizer.eos_token_id).any(1) | (task.grammar in FIXED_LENGTH)
                    for j, i in enumerate(chunk):
                        details[i] = {"score": float(score[j]), "prompt_tokens": int(prompt[j]),
                                      "answer_tokens": int(count[j]), "stopped": bool(ended[j])}
            for i, ids in zip(chunk, out.tolist()):
                texts[i] = tokenizer.decode(ids)
            if on_batch:
                on_batch(len(chunk))
    return texts


def option_labels(tokenizer: Any, options: Sequence[str]) -> torch.Tensor:
    """Each option's target tokens (as the processor writes a target: eos added), padded with -100: (N, Lt)."""
    rows = [torch.tensor(tokenizer.encode(o, add_eos=True)) for o in options]
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=-100)


def _repeat(value: Any, n: int) -> Any:
    """A one-row tensor seen n times along the batch (a view, no copy); anything else as it is."""
    return value.expand(n, *value.shape[1:]) if isinstance(value, torch.Tensor) and value.dim() else value


def score_row_options(model: Any, batch: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """One prompt (a batch of one row, no labels) against N options' labels (N, Lt) -> (N,) scores
    (`score_options`)."""
    return score_options(option_logits(model, batch, labels), labels)  # (N,)


def option_logits(model: Any, batch: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """One prompt (a batch of one row, no labels) against N answers' labels (N, Lt) -> the decoder's logits
    (N, Lt, V) for each answer. The prompt and its media go through the encoder once; the decoder then reads that
    one encoder output for every answer, so an answer costs a decoder pass and nothing more."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    encoded = model.get_encoder()(**inputs, return_dict=True)  # (1, L', D) and what the decoder needs with it
    n = labels.shape[0]
    for field in ("last_hidden_state", "attention_mask", "media", "media_keep", "segment_ids", "media_segment_ids"):
        if getattr(encoded, field, None) is not None:
            setattr(encoded, field, _repeat(getattr(encoded, field), n))
    encoded.hidden_states = encoded.attentions = None
    out = model(encoder_outputs=encoded, attention_mask=_repeat(inputs["attention_mask"], n), labels=labels,
                use_cache=False)
    return out.logits  # (N, Lt, V)


@torch.no_grad()
def answer_likelihoods(task: Any, model: Any, processor: Any, row: Mapping[str, Any], answers: Sequence[str]
                       ) -> list[tuple[float, int, bool]]:
    """Each of `answers` as the decoder's text for one row (eos added, as a target is written): (the sum of its
    tokens' log-probabilities, its token count, whether greedy decoding without a grammar would write exactly
    it). The row's prompt and media are encoded once (`option_logits`)."""
    device = next(model.parameters()).device
    select_adapter(model, task.name)
    batch = _batch(task, [row], processor, None, [0], device)
    labels = option_labels(processor.tokenizer, answers).to(device)  # (N, Lt)
    logits = option_logits(model, batch, labels).float()  # (N, Lt, V)
    valid = labels != -100  # (N, Lt)
    picked = F.log_softmax(logits, dim=-1).gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1)  # (N, Lt)
    greedy = ((logits.argmax(-1) == labels) | ~valid).all(dim=1)  # (N,)
    return [(float((p * v).sum()), int(v.sum()), bool(g)) for p, v, g in zip(picked, valid, greedy)]


@torch.no_grad()
def rank_options(task: Any, model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], *,
                 on_batch: Callable[[int], None] | None = None, items: Sequence[Any] | None = None,
                 details: list | None = None) -> list[str]:
    """Multiple choice by likelihood: each option text scored as the target (mean log-probability per token).
    Each row's prompt and media are processed and encoded once, whatever the number of options
    (`score_row_options`); with `items` (the rows processed without a target) nothing is decoded here."""

    device, tokenizer = next(model.parameters()).device, processor.tokenizer
    select_adapter(model, task.name)
    answers = []
    for index, row in enumerate(rows):
        options = task.choices(row)
        batch = _batch(task, rows, processor, items, [index], device)
        labels = option_labels(tokenizer, options).to(device)  # (N, Lt)
        scores = score_row_options(model, batch, labels)  # (N,)
        best = int(scores.argmax())
        answers.append(options[best])
        if details is not None:
            details.append({"score": float(scores[best]), "prompt_tokens": int(batch["attention_mask"][0].sum()),
                            "answer_tokens": int((labels[best] != -100).sum()), "stopped": True})
        if on_batch:
            on_batch(1)
    return answers


@torch.no_grad()
def embed_rows(task: Any, model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], *, batch_size: int = 16,
               text_side: bool = False, items: Sequence[Any] | None = None) -> torch.Tensor:
    """Rows of an "embed" task -> (N, E) unit embeddings of their media side (`to_example`) or, with
    `text_side=True`, of their pair side (`pair_example`); `items`: the rows already encoded (`encode_row`)."""
    device = next(model.parameters()).device
    select_adapter(model, task.name)
    parts = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        if items is not None:
            batch = processor.collate(list(items[start:start + batch_size]))
        else:
            batch = text_batch(task, chunk, processor) if text_side else task_batch(task, chunk, processor,
                                                                                    with_target=False)
        batch.pop("labels", None)
        parts.append(model(**to_device(batch, device), return_embeddings=True).float().cpu())
    return torch.cat(parts)


def predict(task: Any, model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], *,
            details: list | None = None, **kwargs: Any) -> list[Any]:
    """Typed predictions for rows of one task (str, Box, (start, end), floats, an option, an embedding), as the
    task's `answer_mode` says. `details`, `items` (keyword arguments): see the module docstring."""
    mode = task.answer_mode
    if mode not in ANSWER_MODES:
        raise InputError(f"task {task.name!r} answer_mode", mode, f"expected one of {ANSWER_MODES}")
    if details is not None:
        details.clear()
    if mode == "embed":
        vectors = list(embed_rows(task, model, processor, rows, batch_size=kwargs.get("batch_size", 16),
                                  items=kwargs.get("items")))
        if details is not None:
            details.extend({"score": None, "prompt_tokens": 0, "answer_tokens": 0, "stopped": True} for _ in rows)
        return vectors
    if mode == "rank":
        texts = rank_options(task, model, processor, rows, on_batch=kwargs.get("on_batch"), items=kwargs.get("items"),
                             details=details)
    elif task.reads_distribution:  # the answer read from the bin probabilities (regress's decode: mean / median)
        found: list = []
        texts = generate_texts(task, model, processor, rows, distributions=found, details=details, **kwargs)
        return [task.parse_distribution(text, probs, row) for text, probs, row in zip(texts, found, rows)]
    else:
        texts = generate_texts(task, model, processor, rows, details=details, **kwargs)
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

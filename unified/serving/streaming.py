"""Streaming a batch: a transformers streamer that hands each row's new text to that row's own sink.

    generate(...) --put((B,) new ids) each step--> BatchStreamer --decode per row--> sink_i("new text")

transformers' own streamers take one row; this one takes the batch, so streamed requests still share a batched
call. A row's text is decoded whole at every step and only its new tail is sent (a SentencePiece piece can change
how the text before it reads, so a tail is sent only once the text so far is settled). A row stops at its eos.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


class BatchStreamer:
    """`put` / `end` as transformers calls them; `sinks[i]` (None: not streamed) gets row i's new text."""

    def __init__(self, tokenizer: Any, sinks: Sequence[Callable[[str], None] | None]):
        self.tokenizer, self.sinks = tokenizer, list(sinks)
        self.ids: list[list[int]] = [[] for _ in self.sinks]
        self.sent = [""] * len(self.sinks)
        self.done = [sink is None for sink in self.sinks]
        self.started = False

    def put(self, value: torch.Tensor) -> None:
        if not self.started:  # the first call carries the decoder's start tokens
            self.started = True
            return
        for i, token in enumerate(value.reshape(-1).tolist()[: len(self.sinks)]):
            if self.done[i]:
                continue
            if token == self.tokenizer.eos_token_id:
                self.done[i] = True
                continue
            self.ids[i].append(token)
            self._send(i, final=False)

    def end(self) -> None:
        for i, sink in enumerate(self.sinks):
            if sink is not None:
                self._send(i, final=True)
                self.done[i] = True

    def _send(self, i: int, final: bool) -> None:
        text = self.tokenizer.decode(self.ids[i])
        if not final:
            text = text[: len(text.rstrip())]  # a trailing space may belong to the next piece
        if text.startswith(self.sent[i]) and len(text) > len(self.sent[i]):
            self.sinks[i](text[len(self.sent[i]):])
            self.sent[i] = text

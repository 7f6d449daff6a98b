"""`masked_frames`: masked frame modelling over unlabelled video (the QQ-browser winner's MFM, NCE over the batch's
frames), with no new weights: each clip is encoded with one of its frames taken out (its pixels zeroed and masked),
each taken-out frame is encoded alone, both through the encoder and the embedding head, and symmetric InfoNCE pulls
a clip towards its own missing frame and away from the batch's other missing frames. Evaluated by how often a clip
picks its own missing frame among the batch's (`frame_recall_at_1`; chance is 1 / batch size).

The frame taken out is drawn from the clip's real frames in training and is the middle one in evaluation.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from unified.errors import InputError
from unified.heads.embedding import info_nce
from unified.task_zoo.base import Task
from unified.task_zoo.batching import task_batch, to_device
from unified.task_zoo.metrics import get_metric
from unified.task_zoo.registry import register_task

FRAME_KEYS = ("pixel_values", "pixel_mask", "frame_times", "frame_time_ids")  # (B, M, T, ...) tensors


@register_task("masked_frames")
class MaskedFrames(Task):
    accepts = frozenset({"video"})
    requires = frozenset({"video"})
    prompts = ("which frame is missing?",)
    grammar = "text"
    metrics = ("frame_recall_at_1",)
    example_row = {"video": "clips/train_00001.mp4"}
    own_loss = True
    max_new_tokens = 1

    def target(self, row: Mapping[str, Any]) -> str:
        return ""  # nothing to write: the loss is InfoNCE between embeddings (`loss`)

    def parse(self, text: str, row: Mapping[str, Any]) -> str:
        return text

    def truth(self, row: Mapping[str, Any]) -> str:
        return ""

    def loss_batch(self, rows: Sequence[Mapping[str, Any]], processor: Any, rng: random.Random | None
                   ) -> dict[str, Any]:
        """{"context_*": the clips with one frame out, "frame_*": that frame alone} (the processor's keys)."""
        batch = task_batch(self, rows, processor, rng=rng, with_target=False)
        mask = batch["pixel_mask"][:, 0]  # (B, T): the first (only) video of each row
        taken = []
        for b, row_mask in enumerate(mask):
            real = row_mask.nonzero().flatten().tolist()
            if len(real) < 2:
                raise InputError(f"{self.name} video", rows[b].get("_source", rows[b].get("video")),
                                 f"has {len(real)} frame(s) at this fps; taking one out needs at least 2")
            taken.append(rng.choice(real) if rng is not None else real[len(real) // 2])
        index = torch.arange(len(rows))
        context = {k: v.clone() if k in FRAME_KEYS else v for k, v in batch.items()}
        context["pixel_values"][index, 0, taken] = 0
        context["pixel_mask"][index, 0, taken] = False
        frame = dict(batch)
        for key in FRAME_KEYS:  # (B, 1, 1, ...): the taken frame as a one-frame clip
            frame[key] = batch[key][index, 0, taken][:, None, None]
        frame["pixel_mask"] = torch.ones_like(frame["pixel_mask"])
        return {**{f"context_{k}": v for k, v in context.items()}, **{f"frame_{k}": v for k, v in frame.items()}}

    def loss(self, model: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        context, frame = _embeddings(model, batch)
        core = getattr(model, "module", model)  # DDP/accelerate wrap the model; the temperature lives on it
        return info_nce(context, frame, core.embed_head.temperature)

    def evaluate(self, model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], *, batch_size: int = 16,
                 max_new_tokens: int | None = None, progress: Any = None) -> tuple[dict[str, float], dict[str, Any]]:
        """Each clip (its middle frame out) ranks the missing frames of its batch of `batch_size` rows."""
        device = next(model.parameters()).device
        picked, own = [], []
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start:start + batch_size]
                context, frame = _embeddings(model, to_device(self.loss_batch(chunk, processor, None), device))
                picked += (context @ frame.T).argmax(dim=1).tolist()
                own += list(range(len(chunk)))
                if progress is not None:
                    progress.update(len(chunk))
        return {"frame_recall_at_1": float(get_metric("frame_recall_at_1")(picked, own))}, {}

    def show_row(self, row: Mapping[str, Any]) -> tuple[str, str]:
        return "(which frame is missing?)", "(its own)"


def _embeddings(model: Any, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    context = {k.removeprefix("context_"): v for k, v in batch.items() if k.startswith("context_")}
    frame = {k.removeprefix("frame_"): v for k, v in batch.items() if k.startswith("frame_")}
    return model(**context, return_embeddings=True), model(**frame, return_embeddings=True)  # (B, E) each

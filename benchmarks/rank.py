"""Multiple choice in "rank" mode: the prompt and its media encoded once per question, against once per option.

    python benchmarks/rank.py [--repeats 9] [--model DIR] [--threads 1]

On the built-in default model (or `--model`) and the packaged sample clip, a `video_mcqa` question with 4 and with 8
options, timed in one process (median of `--repeats`, after a warm-up):

    per option   today's former path: the row's processed item copied once per option, the batch of copies through
                 the whole model (encoder, media included, once per option), as `rank_options` did before
    once         `score_row_options`: the encoder once, its output read by the decoder for every option
    predict      the same through `predict(...)` from the row (media decoding included), against the per-option
                 path that also processed the row once per option

and checks that both give the same scores (to 1e-4) and so the same answer.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from unified.heads.multiple_choice import score_options
from unified.task_zoo import get_task
from unified.task_zoo.decoding import encode_row, option_labels, predict, score_row_options

WORDS = ("left right up down one two three four red blue green yellow circle square triangle star five six seven "
         "eight").split()


def per_option(model, processor, item: dict, options: list[str]) -> torch.Tensor:
    """The former path: each option's labels added to a copy of the row's item; the copies through the model."""
    tokenizer = processor.tokenizer
    batch = processor.collate([{**item, "labels": torch.tensor(tokenizer.encode(o, add_eos=True))} for o in options])
    return score_options(model(**batch).logits, batch["labels"])


def per_option_from_row(task, model, processor, row: dict) -> torch.Tensor:
    """The former path from the row: the example processed (media decoded) once per option."""
    example = {**task.to_example(row, rng=None, with_target=False).as_processor_input(), "task": task.name}
    batch = processor([{**example, "target": option} for option in task.choices(row)])
    return score_options(model(**batch).logits, batch["labels"])


def timed(before: Callable[[], object], after: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of each, run alternately (a busy machine slows both alike), after a warm-up."""
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(repeats + 1):
        for fn, spent in zip((before, after), times):
            start = time.perf_counter()
            fn()
            if i:
                spent.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    from unified.api import DEFAULT_MODEL_DIR, Model
    from unified.samples import CLIP

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = Model.from_pretrained(args.model)
    network, processor = model.network.eval(), model.processor
    task = get_task("video_mcqa", mode="rank", labels=tuple("ABCDEFGH"))  # 8 labels: up to 8 options
    print(f"| rank mode, {args.model.rsplit('/', 1)[-1]}, sample clip | options | per option (ms) | once (ms) | "
          "ratio | predict from the row: per option / once (ms) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for n in (4, 8):
        row = {"video": str(CLIP), "question": "which way does the shape move?",
               "options": WORDS[:n]}
        item = encode_row(task, row, processor)
        labels = option_labels(processor.tokenizer, row["options"])
        batch = processor.collate([item])
        with torch.no_grad():
            old = per_option(network, processor, item, row["options"])
            new = score_row_options(network, batch, labels)
            if not torch.allclose(old, new, atol=1e-4):
                raise SystemExit(f"scores differ: {old.tolist()} vs {new.tolist()}")
            before, after = timed(lambda: per_option(network, processor, item, row["options"]),
                                  lambda: score_row_options(network, batch, labels), args.repeats)
            row_before, row_after = timed(lambda: per_option_from_row(task, network, processor, row),
                                          lambda: predict(task, network, processor, [row]), args.repeats)
        print(f"| | {n} | {before * 1e3:.1f} | {after * 1e3:.1f} | {before / after:.1f}x | "
              f"{row_before * 1e3:.1f} / {row_after * 1e3:.1f} | {row_before / row_after:.1f}x |")


if __name__ == "__main__":
    main()

"""The training loss's cross-entropy: over (B L, V) rows against the (B, V, L) view of a transpose.

    .venv/bin/python benchmarks/cross_entropy.py [--batch 16] [--length 32] [--vocab 32128] [--repeats 9]

`unified.model.ordinal.token_cross_entropy` (what every training step computes) against `F.cross_entropy` over the
transposed logits, the same tensors, one thread, alternated, median of `--repeats`: forward alone and forward +
backward, and each one's largest error against a float64 log-softmax.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unified.model.ordinal import token_cross_entropy


def transposed(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")  # (B, L)


def timed(fn, logits: torch.Tensor, labels: torch.Tensor, backward: bool) -> float:
    x = logits.detach().requires_grad_(backward)
    start = time.perf_counter()
    out = fn(x, labels)
    if backward:
        out.sum().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=32128)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    logits = torch.randn(args.batch, args.length, args.vocab) * 3  # (B, L, V)
    labels = torch.randint(0, args.vocab, (args.batch, args.length))
    labels[:, -4:] = -100  # padding, as a batch has
    ours = lambda x, y: token_cross_entropy(x, y, reduction="none")  # noqa: E731
    truth = -logits.double().log_softmax(-1).gather(-1, labels.clamp_min(0)[..., None])[..., 0] * (labels != -100)
    for name, fn in (("ours", ours), ("transposed", transposed)):
        print(f"{name:<10} largest error vs float64: {float((fn(logits, labels).double() - truth).abs().max()):.2e}")
    for backward in (False, True):
        times = {"ours": [], "transposed": []}
        for _ in range(args.repeats):
            for name, fn in (("ours", ours), ("transposed", transposed)):
                times[name].append(timed(fn, logits, labels, backward))
        a, b = (1000 * statistics.median(times[k]) for k in ("ours", "transposed"))
        what = "forward + backward" if backward else "forward"
        print(f"{what:<19} ours {a:.1f} ms, transposed {b:.1f} ms: {b / a:.2f}x faster")


if __name__ == "__main__":
    main()

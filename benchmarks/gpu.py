"""The GPU run: every GPU row of the results page from one script (under 8 minutes on one H100 / A100).

    python benchmarks/gpu.py                 # CUDA, bf16: the rows below
    python benchmarks/gpu.py --smoke         # the same code on the CPU in fp32 with tiny models (< 1 minute)

For two models, the `base` preset and a T5-base-sized pretrained backbone (d_model 768, 12 + 12 layers, random
weights saved and loaded as a checkpoint would be), each row with `--frames` video frames per example:

    train step    one AdamW step (forward, backward, update), ms; real (non-padding) tokens per second
    generate      greedy, `--new-tokens` tokens with the KV cache, ms
    attention     sdpa and xformers: the logits' largest difference against sdpa, and both timings
    packing       the same examples unpacked (one a row) and packed to a token budget: real tokens per second
    compile       `torch.compile` on and off (train step); off in --smoke, where compiling alone takes minutes
    FLOP/s        6 x parameters x real tokens per train step over its time, as a fraction of a bf16 matmul
                  measured in the same process (goal >= 40 %)
    memory        peak accelerator memory of the train step (GiB)

Timings are medians over `--repeats` after a warm-up; CUDA is synchronised around each. Without xformers installed
(or on the CPU) the xformers rows run its SDPA fallback and say so.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from unified.model import UnifiedConfig, UnifiedModel
from unified.model.attention import xformers_available
from unified.training.packing import item_need, pack_items, pack_to_budget

VIDEO, PAD, EOS = 50, 0, 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], repeats: int, device: torch.device, warm: bool = True) -> float:
    """Median seconds of `fn` after one warm-up call (`warm`)."""
    if warm:
        fn()
        sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_flops(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    """FLOP/s of one (size x size) @ (size x size) matmul in `dtype`: the peak the model is measured against."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    seconds = timed(lambda: a @ b, repeats, device)
    return 2 * size ** 3 / seconds


def examples(n: int, frames: int, size: int, vocab: int, seed: int = 0) -> list[dict]:
    """`n` processed examples (as `UnifiedProcessor.process` gives them): a video placeholder, 8-40 prompt tokens,
    2-16 target tokens; one clip of `frames` frames at `size` px each."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        prompt = int(torch.randint(8, 41, (1,), generator=g))
        target = int(torch.randint(2, 17, (1,), generator=g))
        ids = torch.cat([torch.tensor([VIDEO]), torch.randint(60, vocab, (prompt - 1,), generator=g)])
        labels = torch.cat([torch.randint(60, vocab, (target - 1,), generator=g), torch.tensor([EOS])])
        out.append({"input_ids": ids, "labels": labels, "pixel_values": [torch.randn(frames, 3, size, size,
                                                                                    generator=g)],
                    "frame_times": [torch.arange(frames, dtype=torch.float)], "frame_time_ids": [
                        torch.zeros(frames, dtype=torch.long)], "audio_features": []})
    return out


def collate(items: list[dict], frames: int, size: int) -> dict[str, torch.Tensor]:
    """Pad processed (or packed) examples into a batch (pad 0, -100 labels), as the processor's collate does."""
    pad = torch.nn.utils.rnn.pad_sequence
    batch = {"input_ids": pad([it["input_ids"] for it in items], batch_first=True, padding_value=PAD),
             "labels": pad([it["labels"] for it in items], batch_first=True, padding_value=-100)}
    lengths = torch.tensor([len(it["input_ids"]) for it in items])
    batch["attention_mask"] = (torch.arange(batch["input_ids"].shape[1])[None] < lengths[:, None]).long()
    if "segment_ids" in items[0]:
        for key in ("segment_ids", "decoder_segment_ids"):
            batch[key] = pad([it[key] for it in items], batch_first=True)
    slots = max(len(it["pixel_values"]) for it in items)
    batch["pixel_values"] = torch.zeros(len(items), slots, frames, 3, size, size)
    batch["pixel_mask"] = torch.zeros(len(items), slots, frames, dtype=torch.bool)
    batch["frame_times"] = torch.zeros(len(items), slots, frames)
    for b, it in enumerate(items):
        for m, clip in enumerate(it["pixel_values"]):
            batch["pixel_values"][b, m] = clip
            batch["pixel_mask"][b, m] = True
            batch["frame_times"][b, m] = it["frame_times"][m]
    return batch


def real_tokens(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["attention_mask"].sum()) + int((batch["labels"] != -100).sum())


def build(kind: str, smoke: bool, frames: int, folder: Path) -> UnifiedModel:
    """The `base` preset, or our model on a T5-base-sized pretrained backbone (both tiny in --smoke)."""
    from transformers import T5Config, T5ForConditionalGeneration

    vision = {"max_frames": max(16, frames)}
    if kind == "base":
        preset = "tiny" if smoke else "base"
        return UnifiedModel(UnifiedConfig.preset(preset, text={"vocab_size": 512 if smoke else 32128,
                                                               "video_token_id": VIDEO}, vision=vision))
    sizes = (dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4) if smoke else
             dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12))
    T5ForConditionalGeneration(T5Config(vocab_size=512 if smoke else 32128, feed_forward_proj="gated-gelu",
                                        tie_word_embeddings=False, decoder_start_token_id=0,
                                        **sizes)).save_pretrained(folder)
    config = UnifiedConfig.preset("tiny" if smoke else "base", text={"pretrained_path": str(folder),
                                                                     "video_token_id": VIDEO}, vision=vision)
    return UnifiedModel.from_pretrained_parts(config)


def rows_for(kind: str, args, device: torch.device, dtype: torch.dtype, peak: float, folder: Path) -> None:
    torch.manual_seed(0)
    model = build(kind, args.smoke, args.frames, folder).to(device)
    vocab = model.config.text.vocab_size
    size = model.config.vision.image_size
    params = sum(p.numel() for p in model.parameters())
    items = examples(args.batch * (2 if args.smoke else 4), args.frames, size, vocab)
    plain = {k: v.to(device) for k, v in collate(items[:args.batch], args.frames, size).items()}
    print(f"| {kind} ({params / 1e6:.1f} M parameters), {args.frames} frames of {size} px, batch {args.batch} |"
          " | | |", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step(batch):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    warm = not args.smoke
    inputs = {k: v for k, v in plain.items() if k != "labels"}
    logits = {}
    model.eval()
    for impl in ("sdpa", "xformers"):  # parity first, on the same weights (training steps change them)
        model.set_attn_implementation(impl)
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits[impl] = model(**plain).logits.float()
    results = {}
    for impl in ("sdpa", "xformers"):
        model.set_attn_implementation(impl)
        model.train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = timed(lambda: step(plain), args.repeats, device, warm)
        memory = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            generate = timed(lambda: model.generate(**inputs, max_new_tokens=args.new_tokens, do_sample=False),
                             args.repeats, device, warm)
        results[impl] = (seconds, generate, logits[impl], memory)
    runs = "" if xformers_available() else " (SDPA fallback: no xformers or no CUDA)"
    base_step, base_gen, base_logits, memory = results["sdpa"]
    flops = 6 * params * real_tokens(plain) / base_step
    print(f"| train step, sdpa | {base_step * 1e3:.1f} ms | {real_tokens(plain) / base_step:.0f} real tokens/s | "
          f"peak memory {memory:.2f} GiB |")
    print(f"| FLOP/s (6 x parameters x real tokens) | {flops / 1e12:.4f} TFLOP/s | {100 * flops / peak:.1f} % of "
          f"the matmul's {peak / 1e12:.4f} TFLOP/s | goal >= 40 % |")
    print(f"| generate {args.new_tokens} tokens, sdpa | {base_gen * 1e3:.1f} ms | | |")
    x_step, x_gen, x_logits, _ = results["xformers"]
    diff = float((x_logits - base_logits).abs().max())
    print(f"| xformers{runs}: train step / generate | {x_step * 1e3:.1f} / {x_gen * 1e3:.1f} ms | "
          f"{base_step / x_step:.2f}x / {base_gen / x_gen:.2f}x vs sdpa | logits max diff {diff:.2e} |")
    model.set_attn_implementation("sdpa")
    model.train()
    pack = model.lm is None or model.lm.config.model_type in ("t5", "mt5", "bart")
    if pack:  # the same examples one to a row, then packed to a budget (half the longest prompt and target x 4)
        unpacked = [{k: v.to(device) for k, v in collate(items[i:i + args.batch], args.frames, size).items()}
                    for i in range(0, len(items), args.batch)]
        limits = (4 * 40, 4 * 16, 4, 4)
        packs = pack_to_budget([item_need(it) for it in items], limits)
        packed_items = pack_items(items, packs)
        for it in packed_items:
            it.pop("members")
        packed = [{k: v.to(device) for k, v in collate(packed_items[i:i + args.batch], args.frames, size).items()}
                  for i in range(0, len(packed_items), args.batch)]
        tokens = sum(real_tokens(b) for b in unpacked)
        before = timed(lambda: [step(b) for b in unpacked], max(1, args.repeats // 2), device, warm)
        after = timed(lambda: [step(b) for b in packed], max(1, args.repeats // 2), device, warm)
        print(f"| packing ({len(items)} examples: {len(unpacked)} batches unpacked, {len(packed)} packed) | "
              f"{tokens / after:.0f} real tokens/s packed | {tokens / before:.0f} unpacked | "
              f"{before / after:.2f}x |")
    if args.smoke:
        print("| torch.compile | skipped in --smoke | | |")
    else:
        compiled = torch.compile(model)

        def compiled_step():
            with torch.autocast(device.type, dtype=dtype):
                loss = compiled(**plain).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        seconds = timed(compiled_step, args.repeats, device)
        print(f"| torch.compile train step | {seconds * 1e3:.1f} ms | {base_step / seconds:.2f}x vs eager | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, fp32, tiny models: the code path in < 1 minute")
    parser.add_argument("--frames", type=int, default=None, help="video frames per example (16; 2 in --smoke)")
    parser.add_argument("--batch", type=int, default=None, help="examples per batch (8; 2 in --smoke)")
    parser.add_argument("--new-tokens", type=int, default=None, help="generated tokens (32; 4 in --smoke)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per row (5; 1 in --smoke)")
    parser.add_argument("--models", nargs="+", default=["base", "t5-base"], choices=["base", "t5-base"])
    args = parser.parse_args()
    smoke = args.smoke
    args.frames = args.frames or (2 if smoke else 16)
    args.batch = args.batch or (2 if smoke else 8)
    args.new_tokens = args.new_tokens or (4 if smoke else 32)
    args.repeats = args.repeats or (1 if smoke else 5)
    if not smoke and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs CUDA; --smoke runs the same code on the CPU")
    device = torch.device("cpu" if smoke else "cuda")
    dtype = torch.float32 if smoke else torch.bfloat16
    warnings.filterwarnings("ignore", message=".*xformers.*unavailable.*")
    peak = matmul_flops(device, dtype, 256 if smoke else 8192, args.repeats)
    print(f"| {'CPU smoke' if smoke else torch.cuda.get_device_name(device)}, {str(dtype).split('.')[-1]} | "
          f"matmul {peak / 1e12:.4f} TFLOP/s | | |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models:
            rows_for(kind, args, device, dtype, peak, Path(tmp) / kind)
            if device.type == "cuda":  # the model of that row is gone: its memory back for the next
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

"""Packing several rows into one encoder and one decoder sequence: each packed row's per-token log-probabilities
equal the row's own alone (block-diagonal attention, decoder inputs restarted per row), the loss equals the
unpacked batch's, hand-checked masks and shifts, and packing refused where it cannot be exact."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
from task_rows import task_rows, tiny_stack, write_media

from unified.errors import InputError
from unified.model import UnifiedConfig, UnifiedModel
from unified.model.segments import segment_mask, segment_positions, shift_right_segments
from unified.task_zoo import build_tasks
from unified.task_zoo.batching import process_row
from unified.training.batches import prepare
from unified.training.loss import prepared_mixed_loss
from unified.training.packing import pack_items

SMOKE = Path(__file__).parents[1] / "training" / "configs" / "tiny-smoke.yaml"
TASKS = ("vqa", "caption", "audio_video_mcqa", "text2text", "video_mcqa", "grounding")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    rows = task_rows(write_media(tmp_path_factory.mktemp("media")))
    tokenizer, processor, _ = tiny_stack()
    config = UnifiedConfig.preset("tiny", text={"vocab_size": tokenizer.vocab_size,
                                                "image_token_id": tokenizer.image_token_id,
                                                "video_token_id": tokenizer.video_token_id,
                                                "audio_token_id": tokenizer.audio_token_id},
                                  fusion={"mode": "concat"}, resampler={"mode": "pool3d", "pool_frames": 2,
                                                                        "pool_hw": 2})
    torch.manual_seed(0)
    model = UnifiedModel(config).eval()
    named = [(name, row) for name in TASKS for row in rows[name][:3]]  # 8-frame clips, an image, audio, text
    return rows, processor, model, named


def _config(model, fusion, resampler) -> UnifiedConfig:
    t = model.config.text
    return UnifiedConfig.preset("tiny", text={"vocab_size": t.vocab_size, "image_token_id": t.image_token_id,
                                              "video_token_id": t.video_token_id, "audio_token_id": t.audio_token_id},
                                fusion=fusion, resampler=resampler)


def test_a_packed_row_scores_each_example_as_alone(setup):
    _, processor, model, named = setup
    tasks = build_tasks(list(TASKS))
    items = [process_row(processor, tasks[n], tasks[n].to_example(r, rng=random.Random(0)), r) for n, r in named]
    packed = pack_items(items)
    assert len(packed) < len(items) and sorted(i for p in packed for i in p["members"]) == list(range(len(items)))
    for p in packed:  # no dimension grows past the longest example's
        assert len(p["input_ids"]) <= max(len(it["input_ids"]) for it in items)
        assert len(p["labels"]) <= max(len(it["labels"]) for it in items)
        assert len(p["pixel_values"]) <= max(len(it["pixel_values"]) for it in items)
    batch = processor.collate(packed)
    with torch.no_grad():
        logp = model(**batch).logits.log_softmax(-1)  # (B, Lt, V)
        worst = 0.0
        for b, p in enumerate(packed):
            for k, i in enumerate(p["members"]):
                alone = model(**processor.collate([items[i]])).logits.log_softmax(-1)[0]
                mine = batch["decoder_segment_ids"][b] == k + 1
                worst = max(worst, float((logp[b][mine] - alone[: int(mine.sum())]).abs().max()))
        assert worst < 1e-5, worst
        plain = model(**processor.collate(items)).loss
        assert float(model(**batch).loss) == pytest.approx(float(plain), abs=1e-5)


@pytest.mark.parametrize("fusion", [{"mode": "xattn"}, {"mode": "xattn", "in_decoder": True},
                                    {"mode": "xattn", "media_attention": "all"}, {"mode": "both"},
                                    {"mode": "both", "in_decoder": True, "media_attention": "all"}],
                         ids=["xattn", "xattn-in-decoder", "xattn-all", "both", "both-in-decoder-all"])
def test_gated_cross_attention_sees_only_its_own_examples_media(setup, fusion):
    """Packed under gated cross-attention (gates open: 0.5), each example's tokens attend to its own media only,
    in the encoder and, with in_decoder, in the decoder, and under "both" the latents spliced into the sequence too
    ("all": every token would otherwise see every example's media): per-token log-probabilities equal each
    example's alone."""
    _, processor, model, named = setup
    torch.manual_seed(0)
    xattn = UnifiedModel(_config(model, {**fusion, "gate_init": 0.5}, {"mode": "global"})).eval()
    tasks = build_tasks(list(TASKS))
    chosen = [named[i] for i in (0, 1, 3, 5, 4)]  # vqa on a clip, on an image; audio caption; text; clip + audio
    items = [process_row(processor, tasks[n], tasks[n].to_example(r, rng=random.Random(0)), r) for n, r in chosen]
    packed = pack_items(items, [[0, 3, 1], [2, 4]])  # two media items in one row, text before and after them
    batch = processor.collate(packed)
    with torch.no_grad():
        logp = xattn(**batch).logits.log_softmax(-1)
        for b, p in enumerate(packed):
            for k, i in enumerate(p["members"]):
                alone = xattn(**processor.collate([items[i]])).logits.log_softmax(-1)[0]
                mine = batch["decoder_segment_ids"][b] == k + 1
                assert float((logp[b][mine] - alone[: int(mine.sum())]).abs().max()) < 1e-5


def test_a_packed_mixed_batch_weighs_each_token_by_its_rows_task(setup):
    """The training loss of a mixed batch, packed and not: the same total (loss weights per task) and per-task
    parts, so packing changes the work, not the objective."""
    _, processor, model, named = setup
    tasks = build_tasks(list(TASKS))
    weights = {"vqa": 2.0, "caption": 0.5}
    plain = prepare(tasks, processor, named, random.Random(0))
    packed = prepare(tasks, processor, named, random.Random(0), pack=True)
    assert packed.batch["input_ids"].shape[0] < plain.batch["input_ids"].shape[0]
    with torch.no_grad():
        a, parts_a = prepared_mixed_loss(tasks, plain, model, "cpu", weights)
        b, parts_b = prepared_mixed_loss(tasks, packed, model, "cpu", weights)
    assert float(a) == pytest.approx(float(b), abs=1e-5)
    assert parts_a.keys() == parts_b.keys() and all(parts_a[k] == pytest.approx(parts_b[k], abs=1e-5)
                                                    for k in parts_a)


def test_segment_masks_and_shifts_by_hand():
    seg = torch.tensor([[1, 1, 2, 0]])
    assert segment_mask(seg, seg)[0, 0].tolist() == [[True, True, False, False], [True, True, False, False],
                                                      [False, False, True, False], [False, False, False, False]]
    labels = torch.tensor([[10, 11, 20, 21, 22, -100]])
    dseg = torch.tensor([[1, 1, 2, 2, 2, 0]])
    assert shift_right_segments(labels, dseg, start=0, pad=0).tolist() == [[0, 10, 0, 20, 21, 0]]
    assert segment_positions(dseg).tolist() == [[0, 1, 0, 1, 2, 0]]  # BART's learned positions, per example


def test_packing_is_refused_where_it_cannot_be_exact(setup):
    """Rows without targets cannot be packed, and a packed batch must carry both segment ids and the labels."""
    rows, processor, model, _ = setup
    vqa = build_tasks(["vqa"])["vqa"]
    items = [process_row(processor, vqa, vqa.to_example(r), r) for r in rows["vqa"][:2]]
    with pytest.raises(InputError, match="examples without targets"):
        pack_items([{k: v for k, v in items[0].items() if k != "labels"}])
    batch = processor.collate(pack_items(items))
    with pytest.raises(InputError, match="segment_ids"):
        model(**{k: v for k, v in batch.items() if k != "decoder_segment_ids"})
    with pytest.raises(InputError, match="segment_ids"):
        model(**{k: v for k, v in batch.items() if k != "labels"})


def test_a_run_packs_mixed_batches_to_a_token_budget(tmp_path):
    from unified.data.synthetic import write_split
    from unified.training import load_config, train

    write_split(tmp_path / "train", 12, seed=0, split="train", progress=False)
    cfg = load_config(SMOKE, [f"output_dir={tmp_path / 'run'}", f"data.train_dir={tmp_path / 'train'}",
                              "data.synthetic=null", "data.pack=true", "tokenizer.text_vocab_size=200",
                              "data.pack_length=64", "data.pack_target_length=24", "optim.batch_size=2",
                              "model.fusion={mode: concat}",
                              "model.resampler={mode: pool3d, pool_frames: 4, pool_hw: 2}",
                              "model.audio={resampler: pool}", "mixture.mixed_batches=true", "optim.max_steps=4",
                              "checkpoint.every=100", "data.num_workers=1"])
    summary = train(cfg, progress=False)
    losses = [t["last_loss"] for t in summary["tasks"].values() if t["last_loss"] is not None]
    assert summary["steps"] == 4 and len(losses) >= 3 and all(math.isfinite(x) for x in losses)


def _example(ids, labels, frames, seed):
    g = torch.Generator().manual_seed(seed)
    clips = [torch.randn(frames, 3, 32, 32, generator=g)] if frames else []
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "pixel_values": clips,
            "frame_times": [torch.arange(frames, dtype=torch.float)] if frames else [],
            "frame_time_ids": [torch.zeros(frames, dtype=torch.long)] if frames else [], "audio_features": []}


def _collate(items) -> dict:
    """Processed examples padded into a batch by hand (pad id 0, one frame size, no audio)."""
    batch = {"input_ids": torch.nn.utils.rnn.pad_sequence([it["input_ids"] for it in items], batch_first=True),
             "labels": torch.nn.utils.rnn.pad_sequence([it["labels"] for it in items], True, -100)}
    batch["attention_mask"] = (torch.arange(batch["input_ids"].shape[1])[None]
                               < torch.tensor([len(it["input_ids"]) for it in items])[:, None]).long()
    for key in ("segment_ids", "decoder_segment_ids"):
        if key in items[0]:
            batch[key] = torch.nn.utils.rnn.pad_sequence([it[key] for it in items], batch_first=True)
    slots, frames = max(len(it["pixel_values"]) for it in items), 3
    if slots:
        batch["pixel_values"] = torch.zeros(len(items), slots, frames, 3, 32, 32)
        batch["pixel_mask"] = torch.zeros(len(items), slots, frames, dtype=torch.bool)
        batch["frame_times"] = torch.zeros(len(items), slots, frames)
        for b, it in enumerate(items):
            for m, clip in enumerate(it["pixel_values"]):
                batch["pixel_values"][b, m, :len(clip)] = clip
                batch["pixel_mask"][b, m, :len(clip)] = True
                batch["frame_times"][b, m, :len(clip)] = it["frame_times"][m]
    return batch


def _tiny_backbone(family: str):
    """A tiny random transformers encoder-decoder of that family; Gemma's sliding window (2) is shorter than the
    examples, so a window drawn over the whole row instead of inside each example would show."""
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        MT5Config,
        MT5ForConditionalGeneration,
        T5Config,
        T5ForConditionalGeneration,
        T5Gemma2Config,
        T5Gemma2ForConditionalGeneration,
        T5GemmaConfig,
        T5GemmaForConditionalGeneration,
        UMT5Config,
        UMT5ForConditionalGeneration,
    )
    from transformers.models.t5gemma2.configuration_t5gemma2 import T5Gemma2DecoderConfig, T5Gemma2EncoderConfig

    sizes = {"vocab_size": 99, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4,
             "decoder_start_token_id": 0, "relative_attention_num_buckets": 8}
    gemma = {"vocab_size": 99, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "sliding_window": 2,
             "layer_types": ["sliding_attention", "full_attention"]}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 16}
    return {"t5": lambda: T5ForConditionalGeneration(T5Config(**sizes)),
            "mt5": lambda: MT5ForConditionalGeneration(MT5Config(**sizes)),
            "umt5": lambda: UMT5ForConditionalGeneration(UMT5Config(**sizes)),
            "bart": lambda: BartForConditionalGeneration(BartConfig(  # learned positions, restarted per example
                vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)),
            "t5gemma": lambda: T5GemmaForConditionalGeneration(T5GemmaConfig(encoder=gemma, decoder=gemma,
                                                                             vocab_size=99)),
            "t5gemma2": lambda: T5Gemma2ForConditionalGeneration(T5Gemma2Config(
                encoder=T5Gemma2EncoderConfig(text_config=gemma, vision_config=vision, mm_tokens_per_image=4),
                decoder=T5Gemma2DecoderConfig(**gemma)))}[family]()


BACKBONE_CASES = {"t5": ["xattn", "concat"], "mt5": ["xattn", "both"], "umt5": ["xattn", "concat"],
                  "bart": ["xattn", "concat", "both"], "t5gemma": ["xattn", "concat", "both"],
                  "t5gemma2": ["xattn", "concat", "both"]}  # every family under both xattn and concat


def test_every_backbone_family_has_a_packing_case():
    from unified.model.backbone import FAMILIES

    assert set(BACKBONE_CASES) == set(FAMILIES)  # packing is never refused: a new family needs its parity case


@pytest.mark.parametrize(("family", "fusion"), [(f, m) for f, modes in BACKBONE_CASES.items() for m in modes])
def test_a_packed_row_on_a_pretrained_backbone_scores_each_example_as_alone(tmp_path, family, fusion):
    """T5, mT5, umT5 (relative positions), BART (learned positions restarted per example) and T5Gemma / T5Gemma 2
    (RoPE positions restarted per example, sliding windows inside each example) packed through ready-made
    block-diagonal 4-D masks and decoder inputs restarted per example: per-token log-probabilities equal each
    example's alone (gates open under xattn and both)."""
    torch.manual_seed(0)
    lm = _tiny_backbone(family)
    lm.save_pretrained(tmp_path)
    config = UnifiedConfig.preset("tiny", text={"pretrained_path": str(tmp_path), "video_token_id": 50},
                                  fusion={"mode": fusion, "gate_init": 0.5})
    # float64, so rounding (up to 6e-8: T5Gemma's softmax runs in float32 whatever the dtype; 1e-5 in a float32
    # model) stays far below the bound and a mask or position gone wrong (1e-2 and more) far above it
    model = UnifiedModel.from_pretrained_parts(config).double().eval()
    items = [_example([50, 20, 21, 22], [40, 41, 1], 3, 0), _example([30, 31, 32], [42, 1], 0, 1),
             _example([50, 33, 34], [43, 44, 45, 1], 2, 2)]
    packed = _collate(pack_items(items, [[0, 1, 2]]))
    with torch.no_grad():
        logp = model(**packed).logits.log_softmax(-1)[0]
        for k, item in enumerate(items):
            alone = model(**_collate([item])).logits.log_softmax(-1)[0]
            mine = packed["decoder_segment_ids"][0] == k + 1
            assert float((logp[mine] - alone).abs().max()) < 1e-6, (k, float((logp[mine] - alone).abs().max()))

"""A mixed batch's loss computes its cross-entropy once: the per-token losses the model returns
(`loss_reduction="none"`) equal plain cross-entropy over its logits, their real-token mean equals the model's own
loss (ours and a pretrained backbone's, where transformers computes it), and `prepared_mixed_loss` equals the
weighted token mean worked out by hand from the logits, packed or not, with one cross-entropy call per batch."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from task_rows import task_rows, tiny_stack, write_media

from unified.errors import InputError
from unified.model import UnifiedConfig, UnifiedModel
from unified.task_zoo import build_tasks
from unified.training.batches import prepare
from unified.training.loss import prepared_mixed_loss

TASKS = ("vqa", "caption", "text2text", "grounding", "clip_text_match")
WEIGHTS = {"vqa": 2.0, "caption": 0.5, "clip_text_match": 3.0}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    rows = task_rows(write_media(tmp_path_factory.mktemp("media")))
    _, processor, model = tiny_stack()
    named = [(name, row) for name in TASKS for row in rows[name][:2]]  # clip_text_match has its own loss
    return processor, model.eval(), named


def _plain_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, Lt): cross-entropy written out (log-softmax and the label's row), 0 on padding."""
    logp = logits.float().log_softmax(-1)
    return -logp.gather(-1, labels.clamp_min(0)[..., None])[..., 0] * (labels != -100)


@pytest.mark.parametrize("pack", [False, True], ids=["rows", "packed"])
def test_a_mixed_batch_equals_its_weighted_token_mean_by_hand(setup, pack):
    processor, model, named = setup
    tasks = build_tasks(list(TASKS))
    prepared = prepare(tasks, processor, named, random.Random(0), pack=pack)
    with torch.no_grad():
        loss, parts = prepared_mixed_loss(tasks, prepared, model, "cpu", WEIGHTS)
        batch = prepared.batch
        labels = batch["labels"]
        token = _plain_token_loss(model(**batch).logits, labels)  # (B, Lt)
        # each target token's task: its row's, or in a packed row its segment's member
        names = prepared.names
        if prepared.packs is None:
            task_of = [[names[b]] * labels.shape[1] for b in range(labels.shape[0])]
        else:
            seg = batch["decoder_segment_ids"]
            task_of = [[names[members[k - 1]] if k > 0 else None for k in seg[b].tolist()]
                       for b, members in enumerate(prepared.packs)]
        real = (labels != -100).tolist()
        total, count, per = 0.0, 0, {}
        for b, row in enumerate(task_of):
            for i, name in enumerate(row):
                if real[b][i]:
                    total += WEIGHTS.get(name, 1.0) * float(token[b, i])
                    count += 1
                    per.setdefault(name, []).append(float(token[b, i]))
        generative = total / count
        own = float(tasks["clip_text_match"].loss(model, prepared.own["clip_text_match"]))
        n_gen, n_own = len(names), prepared.own_rows["clip_text_match"]
        expected = (generative * n_gen + WEIGHTS["clip_text_match"] * own * n_own) / (n_gen + n_own)
    # float32 sums in another order than the float64 ones here: a few units in the last place of losses near 8
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert set(parts) == {*per, "clip_text_match"} and parts["clip_text_match"] == pytest.approx(own, rel=1e-6)
    for name, values in per.items():
        assert parts[name] == pytest.approx(sum(values) / len(values), rel=1e-6)


def test_a_mixed_batch_computes_its_cross_entropy_once(setup, monkeypatch):
    """One `F.cross_entropy` call for the generative rows of a mixed batch (the model's; the mixed loss once
    recomputed it from the logits after the model had computed its mean for nothing)."""
    processor, model, named = setup
    tasks = build_tasks(["vqa", "caption", "text2text"])
    prepared = prepare(tasks, processor, [(n, r) for n, r in named if n in tasks], random.Random(0))
    calls = []
    real = F.cross_entropy
    monkeypatch.setattr(F, "cross_entropy", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        prepared_mixed_loss(tasks, prepared, model, "cpu")
    assert len(calls) == 1


def test_per_token_losses_of_our_backbone(setup):
    processor, model, named = setup
    tasks = build_tasks(["vqa", "caption"])
    batch = prepare(tasks, processor, [(n, r) for n, r in named if n in tasks], random.Random(0)).batch
    with torch.no_grad():
        out = model(**batch, loss_reduction="none")
        labels = batch["labels"]
        assert out.loss.shape == labels.shape
        assert torch.allclose(out.loss, _plain_token_loss(out.logits, labels), atol=1e-6)
        mean = float(out.loss.sum() / (labels != -100).sum())
        assert mean == pytest.approx(float(model(**batch).loss), abs=1e-6)
    with pytest.raises(InputError, match="loss_reduction"):
        model(**batch, loss_reduction="sum")


@pytest.mark.parametrize("family", ["t5", "bart", "t5gemma"])
def test_per_token_losses_of_a_pretrained_backbone(tmp_path, family):
    """The backbone's own mean loss (transformers computes it from the labels) equals the real-token mean of the
    per-token losses, computed by us from the same logits without the backbone's loss."""
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        T5Config,
        T5ForConditionalGeneration,
        T5GemmaConfig,
        T5GemmaForConditionalGeneration,
    )

    torch.manual_seed(0)
    gemma = {"vocab_size": 99, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "sliding_window": 2,
             "layer_types": ["sliding_attention", "full_attention"]}
    lm = {"t5": lambda: T5ForConditionalGeneration(T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=64,
                                                            num_layers=2, num_heads=4, decoder_start_token_id=0)),
          "bart": lambda: BartForConditionalGeneration(BartConfig(
              vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
              decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)),
          "t5gemma": lambda: T5GemmaForConditionalGeneration(T5GemmaConfig(encoder=gemma, decoder=gemma,
                                                                           vocab_size=99))}[family]()
    lm.save_pretrained(tmp_path)
    config = UnifiedConfig.preset("tiny", text={"pretrained_path": str(tmp_path)}, fusion={"mode": "xattn"})
    model = UnifiedModel.from_pretrained_parts(config).eval()
    pad = model.config.text.pad_token_id
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8, 9], [10, 11, pad, pad, pad]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]),
             "labels": torch.tensor([[20, 21, 22, 23], [24, 25, -100, -100]])}
    with torch.no_grad():
        out = model(**batch, loss_reduction="none")
        mean = model(**batch)
    # the positions scored agree (given labels, T5Gemma in eval builds a cache and then masks padded decoder inputs
    # otherwise; training builds none)
    real = batch["labels"] != -100
    assert torch.allclose(out.logits[real], mean.logits[real], atol=1e-6)
    assert torch.allclose(out.loss, _plain_token_loss(out.logits, batch["labels"]), atol=1e-6)
    assert float(out.loss.sum() / 6) == pytest.approx(float(mean.loss), abs=1e-6)

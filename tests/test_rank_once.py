"""Multiple choice in "rank" mode encodes the prompt and its media once and scores every option against that one
encoder output (`score_row_options`). The reference is the per-option path it replaces: one whole forward pass per
option, prompt and media encoded again each time, its log-probabilities summed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_fixtures import EOS, media_batch, tiny_model

from unified.model import UnifiedConfig, UnifiedModel
from unified.task_zoo.decoding import option_labels, score_row_options

OPTIONS = [[40, 41, EOS], [42, EOS], [43, 44, 45, 46, EOS], [47, EOS]]  # four options of different lengths


def _per_option(model, batch, options) -> list[float]:
    """Each option alone: the whole model run on (prompt, option), mean token log-probability by hand."""
    scores = []
    for tokens in options:
        labels = torch.tensor([tokens])
        logits = model(**batch, labels=labels).logits[0].float()  # (Lt, V)
        scores.append(float(F.log_softmax(logits, -1).gather(-1, labels[0][:, None]).mean()))
    return scores


def _one_row(batch) -> dict:
    return {k: v[:1] for k, v in batch.items() if k != "labels"}


def _padded(options) -> torch.Tensor:
    labels = torch.full((len(options), max(map(len, options))), -100)
    for i, tokens in enumerate(options):
        labels[i, :len(tokens)] = torch.tensor(tokens)
    return labels


@pytest.mark.parametrize("fusion", [{"mode": "xattn"}, {"mode": "concat"}, {"mode": "both", "in_decoder": True}])
def test_encoding_once_gives_each_options_own_score(fusion):
    model = tiny_model(seed=1, fusion={**fusion, "gate_init": 0.5})
    batch = _one_row(media_batch(seed=2))
    with torch.no_grad():
        expected = _per_option(model, batch, OPTIONS)
        got = score_row_options(model, batch, _padded(OPTIONS))
    assert got.tolist() == pytest.approx(expected, abs=1e-5)
    assert int(got.argmax()) == max(range(len(expected)), key=expected.__getitem__)


def test_encoding_once_on_a_pretrained_backbone(tmp_path):
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    BartForConditionalGeneration(BartConfig(vocab_size=99, d_model=32, encoder_layers=1, decoder_layers=1,
                                            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                            decoder_ffn_dim=64, max_position_embeddings=64)).save_pretrained(tmp_path)
    config = UnifiedConfig.preset("tiny", text={"pretrained_path": str(tmp_path)}, fusion={"mode": "xattn"})
    model = UnifiedModel.from_pretrained_parts(config).eval()
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8, 9]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    options = [[20, 21, 2], [22, 2], [23, 24, 25, 2]]  # BART's eos is 2
    with torch.no_grad():
        expected = _per_option(model, batch, options)
        got = score_row_options(model, batch, _padded(options))
    assert got.tolist() == pytest.approx(expected, abs=1e-5)


def test_option_labels_are_the_targets_the_processor_writes():
    class Words:
        def encode(self, text, add_eos=False):
            return [len(w) for w in text.split()] + ([EOS] if add_eos else [])

    assert option_labels(Words(), ["ab c", "abcd"]).tolist() == [[2, 1, EOS], [4, EOS, -100]]

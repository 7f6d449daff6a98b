"""transformers' conventions for generation and initialisation, checked on a model WITH media encoders (the sdist of
transformers does not ship its generation tests, so these are ours for what they check):

- `generate` continued from the cache a first call returned, its `sequences` passed back as `decoder_input_ids`,
  gives exactly the uninterrupted call (tokens and every step's logits), with and without a decoder mask;
- with and without the KV cache, and a batch against each row alone, the same tokens and logits;
- a model materialised from the meta device (transformers' `from_pretrained` with weights missing) draws every
  weight in `_init_weights`: nothing keeps what memory held, and the position tables, the resamplers' latents and
  frame table have the spread their constructors declare.
"""

from __future__ import annotations

import math

import pytest
import torch
from model_fixtures import media_batch, tiny_config, tiny_model

from unified.model import UnifiedForConditionalGeneration
from unified.model.encoders import POSITION_INIT_STD, PatchStem
from unified.model.fusion import GatedCrossAttentionBlock
from unified.model.resampler import FRAME_EMBED_STD, PerceiverResampler

GREEDY = dict(do_sample=False, return_dict_in_generate=True, output_logits=True, eos_token_id=-1, pad_token_id=0)
PREFIX = torch.tensor([[0, 5, 9, 17], [0, 11, 3, 8]])  # a varied start, so the history matters


def _model(fusion: str) -> UnifiedForConditionalGeneration:
    model = tiny_model(fusion={"mode": fusion, "in_decoder": fusion == "xattn"})
    for module in model.modules():  # open the gates: media reach the text stream (closed, they are skipped)
        if isinstance(module, GatedCrossAttentionBlock):
            module.attn_gate.data.fill_(0.5)
            module.ff_gate.data.fill_(0.5)
    return model


@pytest.fixture(scope="module", params=["xattn", "concat"])
def model(request):
    return _model(request.param)


def _inputs() -> dict[str, torch.Tensor]:
    return {k: v for k, v in media_batch().items() if k != "labels"}


@pytest.mark.parametrize("decoder_mask", [False, True])
def test_continuing_from_a_returned_cache_equals_one_call(model, decoder_mask):
    inputs = {**_inputs(), "decoder_input_ids": PREFIX}
    if decoder_mask:
        inputs["decoder_attention_mask"] = torch.ones_like(PREFIX)
    whole = model.generate(**inputs, max_new_tokens=5, use_cache=True, **GREEDY)
    first = model.generate(**inputs, max_new_tokens=3, use_cache=True, **GREEDY)
    inputs["decoder_input_ids"] = first.sequences
    if decoder_mask:
        inputs["decoder_attention_mask"] = torch.ones_like(first.sequences)
    rest = model.generate(**inputs, cache=first.cache, max_new_tokens=2, use_cache=True, **GREEDY)
    assert torch.equal(rest.sequences, whole.sequences)
    for a, b in zip(whole.logits, first.logits + rest.logits, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    # and the cache ends as the uninterrupted one's: same length, same keys
    assert rest.cache.get_seq_length() == whole.cache.get_seq_length() == whole.sequences.shape[1] - 1
    for a, b in zip(whole.cache.self_attention_cache.layers, rest.cache.self_attention_cache.layers, strict=True):
        assert torch.allclose(a.keys, b.keys, atol=1e-5) and torch.allclose(a.values, b.values, atol=1e-5)


def test_cached_and_uncached_generation_agree():
    model = _model("concat")  # xattn: tests/test_model.py
    inputs = {**_inputs(), "decoder_input_ids": PREFIX}
    cached = model.generate(**inputs, max_new_tokens=5, use_cache=True, **GREEDY)
    uncached = model.generate(**inputs, max_new_tokens=5, use_cache=False, **GREEDY)
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, b in zip(cached.logits, uncached.logits, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    with torch.no_grad():  # the independent truth: one forward pass over the whole generated prefix
        one_pass = model(**_inputs(), decoder_input_ids=cached.sequences).logits[:, PREFIX.shape[1] - 1:-1]
    assert torch.allclose(torch.stack(cached.logits, dim=1), one_pass, atol=1e-4)


def test_a_batch_generates_what_each_row_does_alone(model):
    inputs = _inputs()
    together = model.generate(**inputs, decoder_input_ids=PREFIX, max_new_tokens=4, use_cache=True, **GREEDY)
    lengths = inputs["attention_mask"].sum(dim=1).tolist()
    for b, length in enumerate(lengths):
        row = {k: v[b:b + 1] for k, v in inputs.items()}
        row["input_ids"], row["attention_mask"] = row["input_ids"][:, :length], row["attention_mask"][:, :length]
        alone = model.generate(**row, decoder_input_ids=PREFIX[b:b + 1], max_new_tokens=4, use_cache=True, **GREEDY)
        assert torch.equal(alone.sequences[0], together.sequences[b])
        for a, t in zip(alone.logits, together.logits, strict=True):
            assert torch.allclose(a[0], t[b], atol=1e-5)


def test_a_model_materialised_from_meta_draws_every_weight():
    config = tiny_config(fusion={"mode": "both", "in_decoder": True})
    with torch.device("meta"):
        model = UnifiedForConditionalGeneration(config)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:  # what memory held: a value no init draws
            if tensor.is_floating_point():
                tensor.fill_(float("nan"))
    for module in model.modules():
        module.__dict__.pop("_is_hf_initialized", None)
    model.initialize_weights()
    left = [name for name, p in [*model.named_parameters(), *model.named_buffers()]
            if p.is_floating_point() and not torch.isfinite(p).all()]
    assert not left, f"not initialised by _init_weights: {left}"

    # transformers' own path: every key missing from the (empty) checkpoint, drawn by _init_weights
    torch.manual_seed(0)
    loaded = UnifiedForConditionalGeneration.from_pretrained(None, config=config, state_dict={})
    declared = []
    for module in loaded.modules():
        if isinstance(module, PatchStem):
            declared += [(module.row_embed, POSITION_INIT_STD), (module.col_embed, POSITION_INIT_STD)]
        if isinstance(module, PerceiverResampler):
            declared.append((module.latents, 1 / math.sqrt(module.latents.shape[-1])))
            if module.frame_embed is not None:
                declared.append((module.frame_embed, FRAME_EMBED_STD))
    assert len(declared) == 6  # two position tables; each resampler's latents and frame table
    for tensor, std in declared:
        # sample std of n >= 128 normal draws: within 25 % of the declared one (over 4 standard errors)
        assert abs(float(tensor.std()) / std - 1) < 0.25, (tuple(tensor.shape), float(tensor.std()), std)
        assert abs(float(tensor.mean())) < 4 * std / math.sqrt(tensor.numel())
    assert torch.allclose(loaded.embed_head.log_scale, torch.tensor([math.log(1 / 0.07)]))

"""The model and tokenizer in transformers' conventions: `batch_decode(skip_special_tokens=...)`, media cast to the
model's dtype inside `forward`, a `generate()` default length of 32 new tokens (not transformers' max_length=20),
and no deprecation line printed by generate."""

from __future__ import annotations

import logging

import pytest
import torch
from task_rows import tiny_stack, write_media

from unified import Model
from unified.errors import InputError
from unified.task_zoo import get_task
from unified.task_zoo.batching import task_batch


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    _, processor, network = tiny_stack()
    Model(network, processor).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return write_media(tmp_path_factory.mktemp("media"))


def _batch(model, media):
    task = get_task("caption", layout=model.processor.tokenizer.layout)
    batch = task_batch(task, [{"video": media["video"]}, {"image": media["image"]}], model.processor,
                       with_target=False)
    batch.pop("labels", None)
    return batch


def test_batch_decode_matches_decode_row_by_row(saved):
    tok = Model.from_pretrained(saved).processor.tokenizer
    rows = [tok.encode("a red circle <loc_3> moves left", add_eos=True), tok.encode("which way?", add_eos=True)]
    width = max(map(len, rows))
    padded = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    for skip in (True, False):
        assert tok.batch_decode(padded, skip_special_tokens=skip) == [
            tok.decode(r, skip_special_tokens=skip) for r in padded.tolist()]
    assert tok.batch_decode(padded)[0].startswith("a red circle")
    with pytest.raises(InputError, match="clean_up_tokenization_spaces"):
        tok.batch_decode(padded, clean_up_tokenization_spaces=True)


def test_generate_defaults_to_32_new_tokens(saved, media):
    model = Model.from_pretrained(saved)
    assert model.network.generation_config.max_new_tokens == 32
    eos = model.processor.tokenizer.eos_token_id
    out = model.network.generate(**_batch(model, media), bad_words_ids=[[eos]], do_sample=False)
    assert out.shape[1] == 1 + 32  # the decoder start, then 32 tokens: never stopped at max_length=20


def test_a_bf16_model_takes_the_processors_float32_media(saved, media):
    model = Model.from_pretrained(saved, dtype=torch.bfloat16)
    batch = _batch(model, media)
    assert batch["pixel_values"].dtype == torch.float32
    out = model.network(**batch, decoder_input_ids=torch.zeros(2, 1, dtype=torch.long))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()
    assert isinstance(model.generate(task="caption", video=media["video"], max_new_tokens=3), str)


def test_generate_prints_no_deprecation(saved, media, caplog):
    model = Model.from_pretrained(saved)
    with caplog.at_level(logging.WARNING, logger="transformers"):
        model.network.generate(**_batch(model, media), max_new_tokens=3)
        model.network.generate(**_batch(model, media), max_new_tokens=3, num_beams=2)
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]


def test_auto_classes_load_a_saved_model_in_a_fresh_process(saved):
    """Nothing of unified imported beforehand: transformers' Auto classes find the classes through `auto_map`."""
    import subprocess
    import sys

    code = ("import sys, transformers as t\n"
            "d = sys.argv[1]\n"
            "m = t.AutoModelForSeq2SeqLM.from_pretrained(d, trust_remote_code=True)\n"
            "c = t.AutoConfig.from_pretrained(d, trust_remote_code=True)\n"
            "k = t.AutoTokenizer.from_pretrained(d, trust_remote_code=True)\n"
            "p = t.AutoProcessor.from_pretrained(d, trust_remote_code=True)\n"
            "print(type(m).__name__, type(c).__name__, type(k).__name__, type(p).__name__)\n"
            "print(k.encode('a red circle'))\n")
    out = subprocess.run([sys.executable, "-c", code, str(saved)], capture_output=True, text=True, timeout=300,
                         check=False,
                         env={**__import__("os").environ, "HF_MODULES_CACHE": str(saved.parent / "modules")})
    assert out.returncode == 0, out.stderr[-2000:]
    names, ids = out.stdout.strip().splitlines()
    assert names == "UnifiedForConditionalGeneration UnifiedConfig UnifiedTokenizer UnifiedProcessor"
    assert ids == str(Model.from_pretrained(saved).processor.tokenizer.encode("a red circle"))


def test_resize_token_embeddings_keeps_model_and_config_consistent(tmp_path):
    from unified.model import UnifiedModel

    tokenizer, processor, network = tiny_stack()
    old = network.get_input_embeddings().weight.detach().clone()
    network.resize_token_embeddings(tokenizer.vocab_size + 8)
    assert network.config.vocab_size == network.config.text.vocab_size == tokenizer.vocab_size + 8
    assert network.lm_head.weight.shape[0] == tokenizer.vocab_size + 8
    assert torch.equal(network.get_input_embeddings().weight[: len(old)], old)  # existing rows untouched
    network.save_pretrained(tmp_path)
    again = UnifiedModel.from_pretrained(tmp_path)
    batch = processor([{"text": "a red circle", "target": "left"}])
    assert again(**batch).logits.shape[-1] == tokenizer.vocab_size + 8


def test_inputs_embeds_without_input_ids_equal_the_ids_path():
    """Soft prompts: the encoder and the decoder take embeddings directly; the same embeddings as the ids give the
    same logits and loss."""
    _, processor, network = tiny_stack()
    network.eval()
    batch = processor([{"text": "a red circle moves left", "target": "left"}, {"text": "which way?", "target": "up"}])
    reference = network(**batch).logits
    embeds = network.get_input_embeddings()(batch["input_ids"])
    out = network(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert torch.allclose(out.logits, reference, atol=1e-6)
    decoder_embeds = network.get_input_embeddings()(network._shift_right(batch["labels"]))  # prompt tuning
    out = network(**batch, decoder_inputs_embeds=decoder_embeds)
    assert torch.allclose(out.logits, reference, atol=1e-6) and torch.allclose(out.loss, network(**batch).loss)
    with pytest.raises(InputError, match="decoder_inputs_embeds"):
        network(**batch, decoder_input_ids=batch["labels"].clamp_min(0), decoder_inputs_embeds=decoder_embeds)
    with pytest.raises(InputError, match="media need input_ids"):
        network(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                pixel_values=torch.zeros(2, 1, 1, 3, 32, 32))


def test_attentions_are_the_softmax_of_the_layers_own_scores():
    """`output_attentions=True`: encoder self-attention probabilities equal softmax(q k^T / sqrt(E)) computed by hand
    from the first layer's projections, padded keys get 0, the decoder's self-attention is causal, and the logits
    are those of the fast path."""
    _, processor, network = tiny_stack()
    network.eval()
    batch = processor([{"text": "a red circle moves left", "target": "left"}, {"text": "up", "target": "up"}])
    with torch.no_grad():
        fast = network(**batch)
        out = network(**batch, output_attentions=True)
        layer = network.encoder.layers[0]
        layer = getattr(layer, "layer", layer)  # inside a FusedLayer
        x = layer.attn_norm(network.get_input_embeddings()(batch["input_ids"]))
        attn = layer.self_attn
        cos, sin = network.encoder.rotary(torch.arange(x.shape[1]), x.dtype)
        from unified.model.layers import apply_rotary

        q = apply_rotary(attn._heads(attn.q_proj(x)), cos, sin)
        k = apply_rotary(attn._heads(attn.k_proj(x)), cos, sin)
        scores = q @ k.transpose(-1, -2) / attn.head_dim ** 0.5  # (B, H, L, L)
        scores = scores.masked_fill(~batch["attention_mask"].bool()[:, None, None, :], float("-inf"))
    assert torch.allclose(out.encoder_attentions[0], scores.softmax(-1), atol=1e-5)
    assert out.encoder_attentions[0][1, :, :, batch["attention_mask"][1] == 0].abs().max() == 0
    decoder = out.decoder_attentions[0]  # (B, H, Lt, Lt)
    assert decoder.triu(diagonal=1).abs().max() == 0 and torch.allclose(decoder.sum(-1), torch.ones(()))
    assert len(out.cross_attentions) == network.config.text.num_decoder_layers
    assert torch.allclose(out.logits, fast.logits, atol=1e-5)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    kwargs = {"max_new_tokens": 3, "min_new_tokens": 3, "do_sample": False}
    steps = network.generate(**inputs, output_attentions=True, return_dict_in_generate=True, **kwargs)
    assert torch.equal(steps.sequences, network.generate(**inputs, **kwargs))
    assert [a[0].shape[-1] for a in steps.decoder_attentions] == [1, 2, 3]  # the cache grows one key a step


def test_tuples_logits_to_keep_and_unknown_keywords():
    _, processor, network = tiny_stack()
    network.eval()
    batch = processor([{"text": "which way?", "target": "left left"}])
    with torch.no_grad():
        full = network(**batch)
        loss, logits = network(**batch, return_dict=False)[:2]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        last = network(**inputs, decoder_input_ids=network._shift_right(batch["labels"]), logits_to_keep=1).logits
    assert torch.equal(loss, full.loss) and torch.equal(logits, full.logits)
    assert torch.allclose(last[:, 0], full.logits[:, -1], atol=1e-6)
    with pytest.raises(InputError, match="promtp"):
        network(**batch, promtp="describe")
    with pytest.raises(InputError, match="logits_to_keep"):  # the loss needs every position
        network(**batch, logits_to_keep=1)


def test_a_checkpoint_without_the_embedding_reports_it_missing(tmp_path):
    """Every embedding weight is reported missing and initialised, not left on the meta device (the encoder and
    decoder once held the `shared` module itself, which hid it from transformers' loader)."""
    from safetensors.torch import load_file, save_file

    from unified.model import UnifiedBaseModel, UnifiedForConditionalGeneration

    _, _, network = tiny_stack()
    network.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    assert "shared.weight" in weights
    del weights["shared.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded, info = UnifiedForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert "shared.weight" in info["missing_keys"]
    assert loaded.shared.weight.device.type == "cpu" and torch.isfinite(loaded.shared.weight).all()
    assert loaded.encoder.embed_tokens.weight is loaded.shared.weight is loaded.lm_head.weight
    base, info = UnifiedBaseModel.from_pretrained(tmp_path, output_loading_info=True)  # the same keys, no head
    assert "shared.weight" in info["missing_keys"] and base.decoder.embed_tokens.weight is base.shared.weight


def test_headless_model_loads_the_lm_and_gives_its_states(tmp_path):
    """`AutoModel` loads a saved LM as `UnifiedBaseModel`; its last hidden states through the LM's tied head
    (scaled by d_model ** -0.5, T5's rule) are the LM's logits."""
    from transformers import AutoModel

    from unified.model import UnifiedBaseModel

    _, processor, network = tiny_stack()
    network.eval().save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert type(base) is UnifiedBaseModel and not hasattr(base, "lm_head")
    batch = processor([{"text": "a red circle", "target": "left"}])
    decoder_input_ids = network._shift_right(batch.pop("labels"))
    with torch.no_grad():
        states = base(**batch, decoder_input_ids=decoder_input_ids).last_hidden_state
        logits = network(**batch, decoder_input_ids=decoder_input_ids).logits
    d = network.config.text.d_model
    assert torch.allclose(network.lm_head(states * d ** -0.5), logits, atol=1e-5)
    with pytest.raises(InputError, match="decoder_input_ids"):
        base(**batch)


def test_a_tasks_max_new_tokens_option_caps_its_answers(saved, media, monkeypatch):
    from unified.errors import ConfigError
    from unified.task_zoo import build_tasks

    model = Model.from_pretrained(saved)
    model.task_options["caption"] = {"max_new_tokens": 3}
    asked = []
    generate = model.network.generate
    monkeypatch.setattr(model.network, "generate", lambda **kw: asked.append(kw["max_new_tokens"]) or generate(**kw))
    model.generate(task="caption", video=media["video"])
    model.generate(task="caption", video=media["video"], max_new_tokens=5)  # the caller's value wins
    model.task_options.pop("caption")
    model.generate(task="caption", video=media["video"])
    assert asked == [3, 5, 32]
    with pytest.raises(ConfigError, match="max_new_tokens"):
        build_tasks(["caption"], {"caption": {"max_new_tokens": 0}}, model.processor.tokenizer.layout)


def test_static_cache_generates_the_dynamic_caches_tokens():
    """`cache_implementation="static"` preallocates the keys; the unwritten slots must not be attended to (they once
    were: the answers changed silently)."""
    _, processor, network = tiny_stack()
    network.eval()
    batch = processor([{"text": "a red circle moves left", "target": "x"}, {"text": "up", "target": "x"}])
    batch.pop("labels")
    for beams in (1, 3):
        kwargs = {"max_new_tokens": 5, "min_new_tokens": 5, "do_sample": False, "num_beams": beams}
        dynamic = network.generate(**batch, **kwargs)
        static = network.generate(**batch, cache_implementation="static", **kwargs)
        assert torch.equal(static, dynamic), beams


def test_a_static_cache_decoding_step_traces_as_one_graph():
    """`torch.compile(fullgraph=True)` captures a decoding step on a static cache (no data-dependent Python:
    dynamo raises on any graph break), and the captured steps give the eager steps' logits."""
    from transformers.cache_utils import EncoderDecoderCache, StaticCache

    _, processor, network = tiny_stack()
    network.eval()
    batch = processor([{"text": "a red circle moves left", "target": "x"}, {"text": "up", "target": "x"}])
    batch.pop("labels")

    def cache(encoder_length):
        return EncoderDecoderCache(StaticCache(config=network.config, max_cache_len=6),
                                   StaticCache(config=network.config, max_cache_len=encoder_length))

    torch._dynamo.reset()
    step = torch.compile(network.forward, fullgraph=True, backend="eager")
    with torch.no_grad():
        encoded = network.get_encoder()(**batch)
        eager_cache, compiled_cache = (cache(encoded.last_hidden_state.shape[1]) for _ in range(2))
        tokens = torch.zeros(2, 1, dtype=torch.long)  # the decoder start
        for _ in range(4):
            kwargs = {"encoder_outputs": encoded, "attention_mask": batch["attention_mask"],
                      "decoder_input_ids": tokens, "use_cache": True}
            eager = network(**kwargs, cache=eager_cache).logits
            compiled = step(**kwargs, cache=compiled_cache).logits
            assert torch.allclose(compiled, eager, atol=1e-5)
            tokens = eager[:, -1:].argmax(-1)
    torch._dynamo.reset()
    assert int(compiled_cache.get_seq_length()) == 4

"""The encoder-decoder against independent truths: the eager reference, the same model without media, each item
run alone, uncached decoding, a reloaded copy, transformers' own loaders and rope functions."""

import pytest
import torch
from model_fixtures import EOS, PAD, media_batch, tiny_config, tiny_model

from unified.errors import ConfigError
from unified.model import UnifiedConfig, UnifiedForConditionalGeneration, constrained_processors
from unified.model.fusion import GatedCrossAttentionBlock

TEXT_ONLY = {"input_ids": torch.tensor([[20, 21, 22, 23], [30, 31, PAD, PAD]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
             "labels": torch.tensor([[40, 41, EOS], [42, EOS, -100]])}


def _open_gates(model, value=0.5):
    for module in model.modules():
        if isinstance(module, GatedCrossAttentionBlock):
            module.attn_gate.data.fill_(value)
            module.ff_gate.data.fill_(value)


@pytest.mark.parametrize("fusion", ["xattn", "concat", "both"])
@pytest.mark.parametrize("resampler", ["global", "per_frame", "pool3d"])
def test_every_fusion_and_resampler_mode_trains(fusion, resampler):
    model = tiny_model(fusion={"mode": fusion}, resampler={"mode": resampler}).train()
    _open_gates(model)  # so gradients also reach the media path through the gates
    out = model(**media_batch())
    assert out.logits.shape == (2, 3, 300) and torch.isfinite(out.loss)
    out.loss.backward()
    media_grads = [p.grad for n, p in model.named_parameters() if "visual_resampler" in n or "audio_resampler" in n]
    assert any(g is not None and g.abs().sum() > 0 for g in media_grads)
    stem = model.encoder.media.vision.stem
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in stem.parameters())


def test_concat_sequence_grows_by_the_latents():
    model = tiny_model(fusion={"mode": "concat"}, resampler={"mode": "per_frame"})
    batch = media_batch()
    enc = model.encoder(**{k: v for k, v in batch.items() if k != "labels"})
    # example 0: 3 frames x (1 time token + 2 latents) + 4 audio latents + 3 words = 16; example 1 (no audio): 2 x 3 + 2
    assert enc.attention_mask.sum(-1).tolist() == [16, 8]
    assert enc.last_hidden_state.shape[1] == 16


def test_zero_gates_equal_the_model_without_media():
    model = tiny_model()
    batch = media_batch()
    with torch.no_grad():
        with_media = model(**batch).logits
        without = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        labels=batch["labels"]).logits
        assert torch.equal(with_media, without)
        _open_gates(model)
        assert not torch.allclose(model(**batch).logits, without)


def test_previous_media_rule_isolates_groups():
    # "<video> a b <audio> c": with Flamingo's rule a, b see only the video; changing the audio leaves them alone.
    model = tiny_model(fusion={"media_attention": "previous"})
    _open_gates(model)
    batch = media_batch()
    ids = torch.tensor([[6, 20, 21, 7, 22]])
    base = {"input_ids": ids, "pixel_values": batch["pixel_values"][:1], "audio_features": batch["audio_features"][:1]}
    other_audio = dict(base, audio_features=torch.randn(1, 1, 80, 40))
    with torch.no_grad():
        a = model.encoder(**base).last_hidden_state
        b = model.encoder(**other_audio).last_hidden_state
    # the encoder's self-attention mixes positions after the first layer, so compare the first xattn block directly
    layer0 = model.encoder.layers[0]
    from unified.model.media import cross_attention_memory, media_mask

    for features, out in ((base, a), (other_audio, b)):
        lat = model.encoder.media(features["pixel_values"], None, None, features["audio_features"], None)
        memory, latent_group, token_group = cross_attention_memory(ids, lat, model.config)
        mask = media_mask(token_group, latent_group, model.config)
        assert mask[0, 1].sum() == 8 and mask[0, 4].sum() == 4  # word "a" sees 8 video latents, "c" 4 audio ones
        x = model.shared(ids)
        fused = layer0.xattn(x, memory, mask)
        features["fused"] = fused
    assert torch.allclose(base["fused"][0, :3], other_audio["fused"][0, :3])
    assert not torch.allclose(base["fused"][0, 4], other_audio["fused"][0, 4])
    assert not torch.allclose(a, b)


def test_padded_batch_matches_each_item_alone():
    model = tiny_model()
    _open_gates(model)
    batch = media_batch()
    with torch.no_grad():
        together = model(**batch).logits
        for b, (length, label_len) in enumerate(((5, 3), (3, 2))):
            alone = model(input_ids=batch["input_ids"][b:b + 1, :length],
                          attention_mask=batch["attention_mask"][b:b + 1, :length],
                          pixel_values=batch["pixel_values"][b:b + 1, :, : 3 - b],
                          frame_times=batch["frame_times"][b:b + 1, :, : 3 - b],
                          audio_features=batch["audio_features"][b:b + 1] if b == 0 else None,
                          labels=batch["labels"][b:b + 1, :label_len]).logits
            assert torch.allclose(together[b, :label_len], alone[0], atol=1e-5), b


def test_eager_and_sdpa_agree_on_the_whole_model():
    model = tiny_model()
    _open_gates(model)
    with torch.no_grad():
        model.set_attn_implementation("sdpa")
        sdpa = model(**media_batch()).logits
        model.set_attn_implementation("eager")
        eager = model(**media_batch()).logits
    assert torch.allclose(sdpa, eager, atol=1e-5)


def test_cached_generation_equals_uncached():
    model = tiny_model()
    _open_gates(model)
    batch = {k: v for k, v in media_batch().items() if k != "labels"}
    kwargs = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    cached = model.generate(**batch, use_cache=True, **kwargs)
    uncached = model.generate(**batch, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
    # step-wise logits: feed the generated prefix in one pass vs one token at a time with the cache
    with torch.no_grad():
        full = model(**batch, decoder_input_ids=cached).logits
        enc = model.encoder(**batch)
        past, steps = None, []
        for t in range(cached.shape[1]):
            out = model(encoder_outputs=enc, attention_mask=batch["attention_mask"],
                        decoder_input_ids=cached[:, t:t + 1], cache=past, use_cache=True)
            past = out.cache
            steps.append(out.logits)
    assert torch.allclose(full, torch.cat(steps, dim=1), atol=1e-5)
    # and generate() itself must carry its cache from step to step: its raw logits at every step equal the
    # one-pass logits over the prefix (transformers 5 passes the cache as `cache=`; ignoring it restarted the decoder
    # at position 0 every step and greedy decoding of a trained model fell apart after the first token)
    # (a random model keeps writing one token, so start from a varied prefix to make the history matter)
    prefix = torch.tensor([[0, 5, 9, 17], [0, 11, 3, 8]])
    out = model.generate(**batch, decoder_input_ids=prefix, use_cache=True, output_logits=True,
                         return_dict_in_generate=True, **kwargs)
    one_pass = model(**batch, decoder_input_ids=out.sequences).logits  # (B, 4 + 6, V)
    assert torch.allclose(torch.stack(out.logits, dim=1), one_pass[:, 3:-1], atol=1e-4)


def test_beam_search_finds_the_most_likely_pair_by_brute_force():
    """Over five allowed tokens and two steps, five beams keep every first token, so beam search must return the
    two-token answer with the highest total log-probability among all 25, scored here one by one."""
    model = tiny_model().eval()
    batch = {k: v for k, v in media_batch().items() if k != "labels"}
    allowed = [100, 101, 102, 103, 104]
    beams = model.generate(**batch, num_beams=5, max_new_tokens=2, min_new_tokens=2, length_penalty=0.0,
                           logits_processor=constrained_processors(allowed))
    start = model.config.decoder_start_token_id
    for b in range(2):
        one = {k: v[b:b + 1] for k, v in batch.items()}
        scores = {}
        with torch.no_grad():
            for first in allowed:
                for second in allowed:
                    ids = torch.tensor([[start, first, second]])
                    # beams add the model's log-probabilities; the constraint only removes the other tokens
                    logp = model(**one, decoder_input_ids=ids[:, :-1]).logits.log_softmax(-1)  # (1, 2, V)
                    scores[(first, second)] = float(logp[0, 0, first] + logp[0, 1, second])
        assert tuple(beams[b, 1:].tolist()) == max(scores, key=scores.get)


def test_sampling_with_top_k_1_is_greedy():
    model = tiny_model().eval()
    batch = {k: v for k, v in media_batch().items() if k != "labels"}
    greedy = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    torch.manual_seed(0)
    sampled = model.generate(**batch, do_sample=True, top_k=1, max_new_tokens=4, min_new_tokens=4)
    assert torch.equal(greedy, sampled)


def test_constrained_generation_emits_only_allowed_ids():
    model = tiny_model()
    allowed = list(range(100, 110))
    out = model.generate(**TEXT_ONLY | {"labels": None}, max_new_tokens=5, min_new_tokens=5,
                         logits_processor=constrained_processors(allowed))
    assert set(out[:, 1:].flatten().tolist()) <= set(allowed)
    options = [[120, 121], [130]]
    out = model.generate(**TEXT_ONLY | {"labels": None}, max_new_tokens=4,
                         logits_processor=constrained_processors(sequences=options, eos_token_id=EOS))
    for row in out[:, 1:].tolist():
        written = [t for t in row if t not in (EOS, PAD)]
        assert written in options


def test_save_load_identical_logits_and_safetensors_only(tmp_path):
    model = tiny_model()
    _open_gates(model)
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    again = UnifiedForConditionalGeneration.from_pretrained(tmp_path).eval()
    from transformers import AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(auto) is UnifiedForConditionalGeneration
    with torch.no_grad():
        ref = model(**media_batch()).logits
        assert torch.equal(ref, again(**media_batch()).logits)
        assert torch.equal(ref, auto(**media_batch()).logits)
    assert again.lm_head.weight.data_ptr() == again.shared.weight.data_ptr()  # still tied


OLD_NAMES = [  # (new, old) weight names of the media side, from the attribute names the earlier modules had
    (r"(resampler\.layers\.\d+)\.norm_", r"\1.0.norm_"), (r"(resampler\.layers\.\d+)\.attn\.", r"\1.0."),
    (r"(resampler\.layers\.\d+)\.ff_norm\.", r"\1.1.0."), (r"(resampler\.layers\.\d+)\.ff\.up_proj\.", r"\1.1.1."),
    (r"(resampler\.layers\.\d+)\.ff\.down_proj\.", r"\1.1.3."), (r"(xattn.*)\.ff\.up_proj\.", r"\1.ff.0."),
    (r"(xattn.*)\.ff\.down_proj\.", r"\1.ff.2."), (r"\.q_proj\.", ".to_q."), (r"\.o_proj\.", ".to_out."),
]


def _earlier_layout(state: dict) -> dict:
    """A state dict as the model wrote it before the gated cross-attention and the perceiver used the text layers'
    attention and feed-forward: to_q / to_kv (keys over values) / to_out, Sequential-numbered feed-forwards."""
    import re

    old = {}
    for key, value in state.items():
        if "resampler" in key or "xattn" in key:
            if key.endswith(".v_proj.weight"):
                continue  # stacked under its key projection's to_kv
            if key.endswith(".k_proj.weight"):
                value = torch.cat([value, state[key.replace(".k_proj.", ".v_proj.")]])
                key = key.replace(".k_proj.", ".to_kv.")
            for new, then in OLD_NAMES:
                key = re.sub(new, then, key)
        old[key] = value
    return old


@pytest.mark.parametrize("fusion, resampler", [("both", "global"), ("xattn", "per_frame")])
def test_a_model_saved_before_the_module_merge_loads_bitwise(tmp_path, fusion, resampler):
    """A file in the earlier layout (written out here from the names the earlier modules had) loads with no missing
    or unexpected weight and gives the same logits to the bit; saving again writes the new names."""
    from safetensors.torch import load_file, save_file

    model = tiny_model(fusion={"mode": fusion}, resampler={"mode": resampler})
    with torch.no_grad():
        for p in model.parameters():  # every weight away from its initial value, so a weight not loaded shows
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path)
    file = tmp_path / "model.safetensors"
    saved = load_file(file)
    earlier = _earlier_layout(saved)
    assert any(".to_kv." in k for k in earlier) and any(".1.3." in k for k in earlier)
    save_file(earlier, file, metadata={"format": "pt"})
    loaded, info = UnifiedForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with torch.no_grad():
        assert torch.equal(model(**media_batch()).logits, loaded.eval()(**media_batch()).logits)
    loaded.save_pretrained(tmp_path / "again")
    assert set(load_file(tmp_path / "again" / "model.safetensors")) == set(saved)


def test_gradient_checkpointing_leaves_outputs_and_grads_unchanged():
    batch = media_batch()
    grads = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        _open_gates(model)
        if checkpointing:
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        out = model(**batch)
        out.loss.backward()
        grads.append((out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                          if p.grad is not None}))
    (loss_a, grad_a), (loss_b, grad_b) = grads
    assert torch.equal(loss_a, loss_b)
    assert grad_a.keys() == grad_b.keys()
    for name in grad_a:
        assert torch.allclose(grad_a[name], grad_b[name], atol=1e-6), name


def test_lora_wraps_and_trains_without_touching_base_weights():
    peft = pytest.importorskip("peft")
    model = tiny_model().train()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    optim = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(8):
        loss = lora(**TEXT_ONLY).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    for name, param in lora.base_model.model.named_parameters():
        if "lora_" not in name:
            key = name.replace(".base_layer", "")
            assert torch.equal(param, base[key]), name


def test_task_adapters_go_on_the_language_layers_only():
    """The gated cross-attention and the perceiver use the text layers' Attention and FeedForward, so their
    projections carry the same names (q_proj ... down_proj); per-task LoRA still adapts the language layers alone:
    7 projections per encoder layer, 11 per decoder layer (self- and cross-attention)."""
    from unified.model.adapters import TaskAdapters

    model = tiny_model(fusion={"mode": "both"}, resampler={"mode": "per_frame"})
    media_side = [n for n, _ in model.named_modules() if n.endswith(".q_proj") and ("xattn" in n or "media" in n)]
    assert len(media_side) >= 2  # the names are there to be matched
    TaskAdapters.attach(model, ["vqa"], r=2)
    adapted = [n for n, m in model.named_modules() if hasattr(m, "lora_A")]
    t = model.config.text
    assert len(adapted) == 7 * t.num_encoder_layers + 11 * t.num_decoder_layers, adapted
    assert not [n for n in adapted if "xattn" in n or "media" in n]


def test_bf16_autocast_runs_on_cpu():
    model = tiny_model()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**media_batch())
    assert torch.isfinite(out.loss)


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="fusion.mode"):
        tiny_config(fusion={"mode": "sideways"})
    with pytest.raises(ConfigError, match="vision.image_size"):
        tiny_config(vision={"image_size": 40})
    with pytest.raises(ConfigError, match="fusion.every_k_layers"):
        tiny_config(fusion={"every_k_layers": 3})
    with pytest.raises(ConfigError, match="resampler.latents_per_frame"):
        tiny_config(resampler={"latents_per_frame": 65})
    with pytest.raises(ConfigError, match="text.rope_scaling"):
        tiny_config(text={"rope_scaling": {"type": "ntk", "factor": 2}})
    with pytest.raises(ConfigError, match="text.d_modle"):
        tiny_config(text={"d_modle": 3})
    with pytest.raises(ConfigError, match="unknown preset"):
        UnifiedConfig.preset("huge")


@pytest.mark.parametrize("preset, vocab, documented", [("tiny", None, "0.62 M"), ("small", 2500, "12.4 M"),
                                                       ("base", None, "318 M")])
def test_every_preset_builds_to_the_size_the_docs_state(preset, vocab, documented):
    """Each preset is built (on the meta device: no memory) and counted against the docs' figure (docs/model.md)."""
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "model.md").read_text()
    assert f"`{preset}` (" in page and documented in page
    with torch.device("meta"):
        model = UnifiedForConditionalGeneration(UnifiedConfig.preset(preset, **(
            {"text": {"vocab_size": vocab}} if vocab else {})))
    count = sum(p.numel() for p in model.parameters())
    number = documented.split()[0]
    decimals = len(number.split(".")[1]) if "." in number else 0  # the page rounds to this many decimals
    assert f"{count / 1e6:.{decimals}f}" == number, (preset, count)


def test_pretrained_vision_encoder_keeps_its_weights(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(1)
    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=2, image_size=32, patch_size=16))
    clip.save_pretrained(tmp_path / "clip")
    bare = tiny_model(vision={"pretrained_path": str(tmp_path / "clip")})  # the architecture, random weights
    assert not torch.equal(bare.encoder.media.vision.backbone.embeddings.patch_embedding.weight,
                           clip.embeddings.patch_embedding.weight)
    model = UnifiedForConditionalGeneration.from_pretrained_parts(bare.config).eval()
    ours = dict(model.encoder.media.vision.backbone.named_parameters())
    for name, param in clip.named_parameters():
        short = name.split("vision_model.", 1)[-1]
        match = [p for n, p in ours.items() if n.endswith(short)]
        assert match and torch.equal(match[0], param), name
    assert not any(p.requires_grad for p in ours.values())
    out = model(**media_batch())
    assert torch.isfinite(out.loss)


def test_pooled_audio_tokens_are_window_means_of_the_stem():
    model = tiny_model(audio={"resampler": "pool", "num_latents": 4})
    batch = media_batch()
    media = model.encoder.media
    with torch.no_grad():
        latents = media(audio_features=batch["audio_features"], audio_mask=batch["audio_mask"])
        feats, _ = media.audio(batch["audio_features"], batch["audio_mask"].bool())  # (2, 1, F', D)
        f = feats.shape[2]
        # by hand: 4 windows over F' frames, each the mean of its frames (adaptive pooling's integer bounds)
        bounds = [(i * f // 4, -(-(i + 1) * f // 4)) for i in range(4)]
        windows = torch.stack([feats[0, 0, a:b].mean(0) for a, b in bounds])  # (4, D)
        pool = media.audio_resampler
        expected = media.audio_proj(pool.norm(pool.proj(windows)))
    assert latents.audio.shape == (2, 1, 1, 4, model.config.text.d_model)
    assert torch.allclose(latents.audio[0, 0, 0], expected, atol=1e-5)
    assert latents.audio_mask.tolist() == [[[True]], [[False]]]  # the second item's audio is all padding
    assert torch.count_nonzero(latents.audio[1]) == 0
    assert torch.isfinite(model(**batch).loss)

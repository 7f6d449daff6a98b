"""A pretrained encoder-decoder as the backbone: for tiny random T5 v1.0, T5 v1.1, mT5, BART and T5Gemma checkpoints
saved to temp dirs, our model equals transformers' own model (logits with padding, step-by-step decoding with the KV
cache, greedy and beam generate), saves and reloads without the checkpoint, grows its vocabulary without touching a
pretrained row, and takes media through both fusion modes."""

from __future__ import annotations

import shutil

import pytest
import torch

from unified.errors import ConfigError
from unified.model import UnifiedConfig, UnifiedModel

PAD = {"t5": 0, "t5_v11": 0, "mt5": 0, "bart": 1, "t5gemma": 0, "t5gemma2": 0}


def _reference(family: str):
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        MT5Config,
        MT5ForConditionalGeneration,
        T5Config,
        T5ForConditionalGeneration,
        T5GemmaConfig,
        T5GemmaForConditionalGeneration,
    )

    torch.manual_seed(0)
    t5 = {"vocab_size": 99, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2,
          "num_heads": 4, "decoder_start_token_id": 0, "relative_attention_num_buckets": 8}
    if family == "t5":  # v1.0: tied embeddings, decoder output rescaled
        return T5ForConditionalGeneration(T5Config(**t5))
    if family == "t5_v11":  # v1.1 / Flan-T5: gated-GELU, untied head
        return T5ForConditionalGeneration(T5Config(**t5, feed_forward_proj="gated-gelu", tie_word_embeddings=False))
    if family == "mt5":
        return MT5ForConditionalGeneration(MT5Config(**t5))
    if family == "bart":
        return BartForConditionalGeneration(BartConfig(vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2,
                                                       encoder_attention_heads=4, decoder_attention_heads=4,
                                                       encoder_ffn_dim=64, decoder_ffn_dim=64,
                                                       max_position_embeddings=64))
    module = {"vocab_size": 99, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "sliding_window": 4,
              "layer_types": ["sliding_attention", "full_attention"]}
    if family == "t5gemma2":  # Gemma 3 based; its encoder carries a SigLIP tower (unused as text backbone)
        from transformers import T5Gemma2Config, T5Gemma2ForConditionalGeneration
        from transformers.models.t5gemma2.configuration_t5gemma2 import (
            T5Gemma2DecoderConfig,
            T5Gemma2EncoderConfig,
        )

        vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "image_size": 32, "patch_size": 16}
        encoder = T5Gemma2EncoderConfig(text_config=module, vision_config=vision, mm_tokens_per_image=4)
        return T5Gemma2ForConditionalGeneration(T5Gemma2Config(encoder=encoder, decoder=T5Gemma2DecoderConfig(
            **module)))
    return T5GemmaForConditionalGeneration(T5GemmaConfig(encoder=module, decoder=module, vocab_size=99))


@pytest.fixture(scope="module", params=list(PAD))
def pair(request, tmp_path_factory):
    """(family, checkpoint dir, transformers' model, ours built on that checkpoint)."""
    family = request.param
    path = tmp_path_factory.mktemp(family) / "lm"
    ref = _reference(family)
    ref.save_pretrained(path)
    ref.eval()
    config = UnifiedConfig.preset("tiny", text={"pretrained_path": str(path)}, fusion={"mode": "xattn"})
    return family, path, ref, UnifiedModel.from_pretrained_parts(config).eval()


def _batch(pad: int):
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12], [13, 14, 15, pad, pad, pad, pad, pad]])
    mask = (torch.arange(8) < torch.tensor([[8], [3]])).long()
    labels = torch.tensor([[20, 21, 22, 23], [24, 25, -100, -100]])
    return ids, mask, labels


def test_logits_and_loss_equal_the_backbones_own(pair):
    family, _, ref, ours = pair
    ids, mask, labels = _batch(PAD[family])
    with torch.no_grad():
        a = ours(input_ids=ids, attention_mask=mask, labels=labels)
        b = ref(input_ids=ids, attention_mask=mask, labels=labels)
    assert (a.logits - b.logits).abs().max().item() <= 1e-5
    assert abs(a.loss.item() - b.loss.item()) <= 1e-5


def test_decoding_step_by_step_with_the_cache_equals_one_pass(pair):
    family, _, ref, ours = pair
    ids, mask, _ = _batch(PAD[family])
    start = ours.config.text.decoder_start_token_id
    targets = torch.tensor([[start, 30, 31, 32, 33], [start, 34, 35, 36, 37]])
    with torch.no_grad():
        full = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=targets).logits  # (2, 5, V)
        encoder_outputs = ours.get_encoder()(input_ids=ids, attention_mask=mask)
        cache, steps = None, []
        for i in range(targets.shape[1]):
            out = ours(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=targets[:, i:i + 1],
                       cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits)
    assert cache.get_seq_length() == targets.shape[1]
    assert (torch.cat(steps, dim=1) - full).abs().max().item() <= 1e-5


def test_greedy_and_beam_generate_give_the_backbones_tokens(pair):
    family, _, ref, ours = pair
    ids, mask, _ = _batch(PAD[family])
    special = sorted({ours.config.text.pad_token_id, ours.config.text.bos_token_id})
    for options in ({"num_beams": 1}, {"num_beams": 3}):
        kwargs = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False, "suppress_tokens": special,
                  **options}
        mine = ours.generate(input_ids=ids, attention_mask=mask, **kwargs)
        theirs = ref.generate(input_ids=ids, attention_mask=mask, **kwargs)
        assert mine.tolist() == theirs.tolist(), options


def test_saved_model_holds_the_backbone_and_loads_without_its_directory(pair, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    family, path, ref, ours = pair
    ours.save_pretrained(tmp_path / "ours")
    moved = tmp_path / "gone"
    shutil.copytree(path, moved)
    shutil.rmtree(path)
    try:
        ids, mask, labels = _batch(PAD[family])
        for loaded in (UnifiedModel.from_pretrained(tmp_path / "ours"),
                       AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "ours")):
            with torch.no_grad():
                a = loaded.eval()(input_ids=ids, attention_mask=mask, labels=labels).logits
                b = ref(input_ids=ids, attention_mask=mask, labels=labels).logits
            assert torch.equal(a, b)
    finally:
        shutil.copytree(moved, path)


def test_gated_media_start_silent_and_then_reach_the_text(pair):
    from model_fixtures import media_batch

    family, path, ref, _ = pair
    batch = media_batch()
    ids = torch.tensor([[50, 51, 20, 21, 22], [50, 30, 31, PAD[family], PAD[family]]])  # 50 = <video>, 51 = <audio>
    batch.update(input_ids=ids, labels=torch.tensor([[40, 41], [42, -100]]))
    config = UnifiedConfig.preset("tiny", text={"pretrained_path": str(path), "video_token_id": 50,
                                                "audio_token_id": 51}, fusion={"mode": "xattn"})
    torch.manual_seed(0)  # the media path's random weights: not whatever the tests before left in the RNG
    model = UnifiedModel.from_pretrained_parts(config).eval()
    text_only = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
    with torch.no_grad():
        reference = ref(**text_only).logits
        silent = model(**batch).logits  # gates at 0 (Flamingo): media present, the LM exactly as it was
        assert (silent - reference).abs().max().item() <= 1e-5
        for block in model.encoder.xattn.values():
            block.attn_gate.fill_(1.0)
            block.ff_gate.fill_(1.0)
        heard = model(**batch).logits
        other = dict(batch, pixel_values=batch["pixel_values"].flip(0), audio_features=batch["audio_features"] * 0)
        changed = model(**other).logits
    # media reach the text: logits move ten times beyond the 1e-5 that "exactly as it was" allows above (on BART,
    # post-norm, by 1e-3..4e-3 over seeds 0-4 with random media weights; on T5 by 0.4..1)
    assert (heard - reference).abs().max().item() > 1e-4
    assert (heard - changed).abs().max().item() > 1e-4


def test_concat_splices_media_into_the_backbones_input(pair):
    from model_fixtures import media_batch

    family, path, _, _ = pair
    batch = media_batch()
    batch.update(input_ids=torch.tensor([[50, 51, 20, 21, 22], [50, 30, 31, PAD[family], PAD[family]]]),
                 labels=torch.tensor([[40, 41], [42, -100]]))
    config = UnifiedConfig.preset("tiny", text={"pretrained_path": str(path), "video_token_id": 50,
                                                "audio_token_id": 51}, fusion={"mode": "concat"})
    model = UnifiedModel.from_pretrained_parts(config)
    out = model.get_encoder()(**{k: v for k, v in batch.items() if k != "labels"})
    assert out.last_hidden_state.shape[1] > batch["input_ids"].shape[1]  # latents spliced in
    loss = model(**batch).loss
    loss.backward()
    assert model.encoder.media.visual_proj.weight.grad.abs().sum() > 0  # the media path trains through the LM


def test_vocabulary_grows_without_touching_a_pretrained_row(pair):
    family, path, ref, _ = pair
    grown = UnifiedConfig.preset("tiny", text={"pretrained_path": str(path), "vocab_size": 130,
                                               "ordinal_ranges": [[110, 130]], "ordinal_width": 0.2})
    model = UnifiedModel.from_pretrained_parts(grown).eval()
    theirs, mine = ref.get_input_embeddings().weight, model.get_input_embeddings().weight
    assert mine.shape == (130, theirs.shape[1]) and torch.equal(mine[:99], theirs)
    assert torch.equal(model.get_output_embeddings().weight[:99], ref.get_output_embeddings().weight)
    new = mine[99:].detach()
    assert (new.std() / theirs.std()).item() == pytest.approx(1.0, abs=0.35)  # the pretrained rows' scale
    bins = torch.nn.functional.normalize(mine[110:130].detach(), dim=-1)
    assert (bins[:-1] * bins[1:]).sum(-1).mean() > (bins[:-5] * bins[5:]).sum(-1).mean()  # neighbours closer
    ids, mask, labels = _batch(PAD[family])
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask, labels=labels).logits
        b = ref(input_ids=ids, attention_mask=mask, labels=labels).logits
    assert a.shape[-1] == 130 and (a[..., :99] - b).abs().max().item() <= 1e-5


def test_backbone_config_errors_name_the_field(tmp_path, pair):
    _, path, _, _ = pair
    with pytest.raises(ConfigError, match="fusion.in_decoder"):
        UnifiedConfig.preset("tiny", text={"pretrained_path": str(path)}, fusion={"in_decoder": True})
    from transformers import CLIPVisionConfig, CLIPVisionModel

    CLIPVisionModel(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2)).save_pretrained(tmp_path / "clip")
    with pytest.raises(ConfigError, match="text.backbone"):
        UnifiedConfig.preset("tiny", text={"pretrained_path": str(tmp_path / "clip")})


def test_every_backbone_parameter_lands_in_its_stage_group(pair):
    from unified.training.stages import group_of

    _, _, _, ours = pair
    lm = ours.lm  # transformers' own model decides which parameters are its encoder's and decoder's
    groups = {name: group_of(name) for name, _ in ours.named_parameters()}
    embedding = lm.get_input_embeddings().weight
    for name, param in ours.named_parameters():
        if param is embedding:
            assert groups[name] == "embeddings", name
    assert groups["encoder.xattn.0.attn_gate"] == "gates" and groups["encoder.xattn.0.attn.q_proj.weight"] == "xattn"
    assert {g for n, g in groups.items() if n.startswith("encoder.media.")} <= {"media", "resampler"}
    encoder_params = {id(p) for p in lm.get_encoder().parameters()} - {id(embedding)}
    in_encoder = [n for n, p in lm.named_parameters() if id(p) in encoder_params]
    assert in_encoder and all(groups["lm." + n] == ("embeddings" if "embed_tokens" in n else "encoder")
                              for n in in_encoder)
    decoder_params = {id(p) for p in lm.get_decoder().parameters()} - {id(embedding)}
    in_decoder = [n for n, p in lm.named_parameters() if id(p) in decoder_params]
    assert in_decoder and all(groups["lm." + n] == ("embeddings" if "embed_tokens" in n else "decoder")
                              for n in in_decoder)  # T5Gemma's decoder keeps an embedding of its own


def test_the_value_feature_starts_silent_on_a_backbone_and_then_reaches_it(pair):
    family, path, ref, _ = pair
    config = UnifiedConfig.preset("tiny", text={"pretrained_path": str(path), "value_feature": True,
                                                "value_ids": [9, 12]}, fusion={"mode": "xattn"})
    ours = UnifiedModel.from_pretrained_parts(config).eval()
    ids, mask, labels = _batch(PAD[family])
    with torch.no_grad():
        before = ours(input_ids=ids, attention_mask=mask, labels=labels).logits
        assert (before - ref(input_ids=ids, attention_mask=mask, labels=labels).logits).abs().max().item() <= 1e-5
        ours.encoder.value_feature.weight.normal_()
        after = ours(input_ids=ids, attention_mask=mask, labels=labels).logits
    assert (after[0] - before[0]).abs().max().item() > 1e-3  # row 0 holds ids 9..11: the feature reaches the text
    assert (after[1] - before[1]).abs().max().item() <= 1e-5  # row 1 has no value ids


def test_headless_model_equals_the_backbones_own_base_model(pair):
    """`UnifiedBaseModel` on a backbone gives the decoder states of transformers' own headless model (T5Model,
    BartModel, T5GemmaModel ... as `AutoModel` loads them from the same checkpoint)."""
    from transformers import AutoModel

    from unified.model import UnifiedBaseModel

    family, path, _, ours = pair
    ids, mask, _ = _batch(PAD[family])
    targets = torch.tensor([[ours.config.text.decoder_start_token_id, 30, 31], [2, 34, 35]])
    base = UnifiedBaseModel.from_pretrained_parts(ours.config).eval()
    reference = AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        mine = base(input_ids=ids, attention_mask=mask, decoder_input_ids=targets).last_hidden_state
        theirs = reference(input_ids=ids, attention_mask=mask, decoder_input_ids=targets).last_hidden_state
    assert mine.shape == theirs.shape == (2, 3, 32)
    assert (mine - theirs).abs().max().item() <= 1e-5


def test_attentions_and_tuples_pass_through_to_the_backbone(pair):
    family, _, ref, ours = pair
    ids, mask, labels = _batch(PAD[family])
    with torch.no_grad():
        a = ours(input_ids=ids, attention_mask=mask, labels=labels, output_attentions=True)
        b = ref(input_ids=ids, attention_mask=mask, labels=labels, output_attentions=True)
        loss, logits = ours(input_ids=ids, attention_mask=mask, labels=labels, return_dict=False)[:2]
    for name in ("encoder_attentions", "decoder_attentions", "cross_attentions"):
        mine, theirs = getattr(a, name), getattr(b, name)
        assert mine is not None and len(mine) == len(theirs), name
        assert all((x - y).abs().max() <= 1e-5 for x, y in zip(mine, theirs)), name
    assert torch.equal(loss, a.loss) and torch.equal(logits, a.logits)


def test_a_bf16_load_puts_the_backbone_in_bf16(pair, tmp_path):
    """`from_pretrained(dtype=torch.bfloat16)` once left the whole backbone in float32 (it was built in the dtype its
    own config.json names); only the family's `_keep_in_fp32_modules` (T5's `wo`) stay float32 now."""
    import re

    _, _, _, ours = pair
    ours.save_pretrained(tmp_path)
    loaded = UnifiedModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    keep = loaded.lm._keep_in_fp32_modules | loaded.lm._keep_in_fp32_modules_strict
    wrong = [name for name, p in loaded.named_parameters() if p.dtype != torch.bfloat16
             and not any(re.search(rf"(?:^|\.){k}(?:\.|$)", name) for k in keep)]
    assert wrong == [] and sum(p.numel() for p in loaded.lm.parameters() if p.dtype == torch.bfloat16) > 0

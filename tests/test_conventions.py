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
    out = subprocess.run([sys.executable, "-c", code, str(saved)], capture_output=True, text=True, timeout=300, check=False,
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
    """Soft prompts: the encoder takes embeddings directly; the same embeddings as the ids give the same logits."""
    _, processor, network = tiny_stack()
    network.eval()
    batch = processor([{"text": "a red circle moves left", "target": "left"}, {"text": "which way?", "target": "up"}])
    reference = network(**batch).logits
    embeds = network.get_input_embeddings()(batch["input_ids"])
    out = network(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert torch.allclose(out.logits, reference, atol=1e-6)
    with pytest.raises(InputError, match="decoder_inputs_embeds"):
        network(**batch, decoder_inputs_embeds=torch.zeros(2, 1, 64))
    with pytest.raises(InputError, match="media need input_ids"):
        network(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                pixel_values=torch.zeros(2, 1, 1, 3, 32, 32))

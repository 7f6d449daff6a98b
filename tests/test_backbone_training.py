"""`unified train` on a pretrained text backbone: the vocabulary keeps the backbone tokenizer's ids (checked
against the tokenizer itself), our ranges come after its embedding rows, the run trains every kind of task, and the
saved model answers without the backbone's directory."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from unified.errors import ConfigError, InputError
from unified.tokenizers import VocabLayout
from unified.tokenizers.backbone import BackboneTokenizer, load_tokenizer

SMOKE = Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny-smoke.yaml"
WORDS = ("a red green blue yellow circle square triangle moves left right up down appears what where which when "
         "how many shapes colour is the clip describe embed text shape first beep high low visible continue "
         "options answer question pick one choose from W X Y Z V U ? . , :")


def byte_alphabet() -> list[str]:
    """GPT-2's byte-to-character table (256 characters), so a byte-level BPE vocabulary covers every text."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = [], 0
    for byte in range(256):
        if byte in keep:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _sentencepiece(file: Path, **pieces) -> None:
    """Write a SentencePiece model trained on WORDS to `file` (`pieces`: its special ids and piece names)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter([WORDS] * 20), model_writer=model, vocab_size=120,
                                   hard_vocab_limit=False, minloglevel=2, **pieces)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(model.getvalue())


def tiny_backbone(root: Path, family: str = "t5") -> Path:
    """A random tiny T5 with a SentencePiece tokenizer trained here, a random tiny BART with a byte-level BPE
    tokenizer, or a random tiny T5Gemma 2 (its encoder's SigLIP tower reads 64 px frames) with a Gemma tokenizer
    from a SentencePiece model trained here, saved as a pretrained directory would be."""
    path = root / family
    torch.manual_seed(0)
    if family == "t5":
        from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

        spm_dir = root / "spm"
        _sentencepiece(spm_dir / "spiece.model", pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
        tokenizer = T5Tokenizer.from_pretrained(str(spm_dir), extra_ids=0)
        lm = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer) + 5, d_model=32, d_kv=8, d_ff=64,
                                                 num_layers=2, num_heads=4, decoder_start_token_id=0,
                                                 feed_forward_proj="gated-gelu", tie_word_embeddings=False))
    elif family == "t5gemma2":
        from transformers import GemmaTokenizer, T5Gemma2Config, T5Gemma2ForConditionalGeneration
        from transformers.models.t5gemma2.configuration_t5gemma2 import (
            T5Gemma2DecoderConfig,
            T5Gemma2EncoderConfig,
        )

        spm_dir = root / "gemma-spm"
        _sentencepiece(spm_dir / "tokenizer.model", pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>",
                       eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>")
        tokenizer = GemmaTokenizer.from_pretrained(str(spm_dir))
        text = {"vocab_size": len(tokenizer) + 4, "hidden_size": 32, "intermediate_size": 64,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
                "sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"]}
        tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                 "image_size": 64, "patch_size": 8}
        encoder = T5Gemma2EncoderConfig(text_config=text, vision_config=tower, mm_tokens_per_image=4)
        lm = T5Gemma2ForConditionalGeneration(T5Gemma2Config(encoder=encoder, decoder=T5Gemma2DecoderConfig(**text)))
    else:
        from transformers import BartConfig, BartForConditionalGeneration, BartTokenizer

        bpe_dir = root / "bpe"
        bpe_dir.mkdir(parents=True, exist_ok=True)
        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        for char in byte_alphabet():
            vocab[char] = len(vocab)
        vocab["Ġt"], vocab["he"] = len(vocab), len(vocab) + 1
        (bpe_dir / "vocab.json").write_text(json.dumps(vocab))
        (bpe_dir / "merges.txt").write_text("#version: 0.2\nĠ t\nh e\n")
        tokenizer = BartTokenizer.from_pretrained(str(bpe_dir))
        lm = BartForConditionalGeneration(BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=2,
                                                     decoder_layers=2, encoder_attention_heads=4,
                                                     decoder_attention_heads=4, encoder_ffn_dim=64,
                                                     decoder_ffn_dim=64, max_position_embeddings=256))
    lm.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_vision_tower(root: Path) -> Path:
    """A random tiny SigLIP vision model reading 64 px frames in 8 px patches, saved as a pretrained directory."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, image_size=64, patch_size=8)).save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return tiny_backbone(tmp_path_factory.mktemp("backbone"))


def test_a_byte_level_bpe_target_gets_bart_s_own_special_tokens(tmp_path):
    from transformers import AutoTokenizer

    path = tiny_backbone(tmp_path, "bart")
    hf = AutoTokenizer.from_pretrained(str(path))
    tok = BackboneTokenizer.from_backbone(path)
    text = "Where is the red circle? X."
    assert tok.encode(text) == hf(text, add_special_tokens=False)["input_ids"]
    assert tok.encode(text, add_eos=True) == hf(text)["input_ids"]  # <s> ... </s>
    assert tok.encode(text, add_eos=True)[0] == hf.bos_token_id
    assert tok.base == len(hf) and tok.decode(tok.encode(f"{text} <int_7>", add_eos=True)) == f"{text} <int_7>"


def test_plain_text_keeps_the_backbone_tokenizers_ids(backbone):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(backbone))
    tok = BackboneTokenizer.from_backbone(backbone, VocabLayout(num_loc_bins=200))
    text = "where is the red circle? describe the clip."
    assert tok.encode(text) == hf(text, add_special_tokens=False)["input_ids"]
    assert tok.encode(text, add_eos=True) == hf(text)["input_ids"]  # T5 puts </s> after a target
    rows = len(hf) + 5  # the backbone's embedding table has five rows past the tokenizer's ids
    assert tok.base == rows and tok.image_token_id == rows and tok.loc_ids.start == rows + 3
    assert tok.vocab_size == rows + 3 + 200 + 1024 + 256 + 100
    ids = tok.encode("where is the red circle? <loc_12><loc_199>")
    assert ids[-2:] == [rows + 3 + 12, rows + 3 + 199]
    assert tok.decode(ids) == "where is the red circle? <loc_12><loc_199>"
    assert tok.decode([*tok.encode("<video> describe the clip."), tok.eos_token_id]) == "<video> describe the clip."
    with pytest.raises(InputError, match="loc"):
        tok.encode("<loc_200>")  # outside this layout's 200 bins


def test_the_vocabulary_saves_and_loads_by_its_kind(backbone, tmp_path):
    tok = BackboneTokenizer.from_backbone(backbone)
    tok.save_pretrained(tmp_path / "saved")
    loaded = load_tokenizer(tmp_path / "saved")
    assert isinstance(loaded, BackboneTokenizer) and loaded.vocab_size == tok.vocab_size
    assert loaded.encode("a blue square <time_3>") == tok.encode("a blue square <time_3>")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["t5", "bart"])
def test_unified_train_on_a_pretrained_backbone(family, tmp_path):
    """Four kinds of task (free text, boxes, multiple choice by options, retrieval) train on the backbone; the run
    resumes; the saved model answers every one of them after the backbone directory is gone."""
    from unified import Model
    from unified.model import UnifiedModel
    from unified.training import load_config, train

    copy = tiny_backbone(tmp_path / "backbones", family)
    overrides = [f"output_dir={tmp_path / 'run'}", "data.synthetic={n_train: 12, n_eval: 4, seed: 4}",
                 "data.tasks=[vqa, grounding, video_mcqa, retrieval]", f"model.text={{pretrained_path: {copy}}}",
                 "model.fusion={mode: concat}", "tokenizer.text_vocab_size=400", "optim.batch_size=4",
                 "optim.max_steps=6", "checkpoint.every=3", "log_with=none", "eval.max_rows=4"]
    cfg = load_config(SMOKE, overrides)
    summary = train(cfg, progress=False, stop_after=3)  # stop at the checkpoint of step 3, then resume
    assert summary == {"step": 3, "stopped": True}
    summary = train(load_config(SMOKE, overrides), progress=False)
    assert summary["skipped_steps"] == 0 and summary["final_integral"] is not None
    assert {t for t, s in summary["tasks"].items() if s["batches"]} <= {"vqa", "grounding", "video_mcqa", "retrieval"}
    saved = json.loads((tmp_path / "run" / "final" / "unified_tokenizer.json").read_text())
    assert saved["kind"] == "backbone"

    from transformers import AutoModelForSeq2SeqLM

    pretrained = AutoModelForSeq2SeqLM.from_pretrained(str(copy)).get_input_embeddings().weight.detach().clone()
    shutil.rmtree(copy)
    network = UnifiedModel.from_pretrained(tmp_path / "run" / "final")
    saved = Model.from_pretrained(tmp_path / "run" / "final")
    assert network.config.text.vocab_size == saved.processor.tokenizer.vocab_size
    assert network.get_input_embeddings().weight.shape[0] > pretrained.shape[0]  # our ranges appended
    model = Model.from_pretrained(tmp_path / "run" / "final")
    test = tmp_path / "run" / "data" / "test"
    row = json.loads((test / "video_mcqa.jsonl").read_text().splitlines()[0])
    video = str(test / row["video"])
    assert model.generate(task="video_mcqa", video=video, question=row["question"],
                          options=row["options"]) in [*row["options"], ""]
    box = model.generate(task="grounding", image=str(test / json.loads(
        (test / "grounding.jsonl").read_text().splitlines()[0])["image"]), phrase="red circle")
    assert box is None or len(list(box)) == 4
    assert isinstance(model.generate(task="vqa", video=video, question="what colour is the circle?"), str)
    assert model.generate(task="retrieval", video=video).shape == (network.config.text.embed_dim,)

    from transformers import AutoTokenizer

    final = str(tmp_path / "run" / "final")  # transformers' Auto classes: our vocabulary with the flag, theirs without
    ours = AutoTokenizer.from_pretrained(final, trust_remote_code=True)
    assert type(ours).__name__ == "BackboneTokenizer" and ours.vocab_size == model.processor.tokenizer.vocab_size
    assert "Tokenizer" in type(AutoTokenizer.from_pretrained(final)).__name__


@pytest.mark.slow
def test_a_run_packs_to_a_token_budget_on_a_t5gemma2_backbone_under_both_fusion(tmp_path):
    """The combination packing once refused twice over (a T5Gemma 2 backbone, `fusion.mode: both`) trains on
    mixed batches packed to a token budget: every step runs and every task's loss is finite."""
    import math

    from unified.training import load_config, train

    copy = tiny_backbone(tmp_path / "backbones", "t5gemma2")
    overrides = [f"output_dir={tmp_path / 'run'}", "data.synthetic={n_train: 12, n_eval: 4, seed: 4}",
                 "data.tasks=[vqa, caption, video_mcqa]", f"model.text={{pretrained_path: {copy}}}",
                 "model.fusion={mode: both, gate_init: 0.5}", "data.pack=true", "data.pack_length=96",
                 "data.pack_target_length=24", "mixture.mixed_batches=true", "optim.batch_size=2",
                 "optim.max_steps=3", "checkpoint.every=100", "log_with=none", "eval.every=0",
                 "data.num_workers=0", "tokenizer.text_vocab_size=400"]
    summary = train(load_config(SMOKE, overrides), progress=False)
    losses = [t["last_loss"] for t in summary["tasks"].values() if t["batches"]]
    assert summary["steps"] == 3 and len(losses) >= 2 and all(math.isfinite(x) for x in losses)


def test_a_text_vocab_size_next_to_a_text_backbone_raises(backbone):
    from unified.training import load_config

    with pytest.raises(ConfigError, match="keeps its own tokenizer"):
        load_config(SMOKE, [f"model.text={{pretrained_path: {backbone}}}"])  # tiny-smoke sets text_vocab_size


@pytest.mark.slow
def test_per_task_lora_on_a_t5_backbone_uses_its_own_module_names(tmp_path):
    """lora.enabled on a T5 backbone: adapters go on T5's q/k/v/o/wi_0/wi_1/wo (not our layers' names, which it
    lacks), the backbone's weights stay bitwise as pretrained, the adapters move, and the saved model loads them."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSeq2SeqLM

    from unified import Model
    from unified.training import load_config, train

    path = tiny_backbone(tmp_path / "backbones", "t5")
    pretrained = {k: v.clone() for k, v in AutoModelForSeq2SeqLM.from_pretrained(str(path)).state_dict().items()}
    overrides = [f"output_dir={tmp_path / 'run'}", "data.synthetic={n_train: 8, n_eval: 0, seed: 4}",
                 "data.tasks=[vqa, caption]", f"model.text={{pretrained_path: {path}}}", "model.fusion={mode: concat}",
                 "tokenizer.text_vocab_size=400", "optim.batch_size=4", "optim.max_steps=4", "log_with=none",
                 "checkpoint.every=100", "lora={enabled: true, r: 4, groups: {vqa: language, caption: language}}",
                 "stages=[{name: adapters, train: [lora]}]"]
    train(load_config(SMOKE, overrides), progress=False)
    final = tmp_path / "run" / "final"
    base = load_file(str(final / "model.safetensors"))
    compared = 0
    for name, weight in pretrained.items():
        saved = base.get(f"lm.{name}")
        if saved is None:  # tied to another tensor (T5's embed_tokens share `shared`): saved once
            continue
        assert torch.equal(saved[: weight.shape[0]], weight), name  # grown tables: the pretrained rows kept
        compared += 1
    assert compared >= len(pretrained) - 3
    adapter = load_file(str(final / "adapters" / "language" / "adapter_model.safetensors"))
    wrapped = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in adapter}
    assert wrapped == {"q", "k", "v", "o", "wi_0", "wi_1", "wo"}
    assert any(bool(v.abs().sum()) for k, v in adapter.items() if "lora_B" in k)  # B starts at 0 and trained
    model = Model.from_pretrained(final)
    assert model.network.task_adapters.names == ["language"]
    assert isinstance(model.generate(task="caption", video=str(tmp_path / "run" / "data" / "train" / json.loads(
        (tmp_path / "run" / "data" / "train" / "caption.jsonl").read_text().splitlines()[0])["video"])), str)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_gradient_checkpointing_reaches_the_backbone_and_leaves_gradients_unchanged(family, tmp_path):
    from unified.model import UnifiedConfig, UnifiedModel

    path = tiny_backbone(tmp_path, family)
    config = UnifiedConfig.preset("tiny", text={"pretrained_path": str(path)}, fusion={"mode": "xattn"})
    torch.manual_seed(0)
    model = UnifiedModel.from_pretrained_parts(config).train()
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 1]])
    labels = torch.tensor([[5, 6, 1], [7, 1, -100]])

    def grads():
        model.zero_grad()
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    torch.manual_seed(1)
    plain = grads()
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    layers = [m for m in model.lm.modules() if getattr(m, "gradient_checkpointing", False)]
    assert layers, "no layer of the backbone checkpoints"
    torch.manual_seed(1)
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_a_backbone_model_runs_in_bf16(family, tmp_path):
    """bf16 autocast gives the fp32 loss within 5 %, and a model whose weights are cast to bf16 generates."""
    from unified.model import UnifiedConfig, UnifiedModel

    path = tiny_backbone(tmp_path, family)
    config = UnifiedConfig.preset("tiny", text={"pretrained_path": str(path)}, fusion={"mode": "concat"})
    torch.manual_seed(0)
    model = UnifiedModel.from_pretrained_parts(config).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 1, 1]])
    batch = {"input_ids": ids, "attention_mask": (ids != 1).long(), "labels": torch.tensor([[5, 6, 1], [7, 1, -100]])}
    with torch.no_grad():
        full = model(**batch).loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(**batch).loss
    assert torch.isfinite(half) and abs(float(half) - float(full)) < 0.05 * float(full)
    bf16 = UnifiedModel.from_pretrained_parts(config).eval().to(torch.bfloat16)
    out = bf16.generate(input_ids=ids, attention_mask=batch["attention_mask"], max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 2 and out.dtype == torch.long

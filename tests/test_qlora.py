"""QLoRA (`model.quantize`): LoRA adapters trained on a frozen int8 base (torchao, CPU), saved and loaded with the
base still int8; nf4 and the settings it cannot go with refused naming what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unified.errors import ConfigError
from unified.model.quantization import torchao_missing
from unified.training import load_config, train
from unified.training.build import build_stack

ROOT = Path(__file__).parents[1]
LORA = ROOT / "training" / "configs" / "lora-per-task.yaml"


def _config(tmp_path, *overrides):
    return load_config(LORA, [f"output_dir={tmp_path}", "data.synthetic={n_train: 4, n_eval: 0, seed: 0}",
                              "data.tasks=[caption, vqa]", "optim.max_steps=2", "optim.batch_size=2",
                              "checkpoint.every=2", "tokenizer.text_vocab_size=120", *overrides])


@pytest.mark.skipif(torch.cuda.is_available(), reason="on CUDA the reason names bitsandbytes alone")
def test_nf4_on_cpu_names_its_requirement(tmp_path):
    with pytest.raises(ConfigError, match="model.quantize.*needs a CUDA device"):
        _config(tmp_path, "model.quantize=nf4")


def test_quantize_needs_adapters_and_a_frozen_base(tmp_path):
    with pytest.raises(ConfigError, match="lora.enabled"):
        _config(tmp_path, "model.quantize=int8", "lora.enabled=false", "lora.r=8", "lora.alpha=16", "lora.groups={}",
                "stages=[{name: all, train: [encoder, decoder]}]")
    with pytest.raises(ConfigError, match="stages.*frozen"):
        _config(tmp_path, "model.quantize=int8", "stages=[{name: a, train: [lora, decoder]}]")


@pytest.mark.skipif(torchao_missing() is not None, reason=str(torchao_missing()))
def test_int8_qlora_trains_adapters_on_a_frozen_int8_base(tmp_path):
    from unified.api import Model

    train(_config(tmp_path, "model.quantize=int8"), progress=False)
    final = tmp_path / "final"
    saved = load_file(str(final / "model.safetensors"))
    q = "decoder.layers.0.self_attn.q_proj"
    assert saved[f"{q}._weight_qdata"].dtype == torch.int8  # the base is saved int8
    step2 = load_file(str(tmp_path / "checkpoints" / "step-00000002" / "model.safetensors"))
    assert torch.equal(step2[f"{q}._weight_qdata"], saved[f"{q}._weight_qdata"])
    adapters = load_file(str(final / "adapters" / "language" / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapters.items())  # gradients flowed
    model = Model.from_pretrained(final)
    layer = model.network.get_submodule(q)
    assert type(layer.base_layer.weight.data).__name__ == "Int8Tensor"  # loads int8, adapters on top
    cfg = _config(tmp_path / "again", "model.quantize=int8")
    cfg.model.init_from, cfg.model.quantize = str(final), "none"
    with pytest.raises(ConfigError, match=r"model.init_from.*is quantised \(int8\).*model.quantize: int8"):
        build_stack(cfg, {})  # a quantised base given to training without model.quantize
    clip = next((tmp_path / "data").rglob("*.mp4"))
    assert isinstance(model.generate(task="vqa", video=str(clip), question="what colour is it?", max_new_tokens=2),
                      str)

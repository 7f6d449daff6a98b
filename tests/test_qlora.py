"""QLoRA (`model.quantize`): LoRA adapters trained on a frozen int8 base (torchao, CPU) or nf4 base (bitsandbytes,
CPU here), saved and loaded with the base still quantised, resumed exactly; the settings it cannot go with refused
naming what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unified.errors import ConfigError, InputError
from unified.model import UnifiedModel
from unified.model.nf4 import bitsandbytes_missing
from unified.model.quantization import load_quantized, torchao_missing
from unified.training import load_config, train
from unified.training.build import build_stack

ROOT = Path(__file__).parents[1]
LORA = ROOT / "training" / "configs" / "lora-per-task.yaml"


def _config(tmp_path, *overrides):
    return load_config(LORA, [f"output_dir={tmp_path}", "data.synthetic={n_train: 4, n_eval: 0, seed: 0}",
                              "data.tasks=[caption, vqa]", "optim.max_steps=2", "optim.batch_size=2",
                              "checkpoint.every=2", "tokenizer.text_vocab_size=120", *overrides])


def test_nf4_without_bitsandbytes_names_its_requirement(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # not importable: find_spec answers None
    with pytest.raises(ConfigError, match=r"model.quantize.*nf4.*pip install 'unified\[quant\]'"):
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


NF4 = pytest.mark.skipif(bitsandbytes_missing() is not None, reason=str(bitsandbytes_missing()))
Q = "decoder.layers.0.self_attn.q_proj"


@NF4
@pytest.mark.slow
def test_bitsandbytes_is_imported_without_asking_the_network():
    """On CPU, a plain `import bitsandbytes` asks the hub for an optional kernel (huggingface.co:443); ours asks
    nothing. Run in a fresh process with every lookup and connection refused and recorded."""
    code = ("import socket\n"
            "calls = []\n"
            "def refuse(*args, **kwargs):\n"
            "    calls.append(args[:1])\n"
            "    raise OSError('no network here')\n"
            "socket.getaddrinfo = socket.create_connection = refuse\n"
            "from unified.model.nf4 import bitsandbytes\n"
            "from huggingface_hub import constants\n"
            "offline = constants.HF_HUB_OFFLINE\n"
            "bnb = bitsandbytes()\n"
            "assert hasattr(bnb.nn, 'Linear4bit') and constants.HF_HUB_OFFLINE == offline\n"
            "print(calls)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@NF4
def test_nf4_weights_are_within_nf4s_error_of_the_float_weights():
    """bitsandbytes' dequantised weights against the float ones: each value within half the widest gap between nf4
    levels (0.152 of its block's absmax, 64 values a block) plus what the 8-bit absmax moves a level by (under 1% of
    the absmax); the values are those of rounding to the nearest of the 16 levels, computed here from the levels."""
    from unified.model import UnifiedConfig, UnifiedModel
    from unified.model.nf4 import dequantized
    from unified.model.quantization import quantize_linears

    torch.manual_seed(0)
    network = UnifiedModel(UnifiedConfig.preset("tiny"))
    floats = {n: m.weight.detach().clone() for n, m in network.named_modules() if isinstance(m, torch.nn.Linear)}
    names = quantize_linears(network, "nf4")
    assert Q in names and not any(n.startswith("media") or n == "lm_head" for n in names)
    levels = torch.tensor([-1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0, 0.0796, 0.1609,
                           0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1.0])
    for name in names:
        w = floats[name].reshape(-1, 64)  # (blocks, 64)
        absmax = w.abs().amax(dim=1, keepdim=True)
        nearest = levels[((w / absmax)[..., None] - levels).abs().argmin(-1)] * absmax  # exact-absmax nf4
        got = dequantized(network.get_submodule(name).weight).float().reshape(-1, 64)
        assert ((got - w).abs() <= (0.152 + 0.01) * absmax).all(), name
        assert ((got - nearest).abs() <= 0.01 * absmax + 1e-7).float().mean() > 0.99, name  # same level chosen
        assert 0.05 < (got - w).norm() / w.norm() < 0.15, name  # 4 bits: neither lossless nor wrong


@NF4
@pytest.mark.slow
def test_nf4_qlora_trains_saves_loads_and_resumes_exactly(tmp_path):
    from unified.api import Model

    args = ("model.quantize=nf4", "data.tasks=[caption]", "optim.max_steps=6", "optim.warmup_steps=1",
            "checkpoint.every=3")
    summary = train(_config(tmp_path / "a", *args), progress=False)
    final = tmp_path / "a" / "final"
    saved = load_file(str(final / "model.safetensors"))
    assert saved[f"{Q}.weight"].dtype == torch.uint8 and f"{Q}.weight.absmax" in saved  # the base is saved nf4
    step3 = load_file(str(tmp_path / "a" / "checkpoints" / "step-00000003" / "model.safetensors"))
    frozen = [k for k in saved if ".weight." in k or saved[k].dtype == torch.uint8]  # packed codes, quant states
    assert frozen and all(torch.equal(step3[k], saved[k]) for k in frozen)  # the same nf4 bytes
    adapters = load_file(str(final / "adapters" / "language" / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapters.items())  # gradients flowed
    caption = summary["tasks"]["caption"]
    assert caption["last_loss"] < caption["first_loss"]

    train(_config(tmp_path / "b", *args), progress=False, stop_after=3)
    train(_config(tmp_path / "b", *args), progress=False)  # resumes from step 3
    for part in ("model.safetensors", "adapters/language/adapter_model.safetensors"):
        a, b = (load_file(str(tmp_path / x / "final" / part)) for x in "ab")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part

    model = Model.from_pretrained(final)
    layer = model.network.get_submodule(Q)
    assert type(layer).__module__ == "peft.tuners.lora.bnb" and layer.base_layer.weight.dtype == torch.uint8
    assert torch.equal(layer.base_layer.weight.data, saved[f"{Q}.weight"])
    cfg = _config(tmp_path / "again", "model.quantize=int8")
    cfg.model.init_from = str(final)
    with pytest.raises(ConfigError, match=r"model.init_from.*is quantised \(nf4\).*model.quantize: nf4"):
        build_stack(cfg, {})
    clip = next((tmp_path / "a" / "data").rglob("*.mp4"))
    assert isinstance(model.generate(task="caption", video=str(clip), max_new_tokens=2), str)


def test_an_nf4_model_without_bitsandbytes_is_refused_naming_it(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text('{"quantization": {"method": "bitsandbytes", "scheme": "nf4"}}')
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(InputError, match=r"quantised with bitsandbytes.*pip install 'unified\[quant\]'"):
        load_quantized(tmp_path, torch.float32, UnifiedModel)

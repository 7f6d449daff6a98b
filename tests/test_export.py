"""`unified export`: a smaller dtype kept on reload, int8 / int4 linear layers through torchao (skipped without it),
adapters folded in one directory per adapter, a size budget that writes nothing when it is exceeded."""

from __future__ import annotations

import json

import pytest
import torch
from task_rows import tiny_stack, write_media

from unified import Model, export
from unified.cli import main
from unified.errors import InputError
from unified.model.adapters import TaskAdapters
from unified.model.quantization import torchao_missing

needs_torchao = pytest.mark.skipif(torchao_missing() is not None, reason=str(torchao_missing()))
QUESTION = dict(question="which way does the shape move?", options=["left", "right", "up"])


def _size(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    _, processor, network = tiny_stack(0)
    Model(network, processor, {"caption": {}, "video_mcqa": {"mode": "rank"}}).save_pretrained(root / "fp32")
    return root / "fp32", Model.from_pretrained(root / "fp32"), write_media(root)


def _logits(model, processor):
    batch = processor({"text": "a red circle", "target": "left"})
    with torch.no_grad():
        return model.network(**batch).logits.float()


def test_bf16_export_is_half_the_size_and_reloads_in_bf16(source, tmp_path):
    path, model, media = source
    out = export(path, tmp_path / "bf16", dtype="bf16")
    again = Model.from_pretrained(out)
    assert {p.dtype for p in again.network.parameters()} == {torch.bfloat16}  # not cast back to float32
    weights = (out / "model.safetensors").stat().st_size / (path / "model.safetensors").stat().st_size
    assert 0.49 < weights < 0.51
    reference = _logits(model, model.processor)
    assert ((_logits(again, model.processor) - reference).norm() / reference.norm()) < 0.02  # bf16: 8 mantissa bits
    assert again.generate(task="video_mcqa", video=media["video"], **QUESTION) == model.generate(
        task="video_mcqa", video=media["video"], **QUESTION)
    assert sorted(again.task_options) == ["caption", "video_mcqa"]


@needs_torchao
def test_int8_export_is_smaller_and_close(source, tmp_path):
    path, model, media = source
    assert main(["export", str(path), "--out", str(tmp_path / "int8"), "--quantize", "int8", "--dtype", "bf16"]) == 0
    out = tmp_path / "int8"
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"]["scheme"] == "int8" and config["export"]["dtype"] == "bfloat16"
    again = Model.from_pretrained(out)
    weight = again.network.get_submodule("decoder.layers.0.self_attn.q_proj").weight
    assert type(weight.data).__name__ == "Int8Tensor" and weight.dtype == torch.bfloat16  # as written, not float32
    kept = again.network.get_submodule("encoder.media.visual_resampler.layers.0.attn.q_proj").weight
    assert type(kept.data) is torch.Tensor and kept.dtype == torch.bfloat16  # media stay in the export's dtype
    assert _size(out) < 0.5 * _size(path)
    reference = _logits(model, model.processor)
    assert ((_logits(again, model.processor) - reference).norm() / reference.norm()) < 0.05  # measured ~0.016
    assert again.generate(task="video_mcqa", video=media["video"], **QUESTION) == model.generate(
        task="video_mcqa", video=media["video"], **QUESTION)
    assert isinstance(again.generate(task="caption", video=media["video"], max_new_tokens=3), str)
    with pytest.raises(InputError, match="already quantised"):
        export(out, tmp_path / "twice", dtype="fp16")


def test_max_size_refuses_and_writes_nothing(source, tmp_path, capsys):
    path, _, _ = source
    out = tmp_path / "small"
    assert main(["export", str(path), "--out", str(out), "--max-size", "1MB", "--dtype", "bf16"]) == 2
    err = capsys.readouterr().err
    assert "the export reached 1.5" in err and "over the budget of 1.00 MB" in err
    assert not out.exists() and not list(tmp_path.iterdir())  # no half-written folder either
    (out / "keep").mkdir(parents=True)
    with pytest.raises(InputError, match="already holds files"):
        export(path, out)


def test_adapters_fold_into_one_directory_each(tmp_path):
    _, processor, network = tiny_stack(0)
    adapters = TaskAdapters.attach(network, ["caption", "vqa"], r=2)
    torch.manual_seed(1)
    for name, p in network.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)  # peft starts B at 0: make each adapter change the output
    model = Model(network, processor, {"caption": {}, "vqa": {}})
    model.save_pretrained(tmp_path / "src")
    with pytest.raises(InputError, match="--merge-adapters"):
        export(tmp_path / "src", tmp_path / "q", quantize="int8")
    out = export(tmp_path / "src", tmp_path / "out", merge_adapters=True)
    assert sorted(p.name for p in out.iterdir()) == ["caption", "vqa"]
    for task in ("caption", "vqa"):
        folded = Model.from_pretrained(out / task)
        assert not (out / task / "adapters").exists() and list(folded.task_options) == [task]
        adapters.activate(task)
        assert torch.allclose(_logits(folded, processor), _logits(model, processor), atol=1e-4)

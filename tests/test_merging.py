"""Merging: each method on tensors worked out by hand, then two tiny saved models merged into one that loads,
answers, and knows the union of their tasks; mismatched models are refused naming what differs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from task_rows import tiny_stack, write_media

from unified import Model, merge
from unified.cli import main
from unified.errors import InputError
from unified.merging.methods import dare, linear, slerp, svd_delta, ties, truncate_rank


# ------------------------------------------------------------------------------------------- methods, by hand
def test_slerp_of_orthogonal_vectors():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    h = 1 / math.sqrt(2)
    assert torch.allclose(slerp(a, b, 0.5), torch.tensor([h, h, 0.0]))  # (a + b) / sqrt(2)
    # a third of the way along the quarter circle: (cos 30°, sin 30°)
    assert torch.allclose(slerp(a, b, 1 / 3), torch.tensor([math.sqrt(3) / 2, 0.5, 0.0]))
    assert torch.allclose(slerp(2 * a, 2 * b, 0.5), torch.tensor([2 * h, 2 * h, 0.0]))  # lengths carried along
    assert torch.equal(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b)
    assert torch.allclose(slerp(a, 3 * a, 0.5), 2 * a)  # parallel: linear interpolation, SLERP's limit


def test_linear_is_the_weighted_average():
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[5.0, -2.0]])
    assert torch.equal(linear([a, b]), torch.tensor([[3.0, 0.0]]))
    assert torch.equal(linear([a, b], [1.0, 3.0]), torch.tensor([[4.0, -1.0]]))  # (a + 3b) / 4


def test_ties_elects_signs_on_a_three_model_example():
    base = torch.ones(4)
    deltas = [torch.tensor([3.0, -1.0, 2.0, 0.5]), torch.tensor([-1.0, -2.0, 1.0, -4.0]),
              torch.tensor([2.5, 4.0, -2.0, 1.0])]
    models = [base + d for d in deltas]
    # no trimming: column sums 4.5, 1, 1, -2.5 elect + + + -; the mean of the agreeing entries per column:
    # (3 + 2.5) / 2, 4, (2 + 1) / 2, -4
    assert torch.allclose(ties(models, base, density=1.0), base + torch.tensor([2.75, 4.0, 1.5, -4.0]))
    # keeping each task vector's 2 largest entries: [3, 0, 2, 0], [0, -2, 0, -4], [2.5, 4, 0, 0];
    # sums 5.5, 2, 2, -4 elect + + + -; column 1 keeps 4 (the -2 disagrees), column 2 keeps 2 alone
    assert torch.allclose(ties(models, base, density=0.5), base + torch.tensor([2.75, 4.0, 2.0, -4.0]))


def test_svd_delta_recovers_a_delta_of_known_rank():
    g = torch.Generator().manual_seed(0)
    base, older = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    delta = torch.randn(6, 2, generator=g) @ torch.randn(2, 5, generator=g)  # rank 2 by construction
    newer = base + delta
    assert torch.allclose(truncate_rank(delta, 2), delta, atol=1e-5)
    assert not torch.allclose(truncate_rank(delta, 1), delta, atol=1e-2)
    assert torch.allclose(truncate_rank(torch.diag(torch.tensor([3.0, 2.0, 1.0])), 1),
                          torch.diag(torch.tensor([3.0, 0.0, 0.0])))  # Eckart-Young on a diagonal
    assert torch.allclose(svd_delta(older, newer, base, rank=2, t=1.0), newer, atol=1e-5)
    assert torch.allclose(svd_delta(older, newer, base, rank=2, t=0.0), older)
    bias_old, bias_new, bias_base = torch.zeros(3), torch.tensor([1.0, 2.0, 2.0]), torch.zeros(3)
    assert torch.allclose(svd_delta(bias_old, bias_new, bias_base, rank=1, t=1.0), bias_new)  # 1-D: whole delta


def test_dare_drops_and_rescales_keeping_the_expectation():
    base, delta = torch.full((20000,), 2.0), torch.full((20000,), 1.0)
    out = dare([base + delta], base, density=0.25, generator=torch.Generator().manual_seed(3))
    kept = out != base
    assert torch.equal(out[kept], torch.full_like(out[kept], 2.0 + 4.0))  # kept entries: delta / (1 - p) = 4
    assert abs(kept.float().mean().item() - 0.25) < 0.02  # about a quarter kept
    assert abs((out - base).mean().item() - 1.0) < 0.06  # the expectation is the task vector
    again = dare([base + delta], base, density=0.25, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, again)  # the mask is the seed's


# ------------------------------------------------------------------------------------------- saved models
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A "trained" on caption and vqa, B on classify, a base (seeds 0, 1, 2): one vocabulary."""
    root = tmp_path_factory.mktemp("merge")
    _, processor, first = tiny_stack()
    paths = {}
    for name, seed, tasks in (("a", 0, ["caption", "vqa"]), ("b", 1, ["classify"]), ("base", 2, [])):
        torch.manual_seed(seed)
        network = type(first)(first.config)  # one vocabulary, three initialisations
        Model(network, processor, {t: {} for t in tasks}).save_pretrained(root / name)
        paths[name] = root / name
    return paths


def test_merged_models_load_answer_and_know_both_task_sets(saved, tmp_path):
    paths = saved
    out = merge([paths["a"], paths["b"]], tmp_path / "merged", method="linear", weights=[1.0, 3.0])
    wa, wb = load_file(str(paths["a"] / "model.safetensors")), load_file(str(paths["b"] / "model.safetensors"))
    merged = load_file(str(out / "model.safetensors"))
    key = next(k for k in merged if k.endswith("q_proj.weight"))
    assert torch.allclose(merged[key], (wa[key] + 3 * wb[key]) / 4)
    model = Model.from_pretrained(out)
    assert sorted(model.task_options) == ["caption", "classify", "vqa"]  # the union
    assert json.loads((out / "config.json").read_text())["merge"]["method"] == "linear"
    media = write_media(tmp_path)
    assert isinstance(model.generate(task="caption", video=media["video"], max_new_tokens=3), str)
    with torch.no_grad():
        state = model.network.state_dict()
    assert torch.allclose(state[key], merged[key])


def test_cli_merge_with_svd_delta_and_refusals(saved, tmp_path, capsys):
    paths = saved
    out = tmp_path / "merged"
    args = ["merge", str(paths["a"]), str(paths["b"]), "--method", "svd-delta", "--base", str(paths["base"]),
            "--rank", "2", "--t", "1.0", "--out", str(out)]
    assert main(args) == 0
    merged, wb, wbase = (load_file(str(p / "model.safetensors")) for p in (out, paths["b"], paths["base"]))
    key = next(k for k in merged if k.endswith("q_proj.weight"))
    expected = wbase[key] + truncate_rank(wb[key] - wbase[key], 2)  # t = 1: base + rank-2 delta of B
    assert torch.allclose(merged[key], expected, atol=1e-5)
    assert main(args) == 2 and "already holds files" in capsys.readouterr().err  # nothing overwritten
    assert main(["merge", str(paths["a"]), str(paths["b"]), "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["merge"]["method"] == "linear"
    assert main(["merge", str(paths["a"]), str(paths["b"]), "--method", "ties", "--out", str(tmp_path / "x")]) == 2
    assert "--base" in capsys.readouterr().err


def test_mismatched_models_are_refused_naming_the_tensor(saved, tmp_path):
    paths = saved
    odd = tmp_path / "odd"
    odd.mkdir()
    for item in paths["b"].iterdir():
        (odd / item.name).write_bytes(item.read_bytes())
    weights = load_file(str(odd / "model.safetensors"))
    key = next(k for k in weights if k.endswith("q_proj.weight"))
    weights[key] = weights[key][:-1].contiguous()
    save_file(weights, str(odd / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InputError, match=f"tensor {key}.*shape"):
        merge([paths["a"], odd], tmp_path / "out")
    del weights[key]
    save_file(weights, str(odd / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InputError, match=f"tensor {key}"):
        merge([paths["a"], odd], tmp_path / "out")
    config = (odd / "config.json").read_text()
    (odd / "config.json").write_text(config.replace('"d_ff": 128', '"d_ff": 96'))
    with pytest.raises(InputError, match="config text.d_ff=96"):
        merge([paths["a"], odd], tmp_path / "out")
    (odd / "config.json").write_text(config)
    (odd / "text.model").write_bytes(b"another vocabulary")
    with pytest.raises(InputError, match="vocabulary text.model"):
        merge([paths["a"], odd], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_adapters_merge_into_one_through_peft(tmp_path):
    """Two per-task adapters stacked (`cat`) with weights 0.3 and 0.7: each layer's merged delta B A is
    0.3 s B1 A1 + 0.7 s B2 A2 (s = alpha / r), from the saved factors; the merged model loads and answers both."""
    from unified.merging.adapters import merge_adapters
    from unified.model.adapters import TaskAdapters

    _, processor, network = tiny_stack(0)
    TaskAdapters.attach(network, ["caption", "vqa"], r=2, alpha=4)
    torch.manual_seed(1)
    for name, p in network.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    Model(network, processor, {"caption": {}, "vqa": {}}).save_pretrained(tmp_path / "src")
    assert main(["merge-adapters", str(tmp_path / "src"), "--weights", "0.3", "0.7", "--out",
                 str(tmp_path / "one")]) == 0
    out = tmp_path / "one"
    index = json.loads((out / "adapters" / "adapters.json").read_text())
    assert index["names"] == ["merged"] and index["groups"] == {"caption": "merged", "vqa": "merged"}
    merged = load_file(str(out / "adapters" / "merged" / "adapter_model.safetensors"))
    parts = [load_file(str(tmp_path / "src" / "adapters" / n / "adapter_model.safetensors"))
             for n in ("caption", "vqa")]
    key = next(k for k in merged if "decoder.layers.0.self_attn.q_proj.lora_A" in k)
    a, b = key, key.replace("lora_A", "lora_B")
    expected = sum(w * 2.0 * (p[b] @ p[a]) for w, p in zip((0.3, 0.7), parts))  # s = 4 / 2
    assert torch.allclose(merged[b] @ merged[a], expected, atol=1e-5)  # merged scaling: alpha = r, s = 1
    model = Model.from_pretrained(out)
    assert sorted(model.task_options) == ["caption", "vqa"] and model.network.task_adapters.names == ["merged"]
    with pytest.raises(InputError, match="one weight per adapter"):
        merge_adapters(tmp_path / "src", tmp_path / "two", weights=[1.0])

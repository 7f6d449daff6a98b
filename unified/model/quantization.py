"""Weight-only quantisation of the language model's linear layers (through torchao), written to and read from
safetensors.

    quantize_linears(network, "int8")            # nn.Linear weights -> torchao int8 tensors, in place
    tensors, metadata = quantized_state(network)  # plain tensors + torchao's description: safetensors.save_file
    network = load_quantized(directory, torch.bfloat16)

What is quantised: every `nn.Linear` of the encoder and decoder stacks (attention, feed-forward, gated
cross-attention) whose input width fits the scheme's groups. What is not: the media encoders, the perceiver
resamplers, the embeddings and the LM head (tied to the embeddings): they stay in the export's dtype, since they
are a small share of the weights and the embeddings carry the location and value bins whose neighbours must stay
apart. `int8`: one scale per output row; `int4`: a scale per group of 32 inputs, stored unpacked (one int4 value
per int8 byte: torchao's CPU int4 format), so on disk it is no smaller than int8. Packed int4 layouts need CUDA.
`nf4` (training only, `model.quantize: nf4`): the same linears as bitsandbytes 4-bit NormalFloat layers, two values
a byte with a scale per block of 64 (`unified.model.nf4`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from transformers import GenerationConfig

from unified.errors import ConfigError, InputError
from unified.model.nf4 import BLOCKSIZE, bitsandbytes_missing, is_nf4, load_nf4, nf4_tensors, quantize_nf4

__all__ = ["SCHEMES", "describe", "load_quantized", "quantize_linears", "quantized_state",
           "read_quantization", "save_quantized", "torchao_missing"]

SCHEMES = ("int8", "int4")  # export's schemes (torchao)
INT4_GROUP = 32
NOT_QUANTIZED = re.compile(r"(.*\.)?(media|vision_tower|multi_modal_projector|audio_tower)(\..*)?|(.*\.)?lm_head")


def torchao_missing() -> str | None:
    """Why torchao cannot be used here (None when it can)."""
    try:
        import torchao  # noqa: F401
    except ImportError as err:
        return f"needs torchao (pip install 'unified[quant]'): {err}"
    return None


def _config(scheme: str) -> Any:
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerGroup

    if scheme == "int8":
        return Int8WeightOnlyConfig(version=2)
    return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(INT4_GROUP))


def quantize_linears(network: nn.Module, scheme: str) -> list[str]:
    """Quantise the language model's linear weights in place (see the module docstring); returns their names."""
    if scheme == "nf4":
        missing = bitsandbytes_missing()
        if missing:
            raise ConfigError("quantize", scheme, missing)
        chosen = [name for name, m in network.named_modules() if isinstance(m, nn.Linear) and not
                  NOT_QUANTIZED.fullmatch(name)]
        quantize_nf4(network, chosen)
        network.is_loaded_in_4bit = True  # peft then wraps these layers in its bitsandbytes 4-bit LoRA layer
        return chosen
    if scheme not in SCHEMES:
        raise ConfigError("quantize", scheme, f"expected one of {', '.join(SCHEMES)}")
    missing = torchao_missing()
    if missing:
        raise ConfigError("quantize", scheme, missing)
    from torchao.quantization import quantize_

    chosen = [name for name, m in network.named_modules() if isinstance(m, nn.Linear) and not NOT_QUANTIZED.fullmatch(
        name) and (scheme == "int8" or m.in_features % INT4_GROUP == 0)]
    picked = set(chosen)
    quantize_(network, _config(scheme), filter_fn=lambda m, fqn: fqn in picked)
    for name in chosen:
        network.get_submodule(name).weight.requires_grad_(False)
    return chosen


def _tied(network: nn.Module) -> set[str]:
    tied = getattr(network, "get_expanded_tied_weights_keys", None)
    return set(tied()) if tied is not None else set()


def quantized_state(network: nn.Module, state: dict[str, torch.Tensor] | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(plain tensors, metadata) for `safetensors.torch.save_file`: torchao's tensors as their parts (int8 data,
    scales, zero points) and a JSON description of each in the metadata; nf4 layers as bitsandbytes' packed weight
    and quant-state parts; tied copies left out."""
    tied = _tied(network)
    state = {k: v.detach() for k, v in (network.state_dict() if state is None else state).items() if k not in tied}
    if _scheme(network) == "nf4":
        return nf4_tensors(state), {"format": "pt"}
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    tensors, metadata = flatten_tensor_state_dict(state)
    return {k: v.contiguous() for k, v in tensors.items()}, {**metadata, "format": "pt"}


def save_quantized(network: nn.Module, directory: str | Path, state: dict[str, torch.Tensor] | None = None) -> None:
    """config.json, generation_config.json and model.safetensors of a network with quantised weights (`state`: its
    weights under the names to save, by default its own state dict)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, metadata = quantized_state(network, state)
    network.config.save_pretrained(directory)
    network.generation_config.save_pretrained(directory)
    save_file(tensors, str(directory / "model.safetensors"), metadata=metadata)


def load_quantized(directory: str | Path, dtype: torch.dtype, model_class: type) -> nn.Module:
    """A `model_class` network from an export written with `quantized_state`: built from its config in `dtype`,
    then every tensor (quantised ones as torchao tensors, or bitsandbytes nf4 layers) put in place."""
    nf4 = (read_quantization(directory) or {}).get("scheme") == "nf4"
    missing = bitsandbytes_missing() if nf4 else torchao_missing()
    if missing:
        raise InputError("model", str(directory), f"is quantised with {'bitsandbytes' if nf4 else 'torchao'}, "
                         f"which {missing}")
    directory = Path(directory)
    config = model_class.config_class.from_pretrained(directory)
    network = model_class(config).to(dtype)
    with safe_open(str(directory / "model.safetensors"), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if nf4:
        state = load_nf4(network, tensors, dtype)
        network.is_loaded_in_4bit = True
    else:
        from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

        state, leftover = unflatten_tensor_state_dict(tensors, {k: v for k, v in metadata.items() if k != "format"})
        if leftover:
            raise InputError("model", str(directory), f"tensors {sorted(leftover)[:3]} fit no weight of the model")
    result = network.load_state_dict(state, strict=False, assign=True)
    packed = {f"{n}.weight" for n, m in network.named_modules() if is_nf4(getattr(m, "weight", None))}
    absent = sorted(set(result.missing_keys) - _tied(network) - packed)
    if absent or result.unexpected_keys:
        raise InputError("model", str(directory), f"its weights do not fit its config: missing {absent[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]}")
    network.tie_weights()
    for p in network.parameters():
        p.requires_grad_(p.is_floating_point() and type(p.data) is torch.Tensor)
    if (directory / "generation_config.json").is_file():
        network.generation_config = GenerationConfig.from_pretrained(directory)
    return network.eval()


def _scheme(network: nn.Module) -> str | None:
    return (getattr(network.config, "quantization", None) or {}).get("scheme")


def describe(scheme: str, names: list[str]) -> dict[str, Any]:
    """What goes in the export's config.json under `quantization`."""
    if scheme == "nf4":
        return {"method": "bitsandbytes", "scheme": "nf4", "blocksize": BLOCKSIZE, "double_quant": True,
                "layers": len(names), "not_quantized": "media encoders, resamplers, embeddings, LM head"}
    return {"method": "torchao weight-only", "scheme": scheme, "group_size": INT4_GROUP if scheme == "int4" else None,
            "layers": len(names), "not_quantized": "media encoders, resamplers, embeddings, LM head"}


def read_quantization(directory: str | Path) -> dict[str, Any] | None:
    """The `quantization` entry of a saved model's config.json (None for an unquantised model)."""
    path = Path(directory) / "config.json"
    return json.loads(path.read_text()).get("quantization") if path.is_file() else None

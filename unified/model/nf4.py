"""4-bit NormalFloat linear layers (bitsandbytes `Linear4bit`, nf4): QLoRA's frozen base under `model.quantize: nf4`,
on CPU or CUDA, written to and read from safetensors.

    quantize_nf4(network, ["decoder.layers.0.self_attn.q_proj", ...])  # nn.Linear -> Linear4bit nf4, in place
    plain = nf4_tensors(state)                 # packed weights + quant-state parts as plain tensors: save_file
    rest = load_nf4(network, tensors, dtype)   # Linear4bit layers rebuilt from the parts; the other tensors left

A weight is stored as 4-bit codes packed two to a byte, with one absmax scale per block of 64 values, the scales
themselves quantised to 8 bits (bitsandbytes' "double quantisation"); saved as `x.weight` (uint8) and
`x.weight.absmax`, `x.weight.quant_map`, `x.weight.nested_absmax`, `x.weight.nested_quant_map`,
`x.weight.quant_state.bitsandbytes__nf4` (the state's JSON, packed in a uint8 tensor) - bitsandbytes' own names,
which `Params4bit.from_prequantized` reads back. Layers compute in the network's dtype (float32 in training).

bitsandbytes is imported with the Hugging Face hub offline: on CPU it otherwise asks the hub, at import, for an
optional fused kernel (`kernels-community/quantization-bitsandbytes`), which with no network can wait on a
connection; offline it takes the kernel from the local cache if one is there, else its own implementation.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Any

import torch
from torch import nn

__all__ = ["BLOCKSIZE", "bitsandbytes", "bitsandbytes_missing", "dequantized", "is_nf4", "load_nf4", "nf4_tensors",
           "quantize_nf4"]

BLOCKSIZE = 64  # values per absmax scale: bitsandbytes' default for nf4
_STATE_KEY = ".weight.quant_state.bitsandbytes__nf4"


def bitsandbytes_missing() -> str | None:
    """Why bitsandbytes cannot be used here (None when it can)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "needs bitsandbytes (pip install 'unified[quant]')"
    return None


def bitsandbytes() -> Any:
    """The bitsandbytes module, imported once with the hub offline (see the module docstring)."""
    if "bitsandbytes" in sys.modules:
        return sys.modules["bitsandbytes"]
    from huggingface_hub import constants

    offline, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True  # HF_HUB_OFFLINE=1, read after import
    quiet = [logging.getLogger(n) for n in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub")]
    levels = [log.level for log in quiet]
    for log in quiet:  # "kernel not in the local cache": the fallback is the expected path here
        log.setLevel(logging.ERROR)
    try:
        import bitsandbytes as bnb
    finally:
        constants.HF_HUB_OFFLINE = offline
        for log, level in zip(quiet, levels, strict=True):
            log.setLevel(level)
    return bnb


def quiet_import() -> None:
    """Import bitsandbytes the offline way when it is installed, before peft does (peft imports it at import)."""
    if bitsandbytes_missing() is None:
        bitsandbytes()


def _layer(in_features: int, out_features: int, bias: nn.Parameter | None, dtype: torch.dtype, weight) -> nn.Module:
    bnb = bitsandbytes()
    layer = bnb.nn.Linear4bit(in_features, out_features, bias=bias is not None, compute_dtype=dtype,
                              quant_type="nf4", device="meta")
    layer.weight = weight
    weight.module = layer
    layer.quant_state = weight.quant_state
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().to(dtype), requires_grad=bias.requires_grad)
    # the bf16 CPU inference kernel repacks the weight in place on its first eval call and computes in bf16:
    # evaluation would then differ from training; every call computes in `dtype` instead
    layer.support_avx512bf16_for_cpu = False
    return layer


def quantize_nf4(network: nn.Module, names: list[str]) -> None:
    """Replace each named `nn.Linear` by a frozen nf4 `Linear4bit` (quantised on the linear's device), in place."""
    bnb = bitsandbytes()
    for name in names:
        linear = network.get_submodule(name)
        weight = bnb.nn.Params4bit(linear.weight.detach().clone(), requires_grad=False, quant_type="nf4",
                                   blocksize=BLOCKSIZE, compress_statistics=True)._quantize(linear.weight.device)
        network.set_submodule(name, _layer(linear.in_features, linear.out_features, linear.bias,
                                           linear.weight.dtype, weight))


def is_nf4(p: torch.Tensor) -> bool:
    return getattr(p, "quant_state", None) is not None and getattr(p, "bnb_quantized", False)


def dequantized(p: torch.Tensor) -> torch.Tensor:
    """The float weight an nf4 parameter stands for: (out, in)."""
    return bitsandbytes().functional.dequantize_4bit(p.data, p.quant_state)


def nf4_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict holding nf4 layers (their `Params4bit` and quant-state parts) as plain contiguous tensors."""
    return {k: v.detach().as_subclass(torch.Tensor).contiguous() for k, v in state.items()}


def load_nf4(network: nn.Module, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Rebuild every nf4 layer named in `tensors` (see the module docstring) in `network` as a `Linear4bit`
    computing in `dtype`; returns the tensors left (biases and every other weight) for `load_state_dict`."""
    bnb = bitsandbytes()
    rest = dict(tensors)
    for prefix in sorted(k[: -len(_STATE_KEY)] for k in tensors if k.endswith(_STATE_KEY)):
        stats = {k[len(prefix) + len(".weight."):]: rest.pop(k) for k in list(rest) if k.startswith(
            f"{prefix}.weight.")}
        data = rest.pop(f"{prefix}.weight")
        weight = bnb.nn.Params4bit.from_prequantized(data, stats, requires_grad=False, device=data.device)
        linear = network.get_submodule(prefix)
        network.set_submodule(prefix, _layer(linear.in_features, linear.out_features, linear.bias, dtype, weight))
    return rest

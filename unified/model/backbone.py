"""A pretrained transformers encoder-decoder (T5 v1.0 / v1.1 / Flan-T5, mT5, BART, T5Gemma) as the text backbone.

transformers' own model is kept whole under `lm.` (its state-dict keys unchanged, so its checkpoint loads as it is)
and media are fused around it on the same code path as the from-scratch backbone:

    input ids -> the backbone's own input embeddings (BART's scaling included) -> media latents spliced at the
    placeholders ("concat", as BLIP-2 feeds Flan-T5's encoder) -> the backbone's encoder, a gated cross-attention
    block run in front of every k-th of its layers ("xattn"; a forward pre-hook, so the layer keeps its keys)
    -> the backbone's decoder and LM head, KV cache and loss as transformers computes them.

With no media, or with the tanh gates at 0 (Flamingo's start), the logits are the backbone's own, to the bit.

Axis legend: B batch, L encoder length, L' after splicing, S media latents, D d_model.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unified.errors import ConfigError, InputError
from unified.local_dirs import vocab_size_of
from unified.model.adapters import DEFAULT_TARGETS
from unified.model.ordinal import ordinal_rows
from unified.model.pretrained import build_config, load_local

FAMILIES = ("t5", "mt5", "umt5", "bart", "t5gemma", "t5gemma2")  # model_type values tested against transformers'
_GEMMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_T5_LINEARS = ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo")  # attention and MLP (v1.0 "wi", v1.1 "wi_0/1")
LORA_TARGETS = {  # each family's attention and MLP projections, by the module names transformers gives them
    "t5": _T5_LINEARS, "mt5": _T5_LINEARS, "umt5": _T5_LINEARS,
    "bart": ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    "t5gemma": _GEMMA_LINEARS, "t5gemma2": _GEMMA_LINEARS,
}


def lora_targets(config) -> list[str]:
    """The LoRA target modules of a model's language side: the backbone family's projections for a model on a
    pretrained text backbone, else our own layers' (`unified.model.adapters.DEFAULT_TARGETS`)."""
    backbone = config.text.backbone
    return list(LORA_TARGETS[backbone["model_type"]] if backbone else DEFAULT_TARGETS)


def _encoder_config(cfg):
    # T5Gemma keeps its encoder's sizes in a sub-config, T5Gemma 2 in that sub-config's text_config (its encoder also
    # holds a vision tower, unused here); T5 and BART at the top level
    sub = getattr(cfg, "encoder", None)
    text = getattr(sub, "text_config", None)
    if text is not None and hasattr(text, "hidden_size"):
        return text
    return sub if sub is not None and hasattr(sub, "hidden_size") else cfg


def text_fields(backbone: dict[str, Any]) -> dict[str, Any]:
    """The `TextConfig` fields the backbone fixes: width, heads, layers, special ids and its vocabulary size."""
    kind = backbone.get("model_type")
    if kind not in FAMILIES:
        raise ConfigError("text.backbone", kind, f"expected an encoder-decoder of {list(FAMILIES)}")
    cfg = build_config(backbone, "text.backbone")
    enc = _encoder_config(cfg)
    d_model = int(getattr(enc, "d_model", None) or enc.hidden_size)
    heads = int(getattr(enc, "num_heads", None) or getattr(enc, "encoder_attention_heads", None)
                or enc.num_attention_heads)
    head_dim = int(getattr(enc, "d_kv", None) or getattr(enc, "head_dim", None) or d_model // heads)
    enc_layers = int(getattr(enc, "num_layers", None) or getattr(enc, "encoder_layers", None)
                     or enc.num_hidden_layers)
    dec = getattr(cfg, "decoder", None) if kind in ("t5gemma", "t5gemma2") else cfg
    dec_layers = int(getattr(dec, "num_decoder_layers", None) or getattr(dec, "decoder_layers", None)
                     or getattr(dec, "num_hidden_layers", None) or enc_layers)
    fields = {"d_model": d_model, "num_heads": heads, "head_dim": head_dim, "num_encoder_layers": enc_layers,
              "num_decoder_layers": dec_layers, "vocab_size": int(vocab_size_of(cfg))}
    for key in ("pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id"):
        value = getattr(cfg, key, None)
        if isinstance(value, list):
            value = value[0]
        if value is not None:
            fields[key] = int(value)
    if "decoder_start_token_id" not in fields:
        fields["decoder_start_token_id"] = fields.get("bos_token_id", fields.get("pad_token_id", 0))
    return fields


def build_backbone_config(backbone: dict[str, Any], vocab_size: int):
    """The backbone's transformers config with its vocabulary grown to `vocab_size`."""
    cfg = build_config(backbone, "text.backbone")
    encoder = getattr(cfg, "encoder", None)
    for part in (cfg, encoder, getattr(encoder, "text_config", None), getattr(cfg, "decoder", None)):
        if part is not None and hasattr(part, "vocab_size"):
            part.vocab_size = vocab_size
    return cfg


def build_lm(backbone: dict[str, Any], vocab_size: int, attn_implementation: str | None = None) -> nn.Module:
    """transformers' seq2seq LM of that config, its vocabulary grown to `vocab_size` (random weights), with the
    attention implementation our model was asked for (None: transformers' default)."""
    from transformers import AutoModelForSeq2SeqLM

    cfg = build_backbone_config(backbone, vocab_size)
    # in the dtype being built (`from_pretrained(..., dtype=torch.bfloat16)` sets it), not the one the backbone's own
    # config.json names: that left a bf16 load's whole backbone in float32
    dtype = torch.get_default_dtype()
    try:
        try:
            return AutoModelForSeq2SeqLM.from_config(cfg, attn_implementation=attn_implementation, dtype=dtype)
        except ValueError:
            if attn_implementation != "sdpa":
                raise
            # "sdpa" is our default; a family without it (T5Gemma) takes its own default, as transformers does
            # (from a fresh config: the refused call has already written "sdpa" into this one)
            return AutoModelForSeq2SeqLM.from_config(build_backbone_config(backbone, vocab_size), dtype=dtype)
    except Exception as exc:
        raise ConfigError("text.backbone", backbone.get("model_type"), f"could not build the model: {exc}") from exc


def encoder_layers(lm: nn.Module) -> nn.ModuleList:
    """The backbone encoder's layer list (T5: `.block`; BART, T5Gemma: `.layers`; T5Gemma 2: `.text_model.layers`)."""
    encoder = lm.get_encoder()
    encoder = getattr(encoder, "text_model", encoder)
    layers = getattr(encoder, "layers", None)
    if layers is None:
        layers = getattr(encoder, "block", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError("text.backbone", type(encoder).__name__, "no encoder layer list (.layers / .block) found")
    return layers


def copy_lm_weights(lm: nn.Module, path, ordinal: list | None = None, width: float = 0.02,
                    noise: float = 0.25) -> list[str]:
    """Copy a local checkpoint into `lm` (built with a vocabulary at least as large): every pretrained tensor
    bitwise; the appended vocabulary rows start from the pretrained rows' statistics, the numbered ranges
    (`ordinal`: [[start, stop], ...], location / value / time) as smooth functions of the bin at that scale.
    Returns the names of the tensors whose vocabulary grew."""
    from transformers import AutoModelForSeq2SeqLM

    source = load_local(path, "text.pretrained_path",
                        lambda p: AutoModelForSeq2SeqLM.from_pretrained(p, local_files_only=True, dtype=torch.float32,
                                                                          use_safetensors=True))
    theirs, own = source.state_dict(), lm.state_dict()
    missing = sorted(set(own) - set(theirs))
    if missing:
        raise InputError("text.pretrained_path", str(path), f"the checkpoint does not match text.backbone: it lacks "
                         f"{missing[:3]}")
    grown = []
    with torch.no_grad():
        for name, target in own.items():
            value = theirs[name].to(target.dtype)
            if value.shape == target.shape:
                target.copy_(value)
                continue
            differ = [i for i, (a, b) in enumerate(zip(value.shape, target.shape)) if a != b]
            axis = differ[0] if len(differ) == 1 else -1  # embeddings / heads (V, D); BART's bias (1, V)
            n = value.shape[axis] if axis >= 0 else 0
            if axis < 0 or value.dim() not in (1, 2) or n > target.shape[axis] or any(
                    a != b for i, (a, b) in enumerate(zip(value.shape, target.shape)) if i != axis):
                raise InputError("text.pretrained_path", str(path), f"{name}: shape {tuple(value.shape)} does not "
                                 f"fit {tuple(target.shape)}")
            target.narrow(axis, 0, n).copy_(value)
            new = target.narrow(axis, n, target.shape[axis] - n)
            if value.dim() == 1 or value.shape[0] == 1:
                new.zero_()  # a bias over the vocabulary
                grown.append(name)
                continue
            mean, std = value.mean(0), value.std(0).mean()
            new.copy_(mean + std * torch.randn(new.shape, generator=torch.Generator().manual_seed(n)))
            for start, stop in ordinal or []:
                if start >= n:
                    rows = ordinal_rows(stop - start, target.shape[1], width, noise, 1.0)
                    target[start:stop] = mean + std * rows.to(target.dtype)
            grown.append(name)
    return grown


class PositionHooks:
    """Restart a backbone's learned absolute position embeddings per packed example (BART): while `positions`
    (B, L) is set, each `embed_positions` module listed returns the rows of those positions instead of 0..L-1."""

    def __init__(self, modules: list[nn.Module]):
        self.positions: torch.Tensor | None = None
        self.handles = [m.register_forward_hook(self._hook) for m in modules]

    def _hook(self, module, args, output):
        if self.positions is None:
            return None
        rows = F.embedding(self.positions + getattr(module, "offset", 0), module.weight)  # (B, L, D)
        return rows.to(output.dtype)


class MediaHooks:
    """Runs gated cross-attention blocks in front of chosen backbone layers through forward pre-hooks.

    The media memory of the current forward pass is set with `set(media, mask)` before the backbone runs and stays
    until the next pass, so a layer recomputed under gradient checkpointing sees the same media.
    """

    def __init__(self, layers: nn.ModuleList, blocks: dict[int, nn.Module]):
        self.media: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None] | None = None
        self.handles = [layers[i].register_forward_pre_hook(self._hook(block), with_kwargs=True)
                        for i, block in blocks.items()]

    def set(self, media: torch.Tensor | None, mask: torch.Tensor | None, active: torch.Tensor | None = None) -> None:
        self.media = None if media is None else (media, mask, active)

    def _hook(self, block: nn.Module):
        def run(module, args, kwargs):
            if self.media is None:
                return None
            if args:
                return (block(args[0], *self.media), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": block(kwargs["hidden_states"], *self.media)}
        return run

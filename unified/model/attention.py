"""Attention behind one signature, three implementations: `eager` (the written-out reference), `sdpa` (default) and
`xformers` (memory-efficient kernels on CUDA in fp16/bf16).

    fn = ATTENTION_FUNCTIONS.get(config._attn_implementation, sdpa_attention)
    out = fn(query, key, value, mask=mask, causal=True, dropout=0.0, scale=E ** -0.5)

Axis legend: B batch, H heads, Lq query length, Lk key length, E head width.
query (B, H, Lq, E), key / value (B, H, Lk, E); `mask` bool (B, 1 or H, Lq or 1, Lk), True = may attend, or None;
`causal` aligns the triangle to the bottom right (query i sees keys <= i + Lk - Lq, as in cached decoding).
Returns (B, Lq, H, E). A query row with no key it may attend to returns zeros.

`xformers` is registered with transformers' attention interface, so `from_pretrained(..., attn_implementation=
"xformers")` and `model.set_attn_implementation("xformers")` work the transformers way. Where it cannot run (not
installed, no CUDA, fp32 tensors) the call falls back to `sdpa` with one warning per process.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

_warned: set[str] = set()


def _full_mask(mask: torch.Tensor | None, causal: bool, lq: int, lk: int, device) -> torch.Tensor | None:
    # One boolean (.., Lq, Lk) mask from the padding mask and the causal triangle (bottom-right aligned).
    if causal:
        tri = torch.ones(lq, lk, dtype=torch.bool, device=device).tril(diagonal=lk - lq)  # (Lq, Lk)
        mask = tri if mask is None else mask & tri
    return mask


def eager_attention(query, key, value, *, mask=None, causal=False, dropout=0.0, scale=None, training=False,
                    return_probs=False):
    """The reference: softmax(q k^T * scale + mask) v, written out in fp32. `return_probs`: also return the
    attention probabilities (B, H, Lq, Lk) before dropout (`output_attentions`)."""
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale  # (B, H, Lq, Lk)
    full = _full_mask(mask, causal, query.shape[-2], key.shape[-2], query.device)
    if full is not None:
        scores = scores.masked_fill(~full, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows with no allowed key -> zeros
    dropped = F.dropout(probs, p=dropout, training=training)
    out = torch.matmul(dropped, value.float()).to(query.dtype).transpose(1, 2)  # (B, Lq, H, E)
    return (out, probs.to(query.dtype)) if return_probs else out


def sdpa_attention(query, key, value, *, mask=None, causal=False, dropout=0.0, scale=None, training=False):
    """`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient / math kernels)."""
    p = dropout if training else 0.0
    if mask is None and (not causal or query.shape[-2] == key.shape[-2]):
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=p, is_causal=causal, scale=scale)
        return out.transpose(1, 2)
    full = _full_mask(mask, causal, query.shape[-2], key.shape[-2], query.device)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=full, dropout_p=p, scale=scale)
    if mask is not None:  # SDPA gives NaN for a row that may attend nowhere; the contract says zeros
        dead = ~full.any(dim=-1, keepdim=True)  # (B, 1|H, Lq, 1)
        out = out.masked_fill(dead, 0.0)
    return out.transpose(1, 2)


def xformers_available() -> bool:
    try:
        import xformers.ops  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def _fallback(reason: str):
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"attn_implementation='xformers' unavailable ({reason}); using 'sdpa' instead", stacklevel=3)


def xformers_attention(query, key, value, *, mask=None, causal=False, dropout=0.0, scale=None, training=False):
    """`xformers.ops.memory_efficient_attention` in its (B, L, H, E) layout.

    Causal without padding uses `LowerTriangularMask` (bottom-right via `LowerTriangularFromBottomRightMask` when
    Lq != Lk); padding is passed as an additive bias tensor, materialised with its last dimension padded to a multiple
    of 8 as the kernels require and then sliced back.
    """
    if not query.is_cuda:
        _fallback("tensors are not on CUDA")
        return sdpa_attention(query, key, value, mask=mask, causal=causal, dropout=dropout, scale=scale,
                              training=training)
    if query.dtype not in (torch.float16, torch.bfloat16):
        _fallback(f"{query.dtype} tensors; xformers runs in fp16/bf16")
        return sdpa_attention(query, key, value, mask=mask, causal=causal, dropout=dropout, scale=scale,
                              training=training)
    try:
        import xformers.ops as xops
    except ImportError:
        _fallback("xformers is not installed: pip install 'unified[xformers]'")
        return sdpa_attention(query, key, value, mask=mask, causal=causal, dropout=dropout, scale=scale,
                              training=training)
    lq, lk = query.shape[-2], key.shape[-2]
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))  # (B, L, H, E)
    if mask is None:
        bias = None
        if causal:
            bias = xops.LowerTriangularMask() if lq == lk else xops.fmha.attn_bias.LowerTriangularFromBottomRightMask()
    else:
        full = _full_mask(mask, causal, lq, lk, query.device)
        B, H = query.shape[0], query.shape[1]
        padded = (lk + 7) // 8 * 8
        bias = torch.zeros(B, H, lq, padded, dtype=query.dtype, device=query.device)
        bias[..., :lk].masked_fill_(~full.expand(B, H, lq, lk), float("-inf"))
        bias = bias[..., :lk]
    out = xops.memory_efficient_attention(q, k, v, attn_bias=bias, p=dropout if training else 0.0, scale=scale)
    if mask is not None:
        dead = ~full.any(dim=-1)  # (B, 1|H, Lq)
        out = out.masked_fill(dead.transpose(1, 2)[..., None].expand_as(out), 0.0)
    return out


ATTENTION_FUNCTIONS = {"eager": eager_attention, "sdpa": sdpa_attention, "xformers": xformers_attention}


def register_with_transformers() -> None:
    """Make "xformers" a valid `attn_implementation` name for transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if "xformers" not in ALL_ATTENTION_FUNCTIONS.valid_keys():

        def _hf_signature(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
            # transformers' calling convention (additive or bool mask) for other models that pick "xformers"
            mask = attention_mask if attention_mask is None or attention_mask.dtype == torch.bool else (
                attention_mask == 0)
            out = xformers_attention(query, key, value, mask=mask, causal=kwargs.get("is_causal", False),
                                     dropout=dropout, scale=scaling, training=module.training)
            return out, None

        AttentionInterface.register("xformers", _hf_signature)

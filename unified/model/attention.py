"""Attention behind one signature, three implementations: `eager` (the written-out reference), `sdpa` (default) and
`xformers` (memory-efficient kernels on CUDA in fp16/bf16).

    fn = ATTENTION_FUNCTIONS.get(config._attn_implementation, sdpa_attention)
    out = fn(query, key, value, mask=mask, causal=True, dropout=0.0, scale=E ** -0.5)

Axis legend: B batch, H heads, Lq query length, Lk key length, E head width.
query (B, H, Lq, E), key / value (B, H, Lk, E); `mask` bool (B, 1 or H, Lq or 1, Lk), True = may attend, or None,
or a `BlockDiagonal` (packed examples: the segment ids of queries and keys, a query sees its own example's keys);
`causal` aligns the triangle to the bottom right (query i sees keys <= i + Lk - Lq, as in cached decoding).
Returns (B, Lq, H, E). A query row with no key it may attend to returns zeros.

`xformers` is registered with transformers' attention interface, so `from_pretrained(..., attn_implementation=
"xformers")` and `model.set_attn_implementation("xformers")` work the transformers way. Where it cannot run (not
installed, no CUDA, fp32 tensors) the call falls back to `sdpa` with one warning per process.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unified.model.segments import segment_mask

_warned: set[str] = set()


@dataclass(frozen=True)
class BlockDiagonal:
    """Packed examples' attention mask, kept as segment ids (k >= 1 a row's k-th example, 0 padding): `eager` and
    `sdpa` take its `dense()` bool mask (B, 1, Lq, Lk); `xformers` builds its `BlockDiagonalMask` from the examples'
    lengths instead and never materialises it."""

    query: torch.Tensor  # (B, Lq)
    key: torch.Tensor  # (B, Lk)

    def dense(self) -> torch.Tensor:
        return segment_mask(self.query, self.key)

    def seqlens(self) -> tuple[list[int], list[int]]:
        """(query lengths, key lengths) of the blocks of the batch flattened row after row: each row's examples in
        order, then its padding as one more block when either side has any."""
        q_lens, k_lens = [], []
        for q_row, k_row in zip(self.query.tolist(), self.key.tolist()):
            count = max(max(q_row, default=0), max(k_row, default=0))
            for k in range(1, count + 1):
                q_lens.append(q_row.count(k))
                k_lens.append(k_row.count(k))
            if 0 in q_row or 0 in k_row:
                q_lens.append(q_row.count(0))
                k_lens.append(k_row.count(0))
        return q_lens, k_lens


def _dense(mask):
    return mask.dense() if isinstance(mask, BlockDiagonal) else mask


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
    mask = _dense(mask)
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
    mask = _dense(mask)
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


def xformers_attention(query, key, value, *, mask=None, causal=False, dropout=0.0, scale=None, training=False,
                       bias=None):
    """`xformers.ops.memory_efficient_attention` in its (B, L, H, E) layout.

    Causal without padding uses `LowerTriangularMask` (bottom-right via `LowerTriangularFromBottomRightMask` when
    Lq != Lk); padding is passed as an additive bias tensor, materialised with its last dimension padded to a multiple
    of 8 as the kernels require and then sliced back. `bias`: an additive float bias (B|1, H, Lq, Lk) with any mask
    already in it (T5's relative position bias, through transformers' interface); `mask` and `causal` are then unused.
    """
    p = dropout if training else 0.0
    fallback = None
    if not query.is_cuda:
        fallback = "tensors are not on CUDA"
    elif query.dtype not in (torch.float16, torch.bfloat16):
        fallback = f"{query.dtype} tensors; xformers runs in fp16/bf16"
    else:
        try:
            import xformers.ops as xops
        except ImportError:
            fallback = "xformers is not installed: pip install 'unified[xformers]'"
    if fallback is not None:
        _fallback(fallback)
        if bias is not None:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias.to(query.dtype), dropout_p=p,
                                                 scale=scale)
            return out.transpose(1, 2)
        return sdpa_attention(query, key, value, mask=mask, causal=causal, dropout=dropout, scale=scale,
                              training=training)
    if bias is not None:
        B, H, lq, lk = query.shape[0], query.shape[1], query.shape[-2], key.shape[-2]
        padded = torch.zeros(B, H, lq, (lk + 7) // 8 * 8, dtype=query.dtype, device=query.device)
        padded[..., :lk] = bias.expand(B, H, lq, lk)
        q, k, v = (t.transpose(1, 2) for t in (query, key, value))
        return xops.memory_efficient_attention(q, k, v, attn_bias=padded[..., :lk], p=p, scale=scale)
    lq, lk = query.shape[-2], key.shape[-2]
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))  # (B, L, H, E)
    if isinstance(mask, BlockDiagonal):
        return _xformers_blocks(xops, q, k, v, mask, causal, dropout if training else 0.0, scale)
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


def _xformers_blocks(xops, q, k, v, mask: BlockDiagonal, causal: bool, p: float, scale) -> torch.Tensor:
    """Packed rows as one sequence of blocks: `BlockDiagonalMask` (or its causal form) over the batch flattened to
    (1, B L, H, E), so no (Lq, Lk) mask exists; padding positions come back as zeros."""
    B, lq, H, E = q.shape
    q_lens, k_lens = mask.seqlens()
    kind = xops.fmha.attn_bias.BlockDiagonalCausalMask if causal else xops.fmha.attn_bias.BlockDiagonalMask
    bias = kind.from_seqlens(q_lens, k_lens)
    flat = [t.reshape(1, -1, *t.shape[2:]) for t in (q, k, v)]  # (1, B L, H, E)
    out = xops.memory_efficient_attention(*flat, attn_bias=bias, p=p, scale=scale).reshape(B, lq, H, E)
    return out.masked_fill((mask.query == 0)[..., None, None], 0.0)


ATTENTION_FUNCTIONS = {"eager": eager_attention, "sdpa": sdpa_attention, "xformers": xformers_attention}


def register_with_transformers() -> None:
    """Make "xformers" a valid `attn_implementation` name for transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if "xformers" not in ALL_MASK_ATTENTION_FUNCTIONS.valid_keys():
        # without a mask function of its own, transformers builds no mask at all for "xformers": a backbone's
        # padding and causal order would be lost. SDPA's boolean masks are what `_hf_signature` reads.
        AttentionMaskInterface.register("xformers", sdpa_mask)

    if "xformers" not in ALL_ATTENTION_FUNCTIONS.valid_keys():

        def _hf_signature(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
            # transformers' calling convention (additive or bool mask), with its sdpa's reading of `is_causal`
            from transformers.integrations.sdpa_attention import create_position_bias_mask

            is_causal = kwargs.get("is_causal")
            is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
            causal = bool(query.shape[2] > 1 and attention_mask is None and is_causal)
            bias = kwargs.get("position_bias")
            if bias is not None:  # T5's relative position bias, the mask folded into it as transformers' sdpa does
                bias = create_position_bias_mask(bias, attention_mask, causal, query, key)
                out = xformers_attention(query, key, value, dropout=dropout, scale=scaling,
                                         training=module.training, bias=bias)
                return out, None
            mask = attention_mask if attention_mask is None or attention_mask.dtype == torch.bool else (
                attention_mask == 0)
            out = xformers_attention(query, key, value, mask=mask, causal=causal, dropout=dropout, scale=scaling,
                                     training=module.training)
            return out, None

        AttentionInterface.register("xformers", _hf_signature)

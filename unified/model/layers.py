"""Transformer building blocks: RMSNorm, rotary embeddings (with linear / YaRN scaling), the one feed-forward module
and the one attention module (used by the text layers, the gated cross-attention and the perceiver alike), and the
pre-norm encoder and decoder layers.

Axis legend: B batch, L length (Lq queries, Lk keys), D d_model, H heads, E head_dim.
Projections are named q_proj / k_proj / v_proj / o_proj and gate_proj / up_proj / down_proj so peft's LoRA
`target_modules` find them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer

from unified.model.attention import ATTENTION_FUNCTIONS, eager_attention, sdpa_attention
from unified.model.configuration import TextConfig


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 (T5 / LLaMA style, no mean subtraction, no bias)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * self.weight.float()).to(x.dtype)


def yarn_inv_freq(dim: int, base: float, factor: float, original_max_position: int, beta_fast: float = 32.0,
                  beta_slow: float = 1.0) -> tuple[torch.Tensor, float]:
    """YaRN (Peng et al., 2023): interpolate the low frequencies by `factor`, keep the high ones, ramp between the
    wavelengths that rotate `beta_fast` and `beta_slow` times over the original context; scale attention by
    0.1 ln(factor) + 1. Returns (inv_freq (E/2,), attention_factor)."""

    def correction_dim(rotations: float) -> float:
        return dim * math.log(original_max_position / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    span = (high - low) if high != low else 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / span).clamp(0, 1)
    keep = 1 - ramp  # 1 where the frequency is high enough to extrapolate unchanged
    inv_freq = interpolation * (1 - keep) + extrapolation * keep
    return inv_freq, 0.1 * math.log(factor) + 1.0


class RotaryEmbedding(nn.Module):
    """cos / sin tables for rotary position embeddings, cached and grown on demand.

    Scaling: "linear" divides positions by `factor` (position interpolation); "yarn" uses `yarn_inv_freq`.
    """

    def __init__(self, config: TextConfig):
        super().__init__()
        self.config = config
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)
        self._cos = self._sin = None

    def compute_inv_freq(self) -> torch.Tensor:
        """(E/2,) inverse frequencies after scaling; sets `attention_factor`. Also restores the buffer after loading."""
        config = self.config
        dim, base, scaling = config.head_dim, config.rope_theta, config.rope_scaling or {}
        self.attention_factor = 1.0
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))  # (E/2,)
        if scaling.get("type") == "linear":
            inv_freq = inv_freq / float(scaling["factor"])
        elif scaling.get("type") == "yarn":
            inv_freq, self.attention_factor = yarn_inv_freq(
                dim, base, float(scaling["factor"]),
                int(scaling.get("original_max_position_embeddings", config.max_position_embeddings)),
                float(scaling.get("beta_fast", 32.0)), float(scaling.get("beta_slow", 1.0)))
            self.attention_factor = float(scaling.get("attention_factor", self.attention_factor))
        return inv_freq

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (L,) long -> cos, sin (L, E) in `dtype`. The table covers `max_position_embeddings` from the
        start and grows past it on demand (not while compiling: there it must already cover the positions)."""
        needed = 1 if torch.compiler.is_compiling() or not positions.numel() else int(positions.max()) + 1
        if self._cos is None or self._cos.shape[0] < needed or self._cos.device != positions.device:
            length = max(needed, self.config.max_position_embeddings)
            t = torch.arange(length, device=self.inv_freq.device, dtype=torch.float32)
            freqs = torch.outer(t, self.inv_freq)  # (L, E/2)
            emb = torch.cat([freqs, freqs], dim=-1)  # (L, E)
            self._cos = (emb.cos() * self.attention_factor).to(positions.device)
            self._sin = (emb.sin() * self.attention_factor).to(positions.device)
        return self._cos[positions].to(dtype), self._sin[positions].to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, L, E), cos / sin (L, E): rotate pairs (i, i + E/2)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class FeedForward(nn.Module):
    """The one feed-forward block: SwiGLU `down(silu(gate(x)) * up(x))` (gated, the text layers') or
    `down(gelu(up(x)))` (the gated cross-attention's and the perceiver's). x (..., D) -> (..., D), hidden width F.

    Example:
        >>> FeedForward(8, 32, gated=False, bias=True)(torch.zeros(2, 3, 8)).shape
        torch.Size([2, 3, 8])
    """

    def __init__(self, d_model: int, d_ff: int, *, gated: bool = True, bias: bool = False, dropout: float = 0.0):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=bias) if gated else None
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.gate_proj(x)) * self.up_proj(x) if self.gate_proj is not None else F.gelu(self.up_proj(x))
        return self.down_proj(self.dropout(h))


class Attention(nn.Module):
    """The one multi-head attention module: self-attention (RoPE when given), or cross-attention from x (B, Lq, D) to
    a `context` (B, Lk, Dk) (encoder states, media latents, or the perceiver's [media ; latents]).

    x (B, Lq, D) -> (B, Lq, D). `mask` bool (B, 1|H, Lq|1, Lk), True = may attend; a query with no key it may attend
    to gets exactly 0 (no bias anywhere). The kernel is `attn_implementation` (`unified.model.attention`), which
    `set_attn_implementation` sets on every instance. Caching follows transformers' `EncoderDecoderCache` when a
    `layer_idx` is given: decoder self-attention appends to the self-attention cache; cross-attention computes its keys
    / values once and reuses them from the cross-attention cache.

    Example (a query that may attend nowhere gets zeros):
        >>> attn = Attention(16, num_heads=2, head_dim=4, kv_dim=8, is_cross=True)
        >>> mask = torch.tensor([[True, False], [False, False]])[None, None]  # (B=1, 1, Lq=2, Lk=2)
        >>> attn(torch.randn(1, 2, 16), context=torch.randn(1, 2, 8), mask=mask)[0, 1].abs().sum().item()
        0.0
    """

    def __init__(self, d_model: int, num_heads: int, head_dim: int, *, kv_dim: int | None = None,
                 layer_idx: int | None = None, is_cross: bool = False, dropout: float = 0.0,
                 attn_implementation: str = "sdpa"):
        super().__init__()
        h, e, kv_dim = num_heads, head_dim, kv_dim or d_model
        self.num_heads, self.head_dim, self.layer_idx, self.is_cross = h, e, layer_idx, is_cross
        self.dropout = dropout
        self.attn_implementation = attn_implementation
        self.record: list | None = None  # a list while the model returns attentions: each call appends its probs
        self.q_proj = nn.Linear(d_model, h * e, bias=False)
        self.k_proj = nn.Linear(kv_dim, h * e, bias=False)
        self.v_proj = nn.Linear(kv_dim, h * e, bias=False)
        self.o_proj = nn.Linear(h * e, d_model, bias=False)

    @classmethod
    def from_config(cls, config: TextConfig, layer_idx: int | None = None, is_cross: bool = False,
                    attn_implementation: str = "sdpa") -> Attention:
        """A text layer's self- or cross-attention."""
        return cls(config.d_model, config.num_heads, config.head_dim, layer_idx=layer_idx, is_cross=is_cross,
                   dropout=config.dropout, attn_implementation=attn_implementation)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, E)

    def forward(self, x, *, mask=None, causal=False, rotary=None, context=None, past_key_values=None):
        q = self._heads(self.q_proj(x))  # (B, H, Lq, E)
        cache = past_key_values
        if self.is_cross:
            if isinstance(cache, EncoderDecoderCache) and cache.is_updated.get(self.layer_idx):
                layer = cache.cross_attention_cache.layers[self.layer_idx]
                k, v = layer.keys, layer.values
            else:
                k, v = self._heads(self.k_proj(context)), self._heads(self.v_proj(context))  # (B, H, Lk, E)
                if isinstance(cache, EncoderDecoderCache):
                    k, v = cache.cross_attention_cache.update(k, v, self.layer_idx)
                    cache.is_updated[self.layer_idx] = True
            k, v = k[:, :, :context.shape[1]], v[:, :, :context.shape[1]]  # a static cache is allocated longer
        else:
            k, v = self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
            if rotary is not None:
                cos, sin = rotary
                q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            if isinstance(cache, EncoderDecoderCache):
                k, v = cache.self_attention_cache.update(k, v, self.layer_idx)
        if self.record is not None:  # output_attentions: the written-out path, which has the probabilities
            out, probs = eager_attention(q, k, v, mask=mask, causal=causal, dropout=self.dropout,
                                         training=self.training, return_probs=True)
            self.record.append(probs)  # (B, H, Lq, Lk)
        else:
            fn = ATTENTION_FUNCTIONS.get(self.attn_implementation, sdpa_attention)
            out = fn(q, k, v, mask=mask, causal=causal, dropout=self.dropout, training=self.training)  # (B,Lq,H,E)
        return self.o_proj(out.reshape(*out.shape[:2], -1))


class EncoderLayer(GradientCheckpointingLayer):
    """Pre-norm: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: TextConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.self_attn = Attention.from_config(config, attn_implementation=attn_implementation)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = FeedForward(config.d_model, config.d_ff, dropout=config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, mask, rotary):
        x = x + self.dropout(self.self_attn(self.attn_norm(x), mask=mask, rotary=rotary))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class DecoderLayer(GradientCheckpointingLayer):
    """Pre-norm: causal self-attention, cross-attention over the encoder, gated MLP."""

    def __init__(self, config: TextConfig, layer_idx: int, attn_implementation: str = "sdpa"):
        super().__init__()
        d, eps = config.d_model, config.norm_eps
        self.attn_norm = RMSNorm(d, eps)
        self.self_attn = Attention.from_config(config, layer_idx, attn_implementation=attn_implementation)
        self.cross_norm = RMSNorm(d, eps)
        self.cross_attn = Attention.from_config(config, layer_idx, is_cross=True,
                                                 attn_implementation=attn_implementation)
        self.mlp_norm = RMSNorm(d, eps)
        self.mlp = FeedForward(d, config.d_ff, dropout=config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, self_mask, rotary, encoder_states, encoder_mask, past_key_values=None, causal=True):
        # causal=False: `self_mask` already says which keys each query sees (a static cache's slots)
        x = x + self.dropout(self.self_attn(self.attn_norm(x), mask=self_mask, causal=causal, rotary=rotary,
                                            past_key_values=past_key_values))
        x = x + self.dropout(self.cross_attn(self.cross_norm(x), mask=encoder_mask, context=encoder_states,
                                             past_key_values=past_key_values))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))

"""Attention kernels against the written-out reference, and rotary embeddings against independent definitions."""

import math
import warnings

import pytest
import torch

from unified.model.attention import (
    BlockDiagonal,
    eager_attention,
    sdpa_attention,
    xformers_attention,
    xformers_available,
)
from unified.model.configuration import TextConfig
from unified.model.layers import RotaryEmbedding, apply_rotary


def _naive(q, k, v, allowed):
    # softmax written out per row, in float64; a row with nothing allowed is zero
    B, H, Lq, E = q.shape
    out = torch.zeros(B, Lq, H, E, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            for i in range(Lq):
                keys = [j for j in range(k.shape[2]) if allowed[b, i, j]]
                if not keys:
                    continue
                s = torch.tensor([float(q[b, h, i] @ k[b, h, j]) / math.sqrt(E) for j in keys], dtype=torch.float64)
                w = torch.softmax(s, 0)
                out[b, i, h] = sum(w[n] * v[b, h, j].double() for n, j in enumerate(keys))
    return out


@pytest.mark.parametrize("fn", [eager_attention, sdpa_attention])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lq,lk", [(5, 5), (2, 5)])
def test_padding_and_causal_masks_match_the_naive_reference(fn, causal, lq, lk):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g) for n in (lq, lk, lk))
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)[:, :lk]
    allowed = keep[:, None, :].expand(2, lq, lk).clone()
    if causal:  # bottom-right aligned: query i sees keys <= i + lk - lq
        for i in range(lq):
            allowed[:, i, i + lk - lq + 1:] = False
    out = fn(q, k, v, mask=keep[:, None, None, :], causal=causal)
    assert torch.allclose(out.double(), _naive(q, k, v, allowed), atol=1e-5)


def test_fully_masked_rows_are_zero_not_nan():
    q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    mask = torch.tensor([[True, True, True], [False, False, False], [True, False, False]])[None, None]
    for fn in (eager_attention, sdpa_attention):
        out = fn(q, k, v, mask=mask)
        assert torch.isfinite(out).all() and (out[0, 1] == 0).all()


def test_xformers_falls_back_to_sdpa_on_cpu_with_one_warning():
    q = k = v = torch.randn(1, 2, 4, 8)
    with pytest.warns(UserWarning, match="using 'sdpa'"):
        out = xformers_attention(q, k, v, causal=True)
    assert torch.allclose(out, sdpa_attention(q, k, v, causal=True))


@pytest.mark.gpu
@pytest.mark.skipif(not xformers_available(), reason="xformers needs CUDA and the xformers package")
@pytest.mark.parametrize("causal", [False, True])
def test_xformers_matches_eager_in_bf16(causal):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, 37, 64, device="cuda", generator=g) for _ in range(3))
    keep = torch.ones(2, 37, dtype=torch.bool, device="cuda")
    keep[1, 30:] = False
    ref = eager_attention(q, k, v, mask=keep[:, None, None, :], causal=causal)
    out = xformers_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask=keep[:, None, None, :], causal=causal)
    assert torch.allclose(out.float(), ref, atol=3e-2)
    out = xformers_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=causal)
    assert torch.allclose(out.float(), eager_attention(q, k, v, causal=causal), atol=3e-2)


SEGMENTS = torch.tensor([[1, 1, 1, 2, 2, 0], [1, 2, 2, 2, 3, 3]])  # two packed rows: 2 and 3 examples, padding


def _blocks_allowed(q_seg, k_seg, causal):
    allowed = (q_seg[:, :, None] == k_seg[:, None, :]) & (k_seg > 0)[:, None, :]
    if causal:
        allowed &= torch.ones(q_seg.shape[1], k_seg.shape[1], dtype=torch.bool).tril()
    return allowed


@pytest.mark.parametrize("fn", [eager_attention, sdpa_attention, xformers_attention])
@pytest.mark.parametrize("causal", [False, True])
def test_block_diagonal_masks_match_the_naive_reference(fn, causal):
    """A `BlockDiagonal` (packed examples) through every implementation; xformers falls back to SDPA's dense mask
    on the CPU. Padding queries see nothing: zeros."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 6, 8, generator=g) for _ in range(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # xformers' fallback warning on the CPU
        out = fn(q, k, v, mask=BlockDiagonal(SEGMENTS, SEGMENTS), causal=causal)
    assert torch.allclose(out.double(), _naive(q, k, v, _blocks_allowed(SEGMENTS, SEGMENTS, causal)), atol=1e-5)


def test_block_lengths_by_hand():
    decoder = torch.tensor([[1, 1, 2, 0], [1, 2, 2, 2]])
    assert BlockDiagonal(SEGMENTS, SEGMENTS).seqlens() == ([3, 2, 1, 1, 3, 2], [3, 2, 1, 1, 3, 2])
    # cross-attention: row 0's decoder padding (1) meets its encoder padding (1); row 1's decoder has 2 examples
    assert BlockDiagonal(decoder, SEGMENTS[:, :4]).seqlens() == ([2, 1, 1, 1, 3], [3, 1, 0, 1, 3])


@pytest.mark.gpu
@pytest.mark.skipif(not xformers_available(), reason="xformers needs CUDA and the xformers package")
@pytest.mark.parametrize("causal", [False, True])
def test_xformers_block_diagonal_matches_eager_in_bf16(causal):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 64, device="cuda", generator=g) for _ in range(3))
    seg = SEGMENTS.cuda()
    ref = eager_attention(q, k, v, mask=BlockDiagonal(seg, seg), causal=causal)
    out = xformers_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask=BlockDiagonal(seg, seg), causal=causal)
    assert torch.allclose(out.float(), ref, atol=3e-2)


def test_rotary_preserves_norms_and_depends_only_on_relative_position():
    rope = RotaryEmbedding(TextConfig(head_dim=16))
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(i, j):
        cq, sq = rope(torch.tensor([i]), torch.float32)
        ck, sk = rope(torch.tensor([j]), torch.float32)
        return float((apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum())

    assert score(3, 1) == pytest.approx(score(10, 8), abs=1e-4)
    cos, sin = rope(torch.tensor([7]), torch.float32)
    assert float(apply_rotary(q, cos, sin).norm()) == pytest.approx(float(q.norm()), rel=1e-5)


def test_linear_scaling_equals_positions_divided_by_the_factor():
    plain = RotaryEmbedding(TextConfig(head_dim=16))
    scaled = RotaryEmbedding(TextConfig(head_dim=16, rope_scaling={"type": "linear", "factor": 4.0}))
    cos_s, sin_s = scaled(torch.tensor([8]), torch.float32)
    # position 8 with factor 4 is position 2 unscaled
    cos_p, sin_p = plain(torch.tensor([2]), torch.float32)
    assert torch.allclose(cos_s, cos_p, atol=1e-6) and torch.allclose(sin_s, sin_p, atol=1e-6)


def test_yarn_matches_transformers_rope_init():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 512}
    ref_cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=16, max_position_embeddings=2048,
                          rope_parameters=params)
    ref_inv, ref_factor = ROPE_INIT_FUNCTIONS["yarn"](ref_cfg, "cpu")
    ours = RotaryEmbedding(TextConfig(head_dim=16, rope_scaling={"type": "yarn", "factor": 4.0,
                                                                  "original_max_position_embeddings": 512}))
    assert torch.allclose(ours.inv_freq, ref_inv, atol=1e-7)
    assert ours.attention_factor == pytest.approx(ref_factor)


def test_cross_attention_and_perceiver_go_through_the_attention_dispatch():
    """Our gated cross-attention and the perceiver's latent attention follow `set_attn_implementation`: with
    "eager" (the written-out reference) they give what "sdpa" gives, rows without media stay zero, and a model built
    with attn_implementation="eager" starts that way."""
    from model_fixtures import media_batch, tiny_config

    from unified.model import UnifiedForConditionalGeneration
    from unified.model.fusion import GatedCrossAttentionBlock
    from unified.model.layers import Attention
    from unified.model.resampler import ResamplerLayer

    torch.manual_seed(0)
    model = UnifiedForConditionalGeneration(tiny_config(fusion={"mode": "both"},
                                                        resampler={"mode": "per_frame"})).eval()
    owners = [type(m) for m in model.modules() for c in m.children() if isinstance(c, Attention)]
    assert {GatedCrossAttentionBlock, ResamplerLayer} <= set(owners)  # one module class for all three uses
    ours = [m for m in model.modules() if isinstance(m, Attention)]
    batch = media_batch()
    calls = []
    for name in ("sdpa", "eager"):
        model.set_attn_implementation(name)
        assert all(m.attn_implementation == name for m in ours)
        with torch.no_grad():
            calls.append(model(**batch).logits)
    torch.testing.assert_close(calls[0], calls[1], atol=1e-5, rtol=1e-4)
    attn = next(m.attn for m in model.modules() if isinstance(m, GatedCrossAttentionBlock))
    mask = torch.zeros(1, 1, 2, 3, dtype=torch.bool)
    mask[0, 0, 0] = True
    out = attn(torch.randn(1, 2, attn.q_proj.in_features), context=torch.randn(1, 3, attn.k_proj.in_features),
               mask=mask)
    assert out[0, 1].abs().sum().item() == 0.0  # the token with no media before it
    config = tiny_config(fusion={"mode": "both"})
    config._attn_implementation = "eager"
    built = UnifiedForConditionalGeneration(config)
    assert all(m.attn_implementation == "eager" for m in built.modules() if isinstance(m, Attention))


def test_xformers_keeps_t5s_relative_position_bias(tmp_path):
    """transformers hands T5's relative position bias to the attention function apart from the mask; the xformers
    entry (here its SDPA fallback) must add it, or a T5 backbone under "xformers" loses its positions."""
    from transformers import T5Config, T5ForConditionalGeneration

    from unified.model import UnifiedConfig, UnifiedModel

    torch.manual_seed(0)
    T5ForConditionalGeneration(T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                        decoder_start_token_id=0)).save_pretrained(tmp_path)
    model = UnifiedModel.from_pretrained_parts(UnifiedConfig.preset("tiny", text={"pretrained_path": str(tmp_path)}))
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]]), "attention_mask": torch.tensor(
        [[1, 1, 1, 1], [1, 1, 0, 0]]), "labels": torch.tensor([[20, 21, 1], [22, 1, -100]])}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = model.eval()(**batch).logits
        model.set_attn_implementation("xformers")
        assert torch.allclose(model(**batch).logits, reference, atol=1e-5)

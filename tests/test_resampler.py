"""Perceiver Resampler and Pool3d: shapes, masks, padding invariance, per-frame independence, hand-computed pooling."""

import pytest
import torch
import torch.nn.functional as F

from unified.errors import ConfigError, InputError
from unified.model.resampler import PerceiverResampler, Pool3d, masked_adaptive_avg_pool3d

D, K = 32, 6


def make(mode, depth=2, seed=0):
    torch.manual_seed(seed)
    return PerceiverResampler(dim=D, depth=depth, num_latents=K, num_heads=4, head_dim=8, mode=mode,
                              max_frames=8).eval()


@pytest.mark.parametrize("mode, t_out", [("global", 1), ("per_frame", 5)])
def test_shapes_and_latent_mask(mode, t_out):
    r = make(mode)
    x = torch.randn(3, 5, 9, D)
    mask = torch.ones(3, 5, 9, dtype=torch.bool)
    mask[1, 3:] = False  # item 1: last two frames are padding
    mask[2] = False  # item 2: absent
    lat, lmask = r(x, mask)
    assert lat.shape == (3, t_out, K, D) and lmask.shape == (3, t_out) and lmask.dtype == torch.bool
    if mode == "global":
        assert lmask[:, 0].tolist() == [True, True, False]
    else:
        assert lmask[1].tolist() == [True, True, True, False, False]
        assert not lmask[2].any()
    assert torch.equal(lat[~lmask], torch.zeros_like(lat[~lmask]))  # empty items / frames are zeros, not NaN
    assert torch.isfinite(lat).all()


@pytest.mark.parametrize("mode", ["global", "per_frame"])
def test_padding_tokens_and_frames_do_not_change_latents(mode):
    r = make(mode)
    x = torch.randn(2, 3, 7, D)
    mask = torch.ones(2, 3, 7, dtype=torch.bool)
    mask[0, :, 5:] = False  # some padding tokens inside frames already
    with torch.no_grad():
        ref, ref_mask = r(x, mask)
        # append 2 padded frames and 4 padded tokens per frame, filled with garbage (even NaN)
        big = torch.full((2, 5, 11, D), float("nan"))
        big[:, :3, :7] = x
        big_mask = torch.zeros(2, 5, 11, dtype=torch.bool)
        big_mask[:, :3, :7] = mask
        out, out_mask = r(big, big_mask)
    T = ref.shape[1]
    torch.testing.assert_close(out[:, :T], ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(out_mask[:, :T], ref_mask)
    if mode == "per_frame":
        assert not out_mask[:, 3:].any()


def test_per_frame_equals_each_frame_alone():
    r = make("per_frame")
    x = torch.randn(2, 4, 9, D)
    mask = torch.rand(2, 4, 9) > 0.3
    mask[..., 0] = True
    with torch.no_grad():
        lat, _ = r(x, mask)
        for n in range(2):
            for t in range(4):
                alone, _ = r(x[n : n + 1, t : t + 1], mask[n : n + 1, t : t + 1])
                torch.testing.assert_close(lat[n, t], alone[0, 0], atol=1e-5, rtol=1e-5)


def test_global_mode_knows_frame_order():
    # the per-frame time embedding makes swapping two frames change the latents
    r = make("global")
    x = torch.randn(1, 2, 4, D)
    with torch.no_grad():
        a, _ = r(x)
        b, _ = r(x.flip(1))
    assert not torch.allclose(a, b, atol=1e-4)


def test_latents_attend_only_real_tokens_reference():
    # depth 1, one head: compare the first perceiver step against a hand-written softmax over the real keys
    torch.manual_seed(0)
    r = PerceiverResampler(dim=8, depth=1, num_latents=3, num_heads=1, head_dim=8, mode="global").eval()
    layer = r.layers[0]
    attn = layer.attn
    x = torch.randn(1, 1, 5, 8)
    mask = torch.tensor([[[True, False, True, True, False]]])
    with torch.no_grad():
        media = layer.norm_media(x[0, 0] + r.frame_embed[0])[mask[0, 0]]  # (3 real, 8)
        lat = layer.norm_latents(r.latents)
        kv = torch.cat([media, lat])
        q, k, v = lat @ attn.q_proj.weight.T, kv @ attn.k_proj.weight.T, kv @ attn.v_proj.weight.T
        w = torch.exp(q @ k.T / 8**0.5)
        w = w / w.sum(-1, keepdim=True)
        h = r.latents + attn.o_proj(w @ v)
        expected = h + layer.ff(layer.ff_norm(h))
        got = layer(x[0] + r.frame_embed[:1, None], r.latents[None], mask[0].reshape(1, 5))
    torch.testing.assert_close(got[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["global", "per_frame"])
def test_backward_reaches_every_parameter(mode):
    r = make(mode).train()
    lat, _ = r(torch.randn(2, 3, 5, D), torch.ones(2, 3, 5, dtype=torch.bool))
    lat.square().mean().backward()
    for name, p in r.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_config_and_input_errors():
    with pytest.raises(ConfigError, match="mode"):
        PerceiverResampler(D, 1, K, 2, 8, mode="nope")
    with pytest.raises(InputError, match="max_frames"):
        make("global")(torch.randn(1, 9, 2, D))
    with pytest.raises(InputError, match="token_mask"):
        make("global")(torch.randn(1, 2, 2, D), torch.ones(1, 2, 3, dtype=torch.bool))


def test_pool3d_equals_hand_computed_average():
    # x[t, i, j] = arange; pool (4, 4x4) -> (2, 2x2): each output averages a 2 x 2 x 2 block
    x = torch.arange(4 * 16, dtype=torch.float32).reshape(1, 4, 16, 1)
    pooled, valid = masked_adaptive_avg_pool3d(x, torch.ones(1, 4, 16, dtype=torch.bool), 2, 2)
    grid = x.reshape(4, 4, 4)  # (t, h, w)
    expected = torch.tensor(
        [[grid[2 * a : 2 * a + 2, 2 * b : 2 * b + 2, 2 * c : 2 * c + 2].mean() for b in range(2) for c in range(2)]
         for a in range(2)]
    )
    assert torch.equal(pooled[0, :, :, 0], expected)
    assert valid.all()
    # value check by arithmetic: block (0, 0, 0) holds t*16 + h*4 + w for t, h, w in {0, 1} -> mean 10.5
    assert pooled[0, 0, 0, 0].item() == 10.5


def test_pool3d_masked_average_and_module():
    x = torch.arange(2 * 4, dtype=torch.float32).reshape(1, 2, 4, 1)  # frames [0..3], [4..7], 2x2 grid
    mask = torch.tensor([[[True, True, True, True], [True, False, False, False]]])
    pooled, _ = masked_adaptive_avg_pool3d(x, mask, 1, 1)
    assert pooled.item() == pytest.approx((0 + 1 + 2 + 3 + 4) / 5)  # padded tokens 5, 6, 7 left out

    torch.manual_seed(0)
    pool = Pool3d(dim=3, out_frames=2, out_hw=1)
    x = torch.randn(2, 4, 4, 3)
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    mask[1, 2:] = False  # item 1 has 2 real frames out of 4: its windows lie over those two, as alone
    lat, lmask = pool(x, mask)
    assert lat.shape == (2, 2, 1, 3) and lmask.tolist() == [[True, True], [True, True]]
    expected = pool.norm(pool.proj(x[0, :2].reshape(-1, 3).mean(0)))
    torch.testing.assert_close(lat[0, 0, 0], expected)
    torch.testing.assert_close(lat[1, 1, 0], pool.norm(pool.proj(x[1, 1].mean(0))))  # its own second frame
    alone, _ = pool(x[1:2, :2], mask[1:2, :2])
    torch.testing.assert_close(lat[1], alone[0])
    image, _ = pool(x[1:2, :1], mask[1:2, :1])  # one frame (an image) repeats into both windows, batched or not
    batched, _ = pool(torch.cat([x[:1], torch.cat([x[1:2, :1], torch.zeros(1, 3, 4, 3)], 1)]),
                      torch.cat([mask[:1], torch.cat([mask[1:2, :1], torch.zeros(1, 3, 4, dtype=torch.bool)], 1)]))
    torch.testing.assert_close(batched[1], image[0])
    torch.testing.assert_close(image[0, 0], image[0, 1])
    lat.sum().backward()
    assert all(p.grad is not None for p in pool.parameters())


def test_pool3d_rejects_non_square_grid():
    with pytest.raises(InputError, match="square"):
        Pool3d(4, 1, 1)(torch.randn(1, 2, 6, 4))


def test_adaptive_pool_reference_matches_torch_when_unmasked():
    x = torch.randn(2, 6, 16, 5)
    pooled, _ = masked_adaptive_avg_pool3d(x, torch.ones(2, 6, 16, dtype=torch.bool), 3, 2)
    ref = F.avg_pool3d(x.reshape(2, 6, 4, 4, 5).permute(0, 4, 1, 2, 3), kernel_size=2)  # exact 2x2x2 windows
    torch.testing.assert_close(pooled, ref.permute(0, 2, 3, 4, 1).reshape(2, 3, 4, 5))

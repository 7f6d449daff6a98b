"""Gated cross-attention, media groups and masks, and concat splicing, against hand-computed truths."""

import math

import pytest
import torch

from unified.errors import InputError
from unified.model.fusion import (
    GatedCrossAttentionBlock,
    build_media_mask,
    flatten_media,
    media_groups,
    placeholder_groups,
    splice_media,
)
from unified.model.layers import Attention

P, V, A, W = 50, 51, 52, 7  # <image>, <video>, <audio>, a word


def test_media_groups_hand_computed():
    tg, ig = media_groups(torch.tensor([[P, W, W, P, P, W]]), [P])
    assert tg.tolist() == [[0, 0, 0, 1, 1, 1]] and ig.tolist() == [[0, 1, 1]]
    ids = torch.tensor([
        [W, W, V, A, W, W, P, W],  # words before media see nothing; <video><audio> is one group
        [P, W, P, W, A, W, W, W],  # three groups
        [W, W, W, W, W, W, W, W],  # no media
    ])
    tg, ig = media_groups(ids, [P, V, A])
    assert tg.tolist() == [
        [-1, -1, 0, 0, 0, 0, 1, 1],
        [0, 0, 1, 1, 2, 2, 2, 2],
        [-1] * 8,
    ]
    assert ig.tolist() == [[0, 0, 1], [0, 1, 2], [-1, -1, -1]]
    # per-kind slots: visual placeholders and audio placeholders separately
    assert placeholder_groups(ids, tg, [P, V]).tolist() == [[0, 1], [0, 1], [-1, -1]]
    assert placeholder_groups(ids, tg, [A]).tolist() == [[0], [2], [-1]]
    # a fixed number of slots: padded with -1, extra occurrences dropped
    assert media_groups(ids, [P, V, A], num_items=4)[1].tolist() == [[0, 0, 1, -1], [0, 1, 2, -1], [-1] * 4]
    assert placeholder_groups(ids, tg, [P, V, A], num_items=2).tolist() == [[0, 0], [0, 1], [-1, -1]]


def test_build_media_mask_previous_and_all():
    tg = torch.tensor([[-1, 0, 0, 1]])
    lg = torch.tensor([[0, 0, 1, -1]])
    prev = build_media_mask(tg, lg, "previous")
    assert prev.int().tolist() == [[[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]]]
    assert build_media_mask(tg, lg, "all").int().tolist() == [[[1, 1, 1, 0]] * 4]
    with pytest.raises(InputError, match="mode"):
        build_media_mask(tg, lg, "next")


def test_flatten_media_groups_and_padding():
    lat = torch.randn(1, 2, 2, 3, 4)  # (B, M, T', K, D)
    lmask = torch.tensor([[[True, False], [True, True]]])
    media, lg = flatten_media(lat, lmask, torch.tensor([[1, 0]]))
    assert media.shape == (1, 12, 4) and torch.equal(media[0, 6:9], lat[0, 1, 0])
    assert lg.tolist() == [[1, 1, 1, -1, -1, -1, 0, 0, 0, 0, 0, 0]]


def naive_masked_attention(attn: Attention, x, media, mask):
    """Per-row loop with the softmax written out; rows with nothing allowed give 0."""
    x, media = x.detach(), media.detach()
    H = attn.num_heads
    inner = attn.q_proj.weight.shape[0]
    E = inner // H
    out = torch.zeros(x.shape[0], x.shape[1], inner, dtype=torch.float64)
    Wq, Wk, Wv = (m.weight.detach().double() for m in (attn.q_proj, attn.k_proj, attn.v_proj))
    for b in range(x.shape[0]):
        k_all = media[b].double() @ Wk.T
        v_all = media[b].double() @ Wv.T
        for i in range(x.shape[1]):
            allowed = [s for s in range(media.shape[1]) if mask[b, i, s]]
            if not allowed:
                continue
            q = x[b, i].double() @ Wq.T
            for h in range(H):
                sl = slice(h * E, (h + 1) * E)
                scores = [float(q[sl] @ k_all[s, sl]) / math.sqrt(E) for s in allowed]
                top = max(scores)
                w = [math.exp(c - top) for c in scores]
                total = sum(w)
                out[b, i, sl] = sum(wi / total * v_all[s, sl] for wi, s in zip(w, allowed))
    has = mask.any(-1, keepdim=True)
    return torch.where(has, out @ attn.o_proj.weight.detach().double().T, torch.zeros(()).double())


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_masked_cross_attention_matches_naive_reference(impl):
    torch.manual_seed(0)
    attn = Attention(12, num_heads=3, head_dim=4, kv_dim=10, is_cross=True, attn_implementation=impl)
    x, media = torch.randn(2, 5, 12), torch.randn(2, 7, 10)
    mask = torch.rand(2, 5, 7) > 0.5
    mask[0, 1] = False  # a fully masked row
    mask[1, 4] = True
    with torch.no_grad():
        got = attn(x, context=media, mask=mask[:, None])
    expected = naive_masked_attention(attn, x, media, mask)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(got[0, 1], torch.zeros(12))


def test_fully_masked_rows_are_exact_zeros_with_finite_grads():
    torch.manual_seed(0)
    block = GatedCrossAttentionBlock(dim=8, media_dim=6, num_heads=2, head_dim=4)
    with torch.no_grad():
        block.attn_gate.fill_(1.0)  # ff_gate stays 0: the output differs from x only by attention
    x = torch.randn(1, 3, 8, requires_grad=True)
    media = torch.randn(1, 4, 6)
    mask = torch.zeros(1, 3, 4, dtype=torch.bool)
    mask[0, 2, 1] = True
    out = block(x, media, mask)
    assert torch.equal(out[0, :2], x[0, :2])  # rows 0 and 1 see nothing: exactly unchanged
    assert not torch.equal(out[0, 2], x[0, 2])
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and all(torch.isfinite(p.grad).all() for p in block.parameters())
    # no media at all in the batch
    assert torch.equal(block(x, torch.randn(1, 0, 6), torch.zeros(1, 3, 0, dtype=torch.bool)), x)


def test_gates_at_zero_make_the_block_the_identity_and_get_gradient():
    torch.manual_seed(0)
    block = GatedCrossAttentionBlock(dim=8, media_dim=6, num_heads=2, head_dim=4)
    assert block.attn_gate.item() == 0.0 and block.ff_gate.item() == 0.0
    x = torch.randn(2, 5, 8)
    out = block(x, torch.randn(2, 3, 6), torch.rand(2, 5, 3) > 0.3)
    assert torch.equal(out, x)
    (out * torch.randn_like(out)).sum().backward()
    assert block.attn_gate.grad.abs().item() > 0 and block.ff_gate.grad.abs().item() > 0


def test_previous_mask_isolates_groups():
    torch.manual_seed(0)
    block = GatedCrossAttentionBlock(dim=8, media_dim=8, num_heads=2, head_dim=4).eval()
    with torch.no_grad():
        block.attn_gate.fill_(0.7)
        block.ff_gate.fill_(0.5)
    ids = torch.tensor([[W, P, W, W, P, W, W]])
    tg, ig = media_groups(ids, [P])  # tokens 1-3 -> group 0, tokens 4-6 -> group 1
    lat = torch.randn(1, 2, 1, 3, 8)  # two items, 3 latents each
    media, lg = flatten_media(lat, torch.ones(1, 2, 1, dtype=torch.bool), ig)
    mask = build_media_mask(tg, lg, "previous")
    x = torch.randn(1, 7, 8)
    with torch.no_grad():
        base = block(x, media, mask)
        other = media.clone()
        other[0, :3] += torch.randn(3, 8)  # change item 0 (group 0) only
        changed = block(x, other, mask)
    torch.testing.assert_close(changed[0, 4:], base[0, 4:], atol=0, rtol=0)  # group-1 tokens: unchanged
    assert not torch.allclose(changed[0, 1:4], base[0, 1:4])  # group-0 tokens: changed
    torch.testing.assert_close(changed[0, 0], base[0, 0], atol=0, rtol=0)  # before any media


def test_splice_media_hand_computed():
    D = 2
    embeds = torch.arange(2 * 5 * D, dtype=torch.float32).reshape(2, 5, D)
    ids = torch.tensor([[W, P, W, A, 0], [P, W, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    img0, aud0, img1 = torch.full((3, D), -1.0), torch.full((1, D), -2.0), torch.full((2, D), -3.0)
    new, new_mask = splice_media(embeds, mask, ids, [P, A], [[img0, aud0], [img1]])
    e = embeds
    row0 = torch.stack([e[0, 0], *img0, e[0, 2], *aud0])  # 1 + 3 + 1 + 1 = 6
    row1 = torch.cat([img1, e[1, 1:2], torch.zeros(3, D)])  # 2 + 1, padded to 6
    assert torch.equal(new, torch.stack([row0, row1]))
    assert new_mask.tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]] and new_mask.dtype == mask.dtype


def test_splice_media_left_padding_empty_items_and_gradients():
    D = 3
    embeds = torch.randn(1, 5, D, requires_grad=True)
    ids = torch.tensor([[0, 0, W, P, P]])
    mask = torch.tensor([[False, False, True, True, True]])  # left padded
    lat = torch.randn(2, D, requires_grad=True)
    new, new_mask = splice_media(embeds, mask, ids, [P], [[lat, torch.zeros(0, D)]])
    assert new.shape == (1, 3, D) and new_mask.tolist() == [[True, True, True]]
    assert torch.equal(new[0, 0], embeds[0, 2]) and torch.equal(new[0, 1:], lat)
    new.sum().backward()
    assert lat.grad is not None and embeds.grad[0, 2].abs().sum() > 0


def test_splice_media_item_count_mismatch():
    with pytest.raises(InputError, match="placeholder"):
        splice_media(torch.zeros(1, 3, 2), torch.ones(1, 3), torch.tensor([[P, W, P]]), [P], [[torch.zeros(1, 2)]])


def _splice_by_items(embeds, mask, ids, kinds, tracks):
    """The reference: each row's items cut out on the host (its kept frames' latents, slot n for the n-th real
    placeholder of a kind) and spliced by `splice_media`; the tracks spliced the same way, as floats."""
    items, carried = [], []
    for b in range(ids.shape[0]):
        row, row_tracks, seen = [], [], [0] * len(kinds)
        for i in range(ids.shape[1]):
            token = int(ids[b, i])
            if not mask[b, i] or token not in (P, V, A):
                continue
            k = 1 if token == A else 0
            latents, keep = torch.cat(kinds[k][1], dim=3), kinds[k][2]  # a frame's parts one after another
            n = seen[k]
            seen[k] += 1
            lat = latents[b, n][keep[b, n]].reshape(-1, embeds.shape[-1]) if n < latents.shape[1] else \
                embeds.new_zeros(0, embeds.shape[-1])
            row.append(lat)
            row_tracks.append(tracks[b, i].float().expand(lat.shape[0], -1))
        items.append(row)
        carried.append(row_tracks)
    new, new_mask = splice_media(embeds, mask, ids, [P, V, A], items)
    spliced, _ = splice_media(tracks.float(), mask, ids, [P, V, A], carried)
    return new, new_mask, spliced.long().masked_fill(new_mask[..., None] == 0, -1)


def _slot_case(device="cpu"):
    g = torch.Generator().manual_seed(0)
    D = 4
    ids = torch.tensor([[W, V, W, A, W, P, 0, 0],  # video, audio, then an image: three slots, two kinds
                        [0, 0, P, P, W, W, A, V],  # left padded; the second image has no slot (dropped)
                        [W, W, W, W, W, W, W, W]])  # no media
    mask = (ids != 0).long()
    embeds = torch.randn(3, 8, D, generator=g, requires_grad=True)
    visual = torch.randn(3, 2, 3, 2, D, generator=g, requires_grad=True)  # (B, M=2, T'=3, K=2, D)
    stamps = torch.randn(3, 2, 3, 1, D, generator=g, requires_grad=True)  # a per-frame timestamp in front
    visual_keep = torch.tensor([[[True, True, False], [True, False, False]],
                                [[True, True, True], [False, False, False]],
                                [[True, True, True], [True, True, True]]])
    audio = torch.randn(3, 1, 1, 3, D, generator=g, requires_grad=True)  # (B, A=1, 1, K=3, D)
    audio_keep = torch.tensor([[[True]], [[False]], [[True]]])  # row 1's audio slot is empty
    tracks = torch.stack([torch.arange(8).expand(3, 8), torch.arange(8).flip(0).expand(3, 8)], dim=-1)  # (B, L, 2)
    kinds = [([P, V], [stamps, visual], visual_keep), ([A], [audio], audio_keep)]
    return embeds, mask, ids, kinds, tracks


def test_splice_slots_equals_cutting_the_items_out_on_the_host():
    """`splice_slots` (dense slots, scatters on the device) against the per-item splice: the same embeddings bit
    for bit, mask, carried tracks and gradients, with dropped frames, an empty slot, a placeholder past the slots,
    left padding and a row without media."""
    from unified.model.fusion import splice_slots

    embeds, mask, ids, kinds, tracks = _slot_case()
    new, new_mask, new_tracks = splice_slots(embeds, mask, ids, [P, V, A], kinds, tracks)
    ref, ref_mask, ref_tracks = _splice_by_items(embeds, mask, ids, kinds, tracks)
    assert torch.equal(new, ref) and torch.equal(new_mask, ref_mask) and torch.equal(new_tracks, ref_tracks)
    assert new_mask.sum(1).tolist() == [1 + 6 + 1 + 3 + 1 + 3, 9 + 2 + 0, 8]  # hand-counted: (1 + K) a frame
    weights = torch.randn(new.shape, generator=torch.Generator().manual_seed(1))
    leaves = [embeds, *kinds[0][1], *kinds[1][1]]
    mine = torch.autograd.grad((new * weights).sum(), leaves)
    theirs = torch.autograd.grad((ref * weights).sum(), leaves)
    assert all(torch.equal(a, b) for a, b in zip(mine, theirs))


def test_splice_slots_reads_nothing_back_given_the_length():
    """On the meta device no tensor has a value to read: with the spliced length given the splice runs there, so it
    has no host synchronisation; without it the one value it reads is the length."""
    from unified.model.fusion import splice_slots

    embeds, mask, ids, kinds, tracks = _slot_case()
    _, expected, _ = splice_slots(embeds, mask, ids, [P, V, A], kinds, tracks)
    meta = [(i, [part.detach().to("meta") for part in parts], keep.to("meta")) for i, parts, keep in kinds]
    new, new_mask, new_tracks = splice_slots(embeds.detach().to("meta"), mask.to("meta"), ids.to("meta"),
                                             [P, V, A], meta, tracks.to("meta"), length=expected.shape[1])
    assert new.shape == (3, expected.shape[1], 4) and new_tracks.shape == (3, expected.shape[1], 2)
    assert new_mask.shape == expected.shape
    with pytest.raises((NotImplementedError, RuntimeError)):
        splice_slots(embeds.detach().to("meta"), mask.to("meta"), ids.to("meta"), [P, V, A], meta)


def test_the_splice_benchmark_runs_and_its_two_paths_agree():
    """`benchmarks/splice.py` (it asserts its two splices give the same tensors) on a few rows, so it cannot rot."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[1]
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "splice.py"), "--rows", "3", "--runs", "1",
                           "--warmup", "0"], capture_output=True, text=True, timeout=120, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "3 rows: per item" in done.stdout

"""Smooth starting embeddings for numbered tokens, and where-is-this-patch signal in the patch stem."""

import math

import pytest
import torch
from model_fixtures import tiny_config

from unified.errors import ConfigError
from unified.model import UnifiedForConditionalGeneration
from unified.model.encoders import PatchStem
from unified.model.ordinal import ordinal_rows


@pytest.mark.parametrize("width, noise", [(0.02, 0.25), (0.05, 0.0)])
def test_rows_follow_the_gaussian_kernel_of_the_bin_distance(width, noise):
    n, dim = 1000, 4096
    rows = ordinal_rows(n, dim, width, noise, generator=torch.Generator().manual_seed(0)).double()
    assert rows.var().item() == pytest.approx(1.0, abs=0.05)  # unit variance, as the rest of the embedding
    for gap in (1, 10, 20, 40, 100, 400):
        dots = (rows[:-gap] * rows[gap:]).sum(-1) / dim  # every pair `gap` bins apart
        expected = (1 - noise) * math.exp(-((gap / (n - 1)) ** 2) / (2 * width ** 2))
        assert dots.mean().item() == pytest.approx(expected, abs=0.04), gap


def _model(ranges, seed=0):
    torch.manual_seed(seed)
    return UnifiedForConditionalGeneration(tiny_config(text={"ordinal_ranges": ranges}))


def test_model_starts_the_named_ranges_smooth_and_leaves_the_rest_random():
    emb = _model([[100, 300]]).shared.weight.detach()
    near = torch.cosine_similarity(emb[150:249], emb[151:250], dim=-1).mean().item()
    far = torch.cosine_similarity(emb[100:150], emb[250:300], dim=-1).abs().mean().item()
    text = torch.cosine_similarity(emb[10:99], emb[11:100], dim=-1).abs().mean().item()  # outside the range
    # 64 dimensions: (1 - 0.25) * exp(-(1/199)^2 / 0.0008) ~ 0.73 next door, ~0 half the range away
    assert near > 0.55 and far < 0.2 and text < 0.2, (near, far, text)


def test_loading_keeps_the_saved_embedding(tmp_path):
    model = _model([[100, 300]], seed=1)
    with torch.no_grad():
        model.shared.weight.add_(1.0)  # something no initialisation writes
    model.save_pretrained(tmp_path)
    loaded = UnifiedForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(loaded.shared.weight, model.shared.weight)


@pytest.mark.parametrize("text", [{"ordinal_ranges": [[5, 400]]}, {"ordinal_ranges": [[10, 3]]},
                                  {"ordinal_width": 0.0}, {"ordinal_noise": 1.5}])
def test_bad_ordinal_settings_name_the_field(text):
    with pytest.raises(ConfigError, match="ordinal"):
        tiny_config(text=text)


def test_patch_tokens_of_a_blank_image_differ_by_their_position():
    # A uniform image gives every interior patch the same convolution features: what tells the tokens apart is the
    # position table, which should be a sizeable part of each token (at 0.02 it was ~3 %).
    torch.manual_seed(0)
    stem = PatchStem(patch_size=16, hidden_size=64, stem_channels=16, image_size=64)
    with torch.no_grad():
        tokens = stem(torch.full((1, 3, 64, 64), 0.3))[0]  # (16, 64)
    interior = tokens.view(4, 4, 64)[1:3, 1:3].reshape(4, 64)
    spread = (interior - interior.mean(0)).norm(dim=-1).mean() / interior.norm(dim=-1).mean()
    assert spread > 0.3, spread.item()

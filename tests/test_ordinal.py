"""Smooth starting embeddings for numbered tokens, and where-is-this-patch signal in the patch stem."""

import math

import pytest
import torch
from model_fixtures import tiny_config

from unified.errors import ConfigError
from unified.model import UnifiedForConditionalGeneration
from unified.model.configuration import UnifiedConfig
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


# ---------------------------------------------------------------------------------------------- value feature
def test_value_features_by_hand():
    from unified.model.value_feature import value_features
    from unified.tokenizers.values import bin_to_value

    phi = value_features(torch.tensor([700, 1023]), 1024, octaves=2).double()
    for row, k in zip(phi, (700, 1023)):
        c = -1 + (2 * k + 1) / 1024
        v = bin_to_value(k, 1024) / 256.0
        expected = [v, c, math.sin(math.pi * v), math.sin(2 * math.pi * v), math.cos(math.pi * v),
                    math.cos(2 * math.pi * v), math.sin(math.pi * c), math.sin(2 * math.pi * c),
                    math.cos(math.pi * c), math.cos(2 * math.pi * c)]
        assert row.tolist() == pytest.approx(expected, abs=1e-6)


def test_the_value_feature_makes_nearby_values_nearby_embeddings():
    """With plain random table rows (no smooth start), the encoder's input embeddings of two nearby values are far
    apart without the feature; with it (W learnt, here set at random) they are near, and far values stay apart."""
    start, stop = 1000, 2024
    near, far = [1600, 1601], [1600, 1900]
    config = UnifiedConfig.preset("tiny", text={"vocab_size": 2419, "value_feature": True,
                                                "value_ids": [start, stop], "embed_init_std": 0.05})
    torch.manual_seed(0)
    model = UnifiedForConditionalGeneration(config).eval()
    feature = model.encoder.value_feature
    assert float(feature.weight.detach().abs().max()) == 0.0  # starts at 0: the model is unchanged at step 0
    with torch.no_grad():
        feature.weight.normal_()

    def embeds(ids):
        x = model.get_input_embeddings()(torch.tensor([ids]))
        return feature(torch.tensor([ids]), x)[0]

    def distance(ids, e):
        return float((e(ids)[0] - e(ids)[1]).norm() / e(ids)[0].norm())

    def table_only(ids):
        return model.get_input_embeddings()(torch.tensor([ids]))[0]

    assert distance(near, table_only) > 1.0  # independent random rows: as far apart as any two
    assert distance(near, embeds) < 0.1
    assert distance(far, embeds) > 0.5
    # only value tokens get it
    assert torch.equal(embeds([5, 6]), table_only([5, 6]))


def test_the_value_feature_is_saved_and_needs_the_value_ids(tmp_path):
    config = UnifiedConfig.preset("tiny", text={"vocab_size": 2419, "value_feature": True, "value_ids": [10, 20]})
    model = UnifiedForConditionalGeneration(config)
    with torch.no_grad():
        model.encoder.value_feature.weight.fill_(0.5)
    model.save_pretrained(tmp_path)
    loaded = UnifiedForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(loaded.encoder.value_feature.weight, model.encoder.value_feature.weight)
    with pytest.raises(ConfigError, match="text.value_ids"):
        UnifiedConfig.preset("tiny", text={"vocab_size": 2419, "value_feature": True}).validate()

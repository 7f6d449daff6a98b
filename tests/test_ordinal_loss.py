"""The ordinal-aware loss (HL-Gauss): targets in the location / value / time ranges are scored against a Gaussian
smoothed over neighbouring bins. Checked against hand-computed values on small tensors (the bin masses integrated
numerically from the Gaussian density, not from its CDF) and, at sigma 0, against plain cross-entropy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unified.model.ordinal import hl_gauss_targets, token_cross_entropy


def _mass(k: int, n: int, sigma: float) -> list[float]:
    """Gaussian mass per bin [i, i + 1) centred at k + 0.5, by the midpoint rule (2,000 steps per bin)."""
    def density(x):
        return math.exp(-((x - (k + 0.5)) ** 2) / (2 * sigma**2))

    steps = 2000
    mass = [sum(density(i + (j + 0.5) / steps) for j in range(steps)) / steps for i in range(n)]
    total = sum(mass)
    return [m / total for m in mass]


def test_targets_match_the_integrated_gaussian():
    for k, n, sigma in ((1, 4, 1.0), (0, 5, 0.75), (6, 7, 2.0)):
        got = hl_gauss_targets(torch.tensor([k]), n, sigma)[0].tolist()
        assert got == pytest.approx(_mass(k, n, sigma), abs=1e-6)


def test_loss_on_a_small_tensor_by_hand():
    """V = 6 with ordered bins 2..5; labels: bin 1 of the range (id 3), a plain token (id 0), and padding."""
    logits = torch.tensor([[[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 0.0, 0.0, 1.0, 0.0, 0.0],
                            [9.0, 9.0, 9.0, 9.0, 9.0, 9.0]]])
    labels = torch.tensor([[3, 0, -100]])
    log_probs = [[x - math.log(sum(math.exp(v) for v in row)) for x in row] for row in logits[0].tolist()]
    p = _mass(1, 4, 1.0)
    smooth = -sum(p[i] * log_probs[0][2 + i] for i in range(4))
    plain = -log_probs[1][0]
    loss = token_cross_entropy(logits, labels, [[2, 6]], sigma=1.0)
    assert float(loss) == pytest.approx((smooth + plain) / 2, abs=1e-5)
    per_token = token_cross_entropy(logits, labels, [[2, 6]], sigma=1.0, reduction="none")
    assert per_token[0].tolist() == pytest.approx([smooth, plain, 0.0], abs=1e-5)


def test_a_neighbouring_bin_costs_less_than_a_far_one():
    n = 20
    near, far = torch.full((1, 1, n), -10.0), torch.full((1, 1, n), -10.0)
    near[0, 0, 11], far[0, 0, 18] = 10.0, 10.0  # the truth is bin 10
    labels = torch.tensor([[10]])
    smooth = [float(token_cross_entropy(x, labels, [[0, n]], sigma=0.75)) for x in (near, far)]
    plain = [float(token_cross_entropy(x, labels, [[0, n]], sigma=0.0)) for x in (near, far)]
    assert smooth[0] < 0.8 * smooth[1]  # about 15.4 vs 20: the near bin holds ~23 % of the target mass
    assert plain[0] == pytest.approx(plain[1])  # cross-entropy: any wrong bin is as wrong


def test_sigma_zero_is_plain_cross_entropy():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 5, 30), torch.randint(0, 30, (2, 5))
    labels[1, 3:] = -100
    expected = F.cross_entropy(logits.reshape(-1, 30), labels.reshape(-1), ignore_index=-100)
    assert float(token_cross_entropy(logits, labels, [[10, 30]], sigma=0.0)) == pytest.approx(float(expected))


def test_the_model_trains_with_it_and_the_config_checks_it():
    from task_rows import tiny_stack

    from unified.errors import ConfigError
    from unified.model import UnifiedConfig

    tokenizer, processor, _ = tiny_stack()
    base = {"vocab_size": tokenizer.vocab_size, "image_token_id": tokenizer.image_token_id,
            "video_token_id": tokenizer.video_token_id, "audio_token_id": tokenizer.audio_token_id}
    with pytest.raises(ConfigError, match="ordinal_loss_sigma"):
        UnifiedConfig.preset("tiny", text={**base, "ordinal_loss_sigma": 0.75})  # no ranges to smooth over
    from unified.model import UnifiedModel

    config = UnifiedConfig.preset("tiny", text={**base, "ordinal_loss_sigma": 0.75,
                                                "ordinal_ranges": tokenizer.ordinal_ranges})
    model = UnifiedModel(config)
    batch = processor([{"text": "where? <loc_3>", "target": "<loc_10><loc_20><loc_30><loc_40>"}])
    out = model(**batch)
    expected = token_cross_entropy(out.logits, batch["labels"], tokenizer.ordinal_ranges, 0.75)
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()))
    assert float(out.loss.detach()) != pytest.approx(float(token_cross_entropy(out.logits, batch["labels"]).detach()))
    out.loss.backward()


def test_per_token_cross_entropy_against_float64():
    """Each token's cross-entropy (bf16 logits too, scored in float32) against log-softmax in float64, 0 where
    ignored, over a vocabulary of realistic size."""
    torch.manual_seed(0)
    logits, labels = torch.randn(3, 7, 4096) * 4, torch.randint(0, 4096, (3, 7))
    labels[2, 4:] = -100
    expected = -logits.double().log_softmax(-1).gather(-1, labels.clamp_min(0)[..., None])[..., 0] * (labels != -100)
    got = token_cross_entropy(logits, labels, reduction="none")
    assert got.shape == labels.shape and got.dtype == torch.float32
    assert torch.allclose(got.double(), expected, atol=1e-5, rtol=0) and not got[2, 4:].any()
    half = token_cross_entropy(logits.bfloat16(), labels, reduction="none")
    assert torch.allclose(half.double(), -logits.bfloat16().double().log_softmax(-1).gather(
        -1, labels.clamp_min(0)[..., None])[..., 0] * (labels != -100), atol=1e-5, rtol=0)

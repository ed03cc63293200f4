"""Training losses: analytic values, normalisation and gradient flow."""

from __future__ import annotations

import math

import pytest
import torch
from bench.codecs.modules.spectral import mel_filterbank

from bench.train.losses import (
    MultiScaleMelLoss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    relative_feature_matching,
    time_l1,
)

SAMPLE_RATE = 16000


@pytest.fixture
def audio_pair() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(2, 1, 4096, generator=generator)
    return x, x + 0.01 * torch.randn(2, 1, 4096, generator=generator)


def test_time_l1_is_the_mean_absolute_error():
    x = torch.tensor([[[0.0, 1.0, -1.0, 0.5]]])
    x_hat = torch.tensor([[[0.5, 1.0, 0.0, 0.5]]])
    assert time_l1(x, x_hat).item() == pytest.approx(1.5 / 4)
    with pytest.raises(ValueError, match="shaped like x"):
        time_l1(x, x_hat[..., :3])
    with pytest.raises(ValueError, match="batch, channels, samples"):
        time_l1(x[0], x_hat[0])


def test_mel_loss_is_zero_for_identical_signals(audio_pair):
    x, _ = audio_pair
    assert MultiScaleMelLoss(SAMPLE_RATE)(x, x.clone()).item() == 0.0


def test_mel_loss_is_positive_and_the_mean_over_scales(audio_pair):
    x, x_hat = audio_pair
    full = MultiScaleMelLoss(SAMPLE_RATE, scales=[5, 8, 11])(x, x_hat)
    singles = [MultiScaleMelLoss(SAMPLE_RATE, scales=[s])(x, x_hat) for s in (5, 8, 11)]
    assert full.item() > 0
    torch.testing.assert_close(full, torch.stack(singles).mean())


def test_mel_loss_is_l1_plus_alpha_times_l2(audio_pair):
    x, x_hat = audio_pair
    loss = MultiScaleMelLoss(SAMPLE_RATE, scales=[7])
    difference = loss.mel(x_hat, 7) - loss.mel(x, 7)
    l1, l2 = difference.abs().mean(), difference.pow(2).mean()
    for alpha in (0.0, 1.0, 3.0):
        value = MultiScaleMelLoss(SAMPLE_RATE, scales=[7], alpha=alpha)(x, x_hat)
        torch.testing.assert_close(value, l1 + alpha * l2)


def test_log_l2_variant_puts_the_l2_term_on_log_mels(audio_pair):
    x, x_hat = audio_pair
    loss = MultiScaleMelLoss(SAMPLE_RATE, scales=[7], log_l2=True)
    mel, mel_hat = loss.mel(x, 7), loss.mel(x_hat, 7)
    expected = (mel_hat - mel).abs().mean() + (
        torch.log10(mel_hat + 1e-5) - torch.log10(mel + 1e-5)
    ).pow(2).mean()
    torch.testing.assert_close(loss(x, x_hat), expected)
    assert loss(x, x.clone()).item() == 0.0


def test_log_l2_variant_weighs_a_missing_quiet_band_like_a_loud_one():
    """Why the CPU demo trains with it: the linear loss barely sees a quiet band."""
    time = torch.arange(8192) / SAMPLE_RATE
    loud = 0.5 * torch.sin(2 * math.pi * 300 * time).view(1, 1, -1)
    quiet = 0.005 * torch.sin(2 * math.pi * 5000 * time).view(1, 1, -1)
    reference = loud + quiet
    without_quiet, without_loud = loud, quiet + 0.9 * loud

    def ratio(loss: MultiScaleMelLoss) -> float:
        return (loss(reference, without_quiet) / loss(reference, without_loud)).item()

    linear = ratio(MultiScaleMelLoss(SAMPLE_RATE, scales=[8, 10]))
    logarithmic = ratio(MultiScaleMelLoss(SAMPLE_RATE, scales=[8, 10], log_l2=True))
    assert linear < 0.05 and logarithmic > 0.5


def test_mel_uses_window_normalised_stft():
    # White noise of deviation sigma has E|X_k| = sigma * sqrt(pi) / 2 in every bin of an STFT
    # divided by the window's L2 norm, at any window size; each mel band is then that times the
    # sum of its filter weights.
    sigma = 0.1
    noise = sigma * torch.randn(1, 1, 2 * SAMPLE_RATE, generator=torch.Generator().manual_seed(1))
    loss = MultiScaleMelLoss(SAMPLE_RATE)
    for scale in (6, 10):
        band_sums = mel_filterbank(SAMPLE_RATE, 2**scale, 64).sum(dim=1)
        used = band_sums > 0
        mean_mel = loss.mel(noise, scale)[0, 0].mean(dim=-1)
        ratio = (mean_mel[used] / band_sums[used]).mean().item()
        assert ratio == pytest.approx(sigma * math.sqrt(math.pi) / 2, rel=0.05)


def test_mel_loss_gradient_flows(audio_pair):
    x, x_hat = audio_pair
    x_hat = x_hat.clone().requires_grad_(True)
    MultiScaleMelLoss(SAMPLE_RATE)(x, x_hat).backward()
    assert torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0


def test_mel_loss_rejects_short_input():
    x = torch.zeros(1, 1, 1000)
    with pytest.raises(ValueError, match="at least 1025 samples"):
        MultiScaleMelLoss(SAMPLE_RATE)(x, x)


def test_hinge_losses_on_known_logits():
    fake = [torch.tensor([0.5, 2.0]), torch.tensor([-1.0])]
    # relu(1 - D): (0.5 + 0) / 2 = 0.25 and 2; mean over the two discriminators.
    assert hinge_generator_loss(fake).item() == pytest.approx((0.25 + 2.0) / 2)
    real = [torch.tensor([0.5, 2.0]), torch.tensor([1.0])]
    fake = [torch.tensor([-2.0, 0.0]), torch.tensor([1.0])]
    # k=0: mean(0.5, 0) + mean(0, 1) = 0.75; k=1: 0 + 2 = 2.
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx((0.75 + 2.0) / 2)
    with pytest.raises(ValueError, match="as many real as fake"):
        hinge_discriminator_loss(real, fake[:1])
    with pytest.raises(ValueError, match="at least one"):
        hinge_generator_loss([])


def test_relative_feature_matching_on_known_features():
    real = [[torch.tensor([1.0, -1.0]), torch.tensor([2.0, 2.0])]]
    fake = [[torch.tensor([0.0, 0.0]), torch.tensor([1.0, 3.0])]]
    # Layer 0: 1 / 1; layer 1: 1 / 2.
    assert relative_feature_matching(real, fake).item() == pytest.approx(0.75)


def test_relative_feature_matching_is_invariant_to_a_common_scale():
    generator = torch.Generator().manual_seed(2)
    real = [[torch.randn(2, 4, 8, generator=generator) for _ in range(3)] for _ in range(2)]
    fake = [[torch.randn(2, 4, 8, generator=generator) for _ in range(3)] for _ in range(2)]
    base = relative_feature_matching(real, fake)
    for c in (1e-3, 7.0):
        scaled = relative_feature_matching(
            [[c * f for f in maps] for maps in real], [[c * f for f in maps] for maps in fake]
        )
        torch.testing.assert_close(scaled, base)


def test_relative_feature_matching_trains_only_the_fake_side():
    real = torch.randn(3, requires_grad=True)
    fake = torch.randn(3, requires_grad=True)
    relative_feature_matching([[real]], [[fake]]).backward()
    assert real.grad is None and fake.grad is not None
    with pytest.raises(ValueError, match="same number"):
        relative_feature_matching([[real, real]], [[fake]])

"""The BigVGAN-style generator: its anti-aliasing filter, that the anti-aliased activation
really keeps snake's harmonics from folding back into the band, and the generator's shapes
and weight-norm baking."""

from __future__ import annotations

import math

import pytest
import torch
from bench.codecs.modules.bigvgan import (
    AntiAliasedActivation,
    BigVGANGenerator,
    VocoderConfig,
    kaiser_sinc_filter,
)
from bench.codecs.modules.unet import SnakeBeta

pytestmark = pytest.mark.usefixtures("single_thread")


def gain(kernel: torch.Tensor, frequency: float) -> float:
    """|H(f)| of an FIR filter at ``frequency`` cycles per sample."""
    taps = torch.arange(len(kernel), dtype=torch.float64)
    phase = torch.exp(-2j * math.pi * frequency * taps)
    return float(abs((kernel.double() * phase).sum()))


def test_the_lowpass_passes_the_band_and_stops_above_the_original_nyquist():
    kernel = kaiser_sinc_filter(0.25, 0.3, 12)
    assert kernel.shape == (12,)
    assert gain(kernel, 0.0) == pytest.approx(1.0, abs=1e-6)
    assert gain(kernel, 0.1) > 0.9
    # Near the upsampled signal's Nyquist, where snake's harmonics would fold to.
    assert gain(kernel, 0.45) < 0.02


def spectrum_at(signal: torch.Tensor, frequency: float) -> float:
    """Magnitude of ``signal``'s Hann-windowed DFT at ``frequency`` cycles per sample."""
    window = torch.hann_window(signal.shape[-1], periodic=False, dtype=torch.float64)
    spectrum = torch.fft.rfft(signal.double() * window).abs()
    return float(spectrum[round(frequency * signal.shape[-1])])


def test_anti_aliasing_keeps_the_harmonics_of_snake_out_of_the_band():
    """A tone at 0.3 cycles/sample: snake's sin^2 makes a harmonic at 0.6, which at the
    signal's rate folds to 0.4. Computed at twice the rate and low-passed by BigVGAN's short
    12-tap filter, about a third of it comes back (0.31 measured); the tone itself passes."""
    samples = 4096
    tone = torch.sin(2 * math.pi * 0.3 * torch.arange(samples))[None, None]
    plain, anti_aliased = SnakeBeta(1), AntiAliasedActivation(1)
    for activation in (plain.log_alpha, anti_aliased.activation.log_alpha):
        activation.data.fill_(math.log(2.0))
    with torch.no_grad():
        aliased = plain(tone)[0, 0]
        clean = anti_aliased(tone)[0, 0]
    assert clean.shape == aliased.shape == (samples,)
    # The tone itself passes both.
    assert spectrum_at(clean, 0.3) == pytest.approx(spectrum_at(aliased, 0.3), rel=0.15)
    assert spectrum_at(clean, 0.4) < 0.5 * spectrum_at(aliased, 0.4)


@pytest.mark.parametrize("anti_alias", [True, False])
def test_the_generator_makes_hop_samples_per_frame(anti_alias):
    config = VocoderConfig(
        n_mels=16,
        initial_channels=32,
        upsample_rates=(4, 3, 2),
        resblock_kernels=(3,),
        anti_alias=anti_alias,
    )
    generator = BigVGANGenerator(config).eval()
    mel = torch.randn(2, 16, 9)
    with torch.no_grad():
        audio = generator(mel)
        assert audio.shape == (2, 1, 9 * 24) and audio.abs().max() <= 1
        generator.remove_weight_norm()
        torch.testing.assert_close(generator(mel), audio, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"expected a mel \(batch, 16, frames\)"):
        generator(torch.randn(2, 8, 9))


def test_a_config_whose_widths_cannot_halve_at_every_stage_is_refused():
    with pytest.raises(ValueError, match="divisible by 2 per upsampling stage"):
        VocoderConfig(initial_channels=12, upsample_rates=(2, 2, 2))

"""mel_distance and si_sdr against analytic cases."""

from __future__ import annotations

import pytest
import torch
from bench.codecs.modules.spectral import mel_filterbank

from bench.metrics import CannotScore, get_metric
from bench.metrics.signal import mel_distance, si_sdr


def _speechlike(seconds: float = 1.0, rate: int = 24000) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    time = torch.arange(int(seconds * rate)) / rate
    harmonics = sum(torch.sin(2 * torch.pi * 150 * k * time) / k for k in range(1, 20))
    return (0.1 * harmonics + 0.01 * torch.randn(time.shape, generator=generator)).unsqueeze(0)


def test_si_sdr_matches_the_analytic_value_for_added_orthogonal_noise():
    reference = _speechlike()
    noise = torch.randn(reference.shape, generator=torch.Generator().manual_seed(1))
    # Make the noise zero-mean and orthogonal to the reference, so SI-SDR = SNR exactly.
    noise = noise - noise.mean()
    centred = reference - reference.mean()
    noise = noise - (noise * centred).sum() / (centred * centred).sum() * centred
    noise = noise * (centred.norm() / noise.norm()) / 10  # 20 dB below the signal
    assert si_sdr(reference, reference + noise, 24000) == pytest.approx(20.0, abs=1e-3)


def test_si_sdr_is_scale_invariant_and_large_for_identity():
    reference = _speechlike()
    degraded = reference + 0.01 * torch.randn(
        reference.shape, generator=torch.Generator().manual_seed(2)
    )
    assert si_sdr(reference, 0.5 * degraded, 24000) == pytest.approx(
        si_sdr(reference, degraded, 24000)
    )
    assert si_sdr(reference, reference, 24000) > 100


def test_si_sdr_refuses_a_silent_reference():
    with pytest.raises(CannotScore, match="silent"):
        si_sdr(torch.zeros(1, 24000), _speechlike(), 24000)


def test_si_sdr_refuses_a_constant_degraded_signal_instead_of_scoring_0_db():
    # A constant is silence once the mean is removed: eps / eps made it 0 dB, better than
    # real Opus at 6 kbps (-0.65 dB on librivox_0880).
    with pytest.raises(CannotScore, match="degraded is silent"):
        si_sdr(_speechlike(), torch.full((1, 24000), 0.1), 24000)


def test_mel_distance_is_zero_for_identity_and_grows_with_noise():
    reference = _speechlike()
    assert mel_distance(reference, reference, 24000) == 0.0
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(reference.shape, generator=generator)
    distances = [
        mel_distance(reference, reference + level * noise, 24000) for level in (0.001, 0.01, 0.1)
    ]
    assert distances[0] < distances[1] < distances[2]


def test_mel_filterbank_triangles_have_unit_area_and_peak_in_order():
    rate, n_fft = 24000, 2048
    bank = mel_filterbank(rate, n_fft, 80)
    assert bank.shape == (80, n_fft // 2 + 1)
    bin_hz = rate / n_fft
    areas = bank.sum(dim=1) * bin_hz
    # Slaney normalisation: each triangle has unit area in Hz (up to sampling of narrow ones).
    assert torch.allclose(areas[20:], torch.ones(60), atol=0.02)
    peaks = bank.argmax(dim=1)
    assert torch.all(peaks[1:] >= peaks[:-1])


def test_registered_metadata_drives_direction_and_rate():
    assert get_metric("mel_distance").higher_is_better is False
    assert get_metric("mel_distance").sample_rate == 24000
    assert get_metric("si_sdr").higher_is_better is True

"""The Slaney mel scale and filterbank against librosa, which defines them for the papers' code
(DAC's and audiotools' mel losses call ``librosa.filters.mel``), and the triangles' analytic
properties."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch
from bench.codecs.modules.spectral import hz_to_mel, mel_filterbank, mel_to_hz


def test_mel_scale_equals_librosa_slaney():
    frequencies = np.concatenate([np.linspace(0.0, 24_000.0, 4001), [999.999, 1000.0, 1000.001]])
    mels = hz_to_mel(torch.from_numpy(frequencies)).numpy()
    np.testing.assert_allclose(mels, librosa.hz_to_mel(frequencies, htk=False), rtol=1e-12)
    np.testing.assert_allclose(
        mel_to_hz(torch.from_numpy(mels)).numpy(), librosa.mel_to_hz(mels, htk=False), rtol=1e-12
    )


@pytest.mark.parametrize(
    ("sample_rate", "n_fft", "n_mels", "f_min", "f_max"),
    [
        (24_000, 2048, 64, 0.0, None),  # mel_distance's largest scale, and the training loss
        (24_000, 32, 64, 0.0, None),  # its smallest: most bands fall between bins and are empty
        (44_100, 2048, 150, 0.0, None),  # mel_distance_dac
        (44_100, 512, 80, 0.0, None),
        (16_000, 400, 40, 0.0, None),
        (22_050, 1024, 80, 125.0, 7600.0),  # a band-limited filterbank
    ],
)
@pytest.mark.filterwarnings("ignore:Empty filters detected")
def test_filterbank_equals_librosa(sample_rate, n_fft, n_mels, f_min, f_max):
    ours = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max).numpy()
    theirs = librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max, norm="slaney"
    )
    assert ours.shape == theirs.shape == (n_mels, n_fft // 2 + 1)
    assert ours.dtype == theirs.dtype == np.float32
    # Both compute in float64 and store float32; librosa scales in float32, hence the
    # last-bit differences (at most 8e-8 of the largest weight).
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6 * theirs.max())
    assert np.array_equal(ours > 0, theirs > 0)


def test_filterbank_triangles_have_unit_area_and_peak_in_order():
    rate, n_fft = 24000, 2048
    bank = mel_filterbank(rate, n_fft, 80)
    assert bank.shape == (80, n_fft // 2 + 1)
    bin_hz = rate / n_fft
    areas = bank.sum(dim=1) * bin_hz
    # Slaney normalisation: each triangle has unit area in Hz (up to sampling of narrow ones).
    assert torch.allclose(areas[20:], torch.ones(60), atol=0.02)
    peaks = bank.argmax(dim=1)
    assert torch.all(peaks[1:] >= peaks[:-1])


def test_filterbank_refuses_a_band_outside_nyquist():
    with pytest.raises(
        ValueError, match=r"expected 0 <= f_min < f_max <= 8000.0 Hz, got 0.0..9000"
    ):
        mel_filterbank(16_000, 512, 40, 0.0, 9000.0)

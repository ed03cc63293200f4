"""mel_distance and si_sdr against analytic cases; mel_distance_dac against DAC's published
definition, reimplemented here from its source."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch
from scipy import signal as scipy_signal

from bench.audio import load_audio, resample
from bench.data.embedded import EMBEDDED_DIR
from bench.metrics import CannotScore, get_metric
from bench.metrics import signal as signal_metrics
from bench.metrics.signal import mel_distance, mel_distance_dac, si_sdr


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


def test_registered_metadata_drives_direction_and_rate():
    assert get_metric("mel_distance").higher_is_better is False
    assert get_metric("mel_distance").sample_rate == 24000
    assert get_metric("si_sdr").higher_is_better is True


# DAC's evaluation (descript-audio-codec scripts/evaluate.py, at 44.1 kHz, "mel-44k") calls
# dac.nn.loss.MelSpectrogramLoss() with its defaults: n_mels [150, 80], window_lengths
# [2048, 512], hop window // 4, clamp_eps 1e-5, pow 2, log_weight 1, mag_weight 1, L1 (mean)
# loss, mel_fmin 0, mel_fmax None; the two scales are summed. Each mel spectrogram is
# audiotools' AudioSignal.mel_spectrogram: torch.stft magnitudes (center=True, reflect
# padding) with scipy's periodic Hann window, times librosa.filters.mel(sr, n_fft, n_mels).
# (conf/base.yml's seven scales, pow 1 and mag_weight 0 are the training loss, not this.)
DAC_SCALES = ((2048, 150), (512, 80))


def _dac_mel(audio: np.ndarray, n_fft: int, n_mels: int) -> np.ndarray:
    """``(channels, samples)`` -> ``(channels, n_mels, frames)``, written out frame by frame."""
    hop = n_fft // 4
    padded = np.pad(audio, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    starts = np.arange(1 + (padded.shape[-1] - n_fft) // hop) * hop
    frames = padded[:, starts[:, None] + np.arange(n_fft)]  # (channels, frames, n_fft)
    window = scipy_signal.get_window("hann", n_fft)
    magnitude = np.abs(np.fft.rfft(frames * window, axis=-1))
    filterbank = librosa.filters.mel(sr=44_100, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=None)
    return np.einsum("mb,cfb->cmf", filterbank.astype(np.float64), magnitude)


def _dac_mel_loss(reference: torch.Tensor, degraded: torch.Tensor) -> float:
    loss = 0.0
    for n_fft, n_mels in DAC_SCALES:
        x = _dac_mel(degraded.double().numpy(), n_fft, n_mels)
        y = _dac_mel(reference.double().numpy(), n_fft, n_mels)
        log_x, log_y = (np.log10(np.maximum(mel, 1e-5) ** 2) for mel in (x, y))
        loss += np.mean(np.abs(log_x - log_y)) + np.mean(np.abs(x - y))
    return float(loss)


def _dac_test_signals() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(4)
    music = load_audio(EMBEDDED_DIR / "music_chords.flac").audio[:, : 2 * 44_100]
    stereo = torch.cat([music, 0.5 * music.roll(441, dims=-1)])
    noisy = 0.8 * stereo + 0.003 * torch.randn(stereo.shape, generator=generator)
    speech = resample(load_audio(EMBEDDED_DIR / "librivox_0880.flac").audio, 16_000, 44_100)
    # A stretch of digital silence, where the clamp at 1e-5 decides the log term.
    speech[:, 10_000:30_000] = 0.0
    muffled = resample(resample(speech, 44_100, 8_000), 8_000, 44_100)
    return {
        "stereo music, gain and noise": (stereo, noisy),
        "speech, 4 kHz band": (speech, muffled),
    }


@pytest.mark.parametrize("name", ["stereo music, gain and noise", "speech, 4 kHz band"])
@pytest.mark.parametrize("block_samples", [signal_metrics.BLOCK_SAMPLES, 5_000])
def test_mel_distance_dac_equals_dacs_published_definition(name, block_samples, monkeypatch):
    # Small blocks put the blockwise STFT's seams (and both padded ends) inside the signal.
    monkeypatch.setattr(signal_metrics, "BLOCK_SAMPLES", block_samples)
    reference, degraded = _dac_test_signals()[name]
    expected = _dac_mel_loss(reference, degraded)
    assert expected > 0.1
    # float32 spectrograms against this float64 reference: 1e-8 to 1e-7 apart. Dropping the
    # linear term alone moves the value by 2e-3 (speech) to 1e-2 (music).
    assert mel_distance_dac(reference, degraded, 44_100) == pytest.approx(expected, rel=1e-6)
    assert mel_distance_dac(reference, reference, 44_100) == 0.0

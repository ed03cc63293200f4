"""Mel filterbanks and log-mel spectrograms on ``torch.stft``.

The filterbank follows Slaney's Auditory Toolbox (the default of librosa): the mel scale
is linear below 1 kHz and logarithmic above, and each triangle is area-normalised
(height ``2 / (right - left)`` in Hz). torchaudio cannot be loaded with the CPU torch
build this project targets, so the transform is written on ``torch.stft`` directly.
"""

from __future__ import annotations

import functools
import math

import torch

_LINEAR_HZ_PER_MEL = 200.0 / 3.0
_LOG_START_HZ = 1000.0
_LOG_START_MEL = _LOG_START_HZ / _LINEAR_HZ_PER_MEL
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(frequencies: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale: linear to 1 kHz, logarithmic above."""
    linear = frequencies / _LINEAR_HZ_PER_MEL
    logarithmic = (
        _LOG_START_MEL + torch.log(frequencies.clamp(min=1e-10) / _LOG_START_HZ) / _LOG_STEP
    )
    return torch.where(frequencies >= _LOG_START_HZ, logarithmic, linear)


def mel_to_hz(mels: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel`."""
    linear = mels * _LINEAR_HZ_PER_MEL
    logarithmic = _LOG_START_HZ * torch.exp(_LOG_STEP * (mels - _LOG_START_MEL))
    return torch.where(mels >= _LOG_START_MEL, logarithmic, linear)


@functools.lru_cache(maxsize=32)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Slaney-normalised triangular filters, shaped ``(n_mels, n_fft // 2 + 1)``.

    Cached, because every spectrogram at a given setting needs the same matrix; callers
    must not modify the returned tensor.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(
            f"expected 0 <= f_min < f_max <= {sample_rate / 2} Hz, got {f_min}..{f_max}"
        )
    fft_frequencies = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges_mel = torch.linspace(
        hz_to_mel(torch.tensor(f_min, dtype=torch.float64)).item(),
        hz_to_mel(torch.tensor(f_max, dtype=torch.float64)).item(),
        n_mels + 2,
        dtype=torch.float64,
    )
    edges_hz = mel_to_hz(edges_mel)
    left, centre, right = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (fft_frequencies - left) / (centre - left)
    falling = (right - fft_frequencies) / (right - centre)
    triangles = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return (triangles * (2.0 / (right - left))).to(torch.float32)


def mel_spectrogram(
    audio: torch.Tensor,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    power: float = 1.0,
    normalized: bool = False,
) -> torch.Tensor:
    """Mel spectrogram of ``(..., samples)`` audio, shaped ``(..., n_mels, frames)``.

    Hann window of ``n_fft`` samples, centred frames with reflect padding; ``power`` 1
    gives a magnitude spectrogram, 2 a power spectrogram. ``normalized`` scales the STFT
    by ``1 / sqrt(n_fft)`` (torch.stft's ``normalized=True``).
    """
    leading_shape = audio.shape[:-1]
    flat = audio.reshape(-1, audio.shape[-1])
    spectrum = torch.stft(
        flat,
        n_fft=n_fft,
        hop_length=hop_length,
        window=torch.hann_window(n_fft, device=audio.device, dtype=audio.dtype),
        center=True,
        pad_mode="reflect",
        normalized=normalized,
        return_complex=True,
    ).abs()
    if power != 1.0:
        spectrum = spectrum.pow(power)
    filterbank = mel_filterbank(sample_rate, n_fft, n_mels).to(audio.device, audio.dtype)
    mels = torch.matmul(filterbank, spectrum)
    return mels.reshape(*leading_shape, n_mels, mels.shape[-1])

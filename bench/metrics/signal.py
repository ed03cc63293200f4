"""Signal-level full-reference metrics: multi-scale mel distance and SI-SDR.

SI-SDR follows Le Roux et al., "SDR - half-baked or well done?" (ICASSP 2019). The mel
distance is modelled on the multi-scale mel loss of descript-audio-codec / audiotools,
with its exact definition stated in :func:`mel_distance`, computed at a fixed rate so
that codecs of different sample rates are compared on the same scale.
"""

from __future__ import annotations

import numpy as np
import torch

from bench import __version__ as bench_version
from bench.codecs.modules.spectral import mel_spectrogram
from bench.data.item import Item
from bench.metrics.base import CannotScore, MetricSpec, register_metric

MEL_DISTANCE_SAMPLE_RATE = 24_000
MEL_DISTANCE_SCALES = ((2048, 150), (512, 80))  # (window length = n_fft, number of mel bands)
MEL_DISTANCE_FLOOR = 1e-5


def mel_distance(
    reference: torch.Tensor, degraded: torch.Tensor, sample_rate: int, item: Item | None = None
) -> float:
    """Multi-scale log-mel plus linear-mel L1 distance; 0 for identical signals.

    Exact definition. Both signals ``(channels, samples)`` are at 24 kHz. For each
    scale ``(n_fft, n_mels)`` in ``((2048, 150), (512, 80))``: a magnitude STFT with a
    Hann window of ``n_fft`` samples, hop ``n_fft // 4``, centred with reflect padding;
    a Slaney-normalised mel filterbank from 0 Hz to 12 kHz gives magnitude mel
    spectrograms ``R`` and ``D``. The scale's distance is
    ``mean|log10(max(R, 1e-5)^2) - log10(max(D, 1e-5)^2)| + mean|R - D|``, the means
    running over channels, bands and frames. The metric is the sum over both scales.
    Lower is better.
    """
    distance = 0.0
    for n_fft, n_mels in MEL_DISTANCE_SCALES:
        mel_reference = mel_spectrogram(reference, sample_rate, n_fft, n_fft // 4, n_mels)
        mel_degraded = mel_spectrogram(degraded, sample_rate, n_fft, n_fft // 4, n_mels)
        log_reference = 2 * torch.log10(mel_reference.clamp(min=MEL_DISTANCE_FLOOR))
        log_degraded = 2 * torch.log10(mel_degraded.clamp(min=MEL_DISTANCE_FLOOR))
        distance += (log_reference - log_degraded).abs().mean().item()
        distance += (mel_reference - mel_degraded).abs().mean().item()
    return distance


def si_sdr(
    reference: torch.Tensor, degraded: torch.Tensor, sample_rate: int, item: Item | None = None
) -> float:
    """Scale-invariant signal-to-distortion ratio in dB, averaged over channels.

    Both signals are made zero-mean; the reference is scaled by the optimal
    ``alpha = <d, r> / <r, r>`` and ``10 log10((|alpha r|^2 + eps) / (|d - alpha r|^2 + eps))``
    is returned, with ``eps`` the float64 machine epsilon so that a perfect
    reconstruction scores a large finite value instead of infinity. A silent reference
    cannot be scored. Higher is better.
    """
    reference_array = reference.double().numpy()
    degraded_array = degraded.double().numpy()
    reference_array = reference_array - reference_array.mean(axis=-1, keepdims=True)
    degraded_array = degraded_array - degraded_array.mean(axis=-1, keepdims=True)
    reference_energy = np.sum(reference_array**2, axis=-1, keepdims=True)
    if np.any(reference_energy == 0):
        raise CannotScore("reference is silent (zero energy after removing the mean)")
    alpha = np.sum(degraded_array * reference_array, axis=-1, keepdims=True) / reference_energy
    target = alpha * reference_array
    noise = degraded_array - target
    eps = np.finfo(np.float64).eps
    ratios = (np.sum(target**2, axis=-1) + eps) / (np.sum(noise**2, axis=-1) + eps)
    return float(np.mean(10 * np.log10(ratios)))


register_metric(
    MetricSpec(
        name="mel_distance",
        function=mel_distance,
        higher_is_better=False,
        needs_reference=True,
        needs_transcript=False,
        sample_rate=MEL_DISTANCE_SAMPLE_RATE,
        backend="bench (torch.stft)",
        backend_version=f"{bench_version}/torch {torch.__version__}",
        description="multi-scale log+linear mel L1 at 24 kHz (see bench.metrics.signal)",
    )
)
register_metric(
    MetricSpec(
        name="si_sdr",
        function=si_sdr,
        higher_is_better=True,
        needs_reference=True,
        needs_transcript=False,
        sample_rate=None,
        backend="bench (numpy)",
        backend_version=f"{bench_version}/numpy {np.__version__}",
        unit="dB",
        description="scale-invariant SDR (Le Roux et al. 2019) at the codec's rate",
    )
)

"""Signal-level full-reference metrics: multi-scale mel distance and SI-SDR.

SI-SDR follows Le Roux et al., "SDR - half-baked or well done?" (ICASSP 2019). The mel
distance is pinned to the multi-scale mel loss EnCodec trains with (Defossez et al.,
2022); ``mel_distance_dac`` is the profile of DAC's evaluation script (Kumar et al.,
2023). Each is computed at a fixed rate, so codecs of different sample rates are compared
on the same scale, and each docstring states the exact definition.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from bench import __version__ as bench_version
from bench.codecs.modules.spectral import mel_filterbank
from bench.data.item import Item
from bench.metrics.base import CannotScore, Tolerance, metric

# Long signals are scored this many samples at a time (per channel), so that no whole-signal
# intermediate (a spectrogram, a float64 copy) is ever held.
BLOCK_SAMPLES = 1 << 18


@dataclass(frozen=True)
class MelDistanceProfile:
    """One published definition of a multi-scale mel distance."""

    sample_rate: int
    scales: tuple[tuple[int, int], ...]  # (window length = n_fft, number of mel bands)
    log_power: float  # the log is taken of mel**log_power
    linear_weight: float  # weight of the L1 on linear mel magnitudes
    normalized_stft: bool  # scale the STFT by 1/sqrt(n_fft)
    floor: float = 1e-5

    def distance(self, reference: torch.Tensor, degraded: torch.Tensor) -> float:
        """Mean over scales of the log-mel L1 (plus linear-mel L1 when weighted)."""
        total = 0.0
        for n_fft, n_mels in self.scales:
            log_sum = linear_sum = 0.0
            count = 0
            for mel_reference, mel_degraded in zip(
                self._mel_blocks(reference, n_fft, n_mels),
                self._mel_blocks(degraded, n_fft, n_mels),
                strict=True,
            ):
                log_reference = self.log_power * torch.log10(mel_reference.clamp(min=self.floor))
                log_degraded = self.log_power * torch.log10(mel_degraded.clamp(min=self.floor))
                log_sum += (log_reference - log_degraded).abs().sum(dtype=torch.float64).item()
                if self.linear_weight:
                    difference = (mel_reference - mel_degraded).abs()
                    linear_sum += difference.sum(dtype=torch.float64).item()
                count += mel_reference.numel()
            total += (log_sum + self.linear_weight * linear_sum) / count
        return total / len(self.scales)

    def _mel_blocks(self, signal: torch.Tensor, n_fft: int, n_mels: int) -> Iterator[torch.Tensor]:
        """The mel spectrogram of ``(channels, samples)``, ``(channels, n_mels, frames)``,
        in runs of frames: those of one centred STFT of the whole signal (reflect padding,
        hop ``n_fft // 4``), as ``mel_spectrogram`` computes them, without holding them all.

        At the smallest window the whole spectrogram holds 8 values per sample and band:
        7 GB for 10 minutes of 24 kHz audio.
        """
        hop, half = n_fft // 4, n_fft // 2
        samples = signal.shape[-1]
        frames = 1 + samples // hop
        window = torch.hann_window(n_fft, dtype=signal.dtype)
        filterbank = mel_filterbank(self.sample_rate, n_fft, n_mels).to(signal.dtype)
        step = max(1, BLOCK_SAMPLES // hop)
        for first in range(0, frames, step):
            last = min(first + step, frames)
            # The block's span of the padded signal, in the signal's own coordinates; only
            # the blocks at the ends are padded (a reflection of the signal's end samples,
            # which they hold), so the signal is never copied whole.
            start, stop = first * hop - half, (last - 1) * hop + n_fft - half
            block = signal[:, max(start, 0) : min(stop, samples)]
            if start < 0 or stop > samples:
                block = torch.nn.functional.pad(
                    block.unsqueeze(0), (max(-start, 0), max(stop - samples, 0)), mode="reflect"
                ).squeeze(0)
            spectrum = torch.stft(
                block,
                n_fft=n_fft,
                hop_length=hop,
                window=window,
                center=False,
                normalized=self.normalized_stft,
                return_complex=True,
            ).abs()
            yield torch.matmul(filterbank, spectrum)


# EnCodec (Defossez et al. 2022, section 3.4): the frequency-domain reconstruction loss
# over windows 2^5..2^11, 64 mel bands, hop = window / 4, on a normalised STFT; here the
# L1 on log10 mel magnitudes, at EnCodec's 24 kHz.
ENCODEC_PROFILE = MelDistanceProfile(
    sample_rate=24_000,
    scales=tuple((2**exponent, 64) for exponent in range(5, 12)),
    log_power=1.0,
    linear_weight=0.0,
    normalized_stft=True,
)
# DAC (Kumar et al. 2023) scripts/evaluate.py: MelSpectrogramLoss defaults, windows 2048
# and 512 with 150 and 80 mel bands, L1 of log10(mel^2) plus L1 of the linear mel, summed
# over the two scales, reported at 44.1 kHz ("mel-44k").
DAC_PROFILE = MelDistanceProfile(
    sample_rate=44_100,
    scales=((2048, 150), (512, 80)),
    log_power=2.0,
    linear_weight=1.0,
    normalized_stft=False,
)


MEL_DISTANCE = {
    "higher_is_better": False,
    "needs_reference": True,
    "needs_transcript": False,
    "backend": "bench (torch.stft)",
    "backend_version": f"{bench_version}/torch {torch.__version__}",
    "version": 2,
    "tolerance": Tolerance(relative=0.02),
}


@metric(
    **MEL_DISTANCE,
    sample_rate=ENCODEC_PROFILE.sample_rate,
    description="EnCodec's multi-scale log-mel L1 (64 mels, 2^5..2^11)",
)
def mel_distance(
    reference: torch.Tensor, degraded: torch.Tensor, sample_rate: int, item: Item | None = None
) -> float:
    """Multi-scale log-mel L1 distance of EnCodec's training loss; 0 for identical signals.

    Exact definition. Both signals ``(channels, samples)`` are at 24 kHz. For each window
    length ``w = 2^i``, ``i = 5..11``: a Hann-windowed STFT with ``n_fft = w``, hop
    ``w // 4``, centred with reflect padding, scaled by ``1 / sqrt(w)`` (a normalised
    STFT); magnitudes through a 64-band Slaney mel filterbank from 0 Hz to 12 kHz give
    ``R`` and ``D``; the scale's distance is ``mean|log10(max(R, 1e-5)) - log10(max(D, 1e-5))|``
    over channels, bands and frames. The metric is the mean over the seven scales. At
    the smallest windows some of the 64 bands fall between FFT bins and stay empty; they
    add nothing. Lower is better.
    """
    return ENCODEC_PROFILE.distance(reference, degraded)


@metric(
    **MEL_DISTANCE,
    sample_rate=DAC_PROFILE.sample_rate,
    description="DAC evaluate.py mel distance (150/80 mels, log+linear)",
)
def mel_distance_dac(
    reference: torch.Tensor, degraded: torch.Tensor, sample_rate: int, item: Item | None = None
) -> float:
    """The mel distance of DAC's evaluation script, for comparison with papers that use it.

    Exact definition. Both signals at 44.1 kHz. For ``(n_fft, n_mels)`` in
    ``((2048, 150), (512, 80))``: a Hann-windowed magnitude STFT, hop ``n_fft // 4``,
    centred with reflect padding, through a Slaney mel filterbank from 0 Hz to Nyquist,
    gives ``R`` and ``D``; the scale's distance is
    ``mean|log10(max(R, 1e-5)^2) - log10(max(D, 1e-5)^2)| + mean|R - D|``. DAC sums the
    two scales; this returns that sum (twice the profile's per-scale mean). Lower is better.
    """
    return DAC_PROFILE.distance(reference, degraded) * len(DAC_PROFILE.scales)


@metric(
    higher_is_better=True,
    needs_reference=True,
    needs_transcript=False,
    sample_rate=None,
    backend="bench (numpy)",
    backend_version=f"{bench_version}/numpy {np.__version__}",
    unit="dB",
    version=2,
    description="scale-invariant SDR (Le Roux et al. 2019) at the codec's rate",
    tolerance=Tolerance(absolute=0.2),
)
def si_sdr(
    reference: torch.Tensor, degraded: torch.Tensor, sample_rate: int, item: Item | None = None
) -> float:
    """Scale-invariant signal-to-distortion ratio in dB, averaged over channels.

    Both signals are made zero-mean; the reference is scaled by the optimal
    ``alpha = <d, r> / <r, r>`` and ``10 log10((|alpha r|^2 + eps) / (|d - alpha r|^2 + eps))``
    is returned, with ``eps`` the float64 machine epsilon so that a perfect
    reconstruction scores a large finite value instead of infinity. A silent reference
    cannot be scored, nor a degraded signal with no energy after removing its mean (a
    constant): there ``eps / eps`` would score 0 dB, better than a working low-rate codec.
    Higher is better.
    """
    reference_array, degraded_array = reference.numpy(), degraded.numpy()
    reference_mean = reference_array.mean(axis=-1, dtype=np.float64, keepdims=True)
    degraded_mean = degraded_array.mean(axis=-1, dtype=np.float64, keepdims=True)

    def zero_mean_blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # float64 copies of one block at a time, not of the whole signals.
        for start in range(0, reference_array.shape[-1], BLOCK_SAMPLES):
            stop = start + BLOCK_SAMPLES
            yield (
                reference_array[:, start:stop] - reference_mean,
                degraded_array[:, start:stop] - degraded_mean,
            )

    reference_energy = sum(np.sum(ref**2, axis=-1, keepdims=True) for ref, _ in zero_mean_blocks())
    if np.any(reference_energy == 0):
        raise CannotScore("reference is silent (zero energy after removing the mean)")
    degraded_energy = sum(np.sum(deg**2, axis=-1) for _, deg in zero_mean_blocks())
    if np.any(degraded_energy == 0):
        raise CannotScore("degraded is silent (zero energy after removing the mean)")
    alpha = sum(np.sum(deg * ref, axis=-1, keepdims=True) for ref, deg in zero_mean_blocks())
    alpha = alpha / reference_energy
    target_energy = noise_energy = 0.0
    for ref, deg in zero_mean_blocks():
        target = alpha * ref
        target_energy = target_energy + np.sum(target**2, axis=-1)
        noise_energy = noise_energy + np.sum((deg - target) ** 2, axis=-1)
    eps = np.finfo(np.float64).eps
    ratios = (target_energy + eps) / (noise_energy + eps)
    return float(np.mean(10 * np.log10(ratios)))

"""Residual delay of a decoded signal against its reference, and SI-SDR once it is removed.

The harness aligns each codec's output by the delay the codec declares; what remains is
the residual delay. A few samples of it cannot be heard but cost a waveform metric
decibels (libopus's 2-sample shift in its SILK and hybrid modes costs about 4 dB of
SI-SDR at 24 kbps on LibriVox speech), so ``residual_delay`` shows it per item and
``si_sdr_aligned`` scores SI-SDR (Le Roux et al., ICASSP 2019) with it removed. The
delay is the lag of the peak of the normalised cross-correlation over the reference's
loudest two seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy
import torch
from scipy import signal as scipy_signal

from bench import __version__ as bench_version
from bench.data.item import Item
from bench.metrics.base import CannotScore, Score, Tolerance, metric
from bench.metrics.signal import BLOCK_SAMPLES, si_sdr

# The reference block correlated: its loudest two seconds. Loudest, because there the
# codec's noise matters least against the signal. Two seconds, because over one a
# monotonous voice matches itself one pitch period away almost as well as at the true
# lag: for flite's slt voice (embedded flite_slt_2) the identity's runner-up is 0.97 of
# its peak over one second and 0.87 over two. A long item costs no more than a short one.
BLOCK_SECONDS = 2.0
# The block's start is searched on a grid of this step.
HOP_SECONDS = 0.010
# Lags searched either way. A residual delay is what a codec's declared delay gets wrong,
# a decoder's resampler or a miscounted look-ahead: a few samples (libopus's is 2 at 48
# kHz). Ten milliseconds cover those with room and stay short against the block, so the
# block overlaps the degraded signal by 99.5 % at the bound. A peak at the bound may
# stand for a delay beyond it, so it is refused rather than reported as the bound.
MAX_LAG_SECONDS = 0.010
# A reference block with an RMS below half a 16-bit step holds nothing to align
# (bench.scoring refuses a degraded signal under the same peak level).
SILENCE_RMS = 2.0**-16
# A match has a normalised correlation of at least this magnitude at its peak: twice
# the highest of two unrelated items of the embedded corpus (0.11, over 42 ordered pairs
# of speech and music). Through Opus its items peak at 0.25 and above (SILK narrowband
# at 6 kbps against a fullband reference), but for the drums at 6 kbps (0.16).
MIN_PEAK_CORRELATION = 0.2
# And it is the one match: away from the peak's lobe, the correlation's magnitude stays
# below this fraction of the peak. A steady tone repeats at every period within the lags
# searched, as high as at the true lag, and which one is the delay cannot be told. On the
# embedded corpus through the identity and MP3 the runner-up reaches at most 0.87 of the
# peak (flite's slt voice, a pitch period away); through Opus, four items of SILK at 6
# and 8 kbps (that voice, the rain) reach 0.9 and are refused.
MAX_SECOND_PEAK_RATIO = 0.9


@dataclass(frozen=True)
class DelayEstimate:
    """The delay of a degraded signal against its reference.

    ``lag`` is in samples at the signals' rate, positive when the degraded signal is late:
    ``degraded[n + lag]`` lines up with ``reference[n]``. ``correlation`` is the
    normalised cross-correlation at that lag (negative for an inverted polarity), and
    ``second_peak`` the highest local maximum of its magnitude outside the peak's lobe.
    The reference block correlated spans ``block_start`` to ``block_start +
    block_samples``.
    """

    lag: int
    correlation: float
    second_peak: float
    block_start: int
    block_samples: int


def mono_mix(audio: torch.Tensor, start: int, stop: int) -> np.ndarray:
    """The mean of the channels of ``audio[:, start:stop]`` as float64, zero outside the
    signal (``start`` may be negative and ``stop`` past the end)."""
    samples = audio.detach().numpy()
    mix = np.zeros(stop - start, dtype=np.float64)
    first, last = max(start, 0), min(stop, samples.shape[-1])
    if first < last:
        mix[first - start : last - start] = samples[:, first:last].mean(axis=0, dtype=np.float64)
    return mix


def loudest_block(audio: torch.Tensor, block_samples: int, hop_samples: int) -> int:
    """The start of the ``block_samples`` span of ``audio`` ``(channels, samples)`` whose
    mono mix has the most energy, among the starts on a grid of ``hop_samples`` (the
    earliest on a tie; 0 when the signal is no longer than a block)."""
    num_samples = audio.shape[-1]
    if num_samples <= block_samples:
        return 0
    # The energy of each hop, a bounded span at a time: no whole-signal float64 copy of a
    # long item.
    chunk = max(1, BLOCK_SAMPLES // hop_samples) * hop_samples
    hop_energy = np.zeros(-(-num_samples // hop_samples))
    for start in range(0, num_samples, chunk):
        mix = mono_mix(audio, start, min(start + chunk, num_samples))
        mix = np.pad(mix, (0, -mix.size % hop_samples))
        first = start // hop_samples
        hop_energy[first : first + mix.size // hop_samples] = np.sum(
            mix.reshape(-1, hop_samples) ** 2, axis=1
        )
    # Blocks start on the grid and end inside the signal; a block that is not a whole
    # number of hops is ranked by the hops it starts (the remainder is under one hop).
    hops_per_block = block_samples // hop_samples
    last_start = (num_samples - block_samples) // hop_samples
    cumulative = np.concatenate([[0.0], np.cumsum(hop_energy)])
    starts = np.arange(last_start + 1)
    block_energy = cumulative[starts + hops_per_block] - cumulative[starts]
    return int(np.argmax(block_energy)) * hop_samples


def estimate_delay(
    reference: torch.Tensor,
    degraded: torch.Tensor,
    sample_rate: int,
    max_lag_seconds: float = MAX_LAG_SECONDS,
) -> DelayEstimate:
    """The delay of ``degraded`` against ``reference``, both ``(channels, samples)`` at
    ``sample_rate`` Hz, in whole samples, from their mono mixes.

    The reference's loudest :data:`BLOCK_SECONDS` (all of it if shorter), made zero-mean,
    is cross-correlated with the degraded signal (zero outside its samples, the span met
    made zero-mean) at every lag up to ``max_lag_seconds`` either way, and each value is
    divided by the norms of the block and of the degraded samples it meets there. The
    lag of the largest magnitude is the delay; a polarity inversion does not hide it, as
    SI-SDR does not see one either.

    Raises :class:`CannotScore` when the reference is empty or its block is silent, when
    the degraded signal is silent wherever the block meets it, when the peak's magnitude is
    below :data:`MIN_PEAK_CORRELATION` (unrelated signals, or a delay far beyond the
    bound), when the peak is at the lag bound (the delay may lie beyond), and when it is not
    distinct: another local maximum reaches :data:`MAX_SECOND_PEAK_RATIO` of it, or the
    magnitude stays that high at every lag.
    """
    if sample_rate <= 0:
        raise ValueError(f"expected a positive sample rate in Hz, got {sample_rate}")
    max_lag = round(max_lag_seconds * sample_rate)
    if max_lag < 1:
        raise ValueError(
            f"expected a lag bound of at least one sample, got {max_lag_seconds} s at "
            f"{sample_rate} Hz"
        )
    if reference.shape[-1] == 0:
        raise CannotScore("reference is empty: no delay to estimate")
    bound_ms = f"±{max_lag_seconds * 1000:g} ms"
    block_samples = min(round(BLOCK_SECONDS * sample_rate), reference.shape[-1])
    block_start = loudest_block(reference, block_samples, max(1, round(HOP_SECONDS * sample_rate)))
    block = mono_mix(reference, block_start, block_start + block_samples)
    block -= block.mean()
    block_norm = np.sqrt(np.sum(block**2))
    silence_norm = SILENCE_RMS * np.sqrt(block_samples)
    if block_norm <= silence_norm:
        raise CannotScore(
            f"reference is silent over its loudest {block_samples / sample_rate:g} s "
            "(RMS below 2^-16): no delay to estimate"
        )
    span = mono_mix(degraded, block_start - max_lag, block_start + block_samples + max_lag)
    span -= span.mean()
    # correlation[k] = sum_n block[n] * span[n + k]: the degraded signal at lag k - max_lag.
    correlation = scipy_signal.correlate(span, block, mode="valid", method="fft")
    lags = scipy_signal.correlation_lags(span.size, block.size, mode="valid") - max_lag
    cumulative = np.concatenate([[0.0], np.cumsum(span**2)])
    met_norm = np.sqrt(np.maximum(cumulative[block_samples:] - cumulative[:-block_samples], 0))
    # Silent degraded samples match nothing: 0 there, not a division by zero.
    normalised = np.divide(
        correlation,
        block_norm * met_norm,
        out=np.zeros_like(correlation),
        where=met_norm > silence_norm,
    )
    if not np.any(met_norm > silence_norm):
        raise CannotScore(
            f"degraded is silent (RMS below 2^-16) wherever it meets the reference's "
            f"loudest {block_samples / sample_rate:g} s within {bound_ms}: no delay to estimate"
        )
    magnitude = np.abs(normalised)
    peak = int(np.argmax(magnitude))
    lag, peak_value = int(lags[peak]), float(magnitude[peak])
    if peak_value < MIN_PEAK_CORRELATION:
        raise CannotScore(
            f"no match: the normalised correlation peaks at {peak_value:.3f} within "
            f"{bound_ms}, below {MIN_PEAK_CORRELATION} (unrelated signals, or a delay "
            "beyond the bound)"
        )
    if abs(lag) == max_lag:
        raise CannotScore(
            f"the correlation peaks at the lag bound ({lag:+d} samples, "
            f"{lag / sample_rate * 1000:+g} ms): the delay may lie beyond {bound_ms}"
        )
    # The peak's lobe: the lags around it where the magnitude stays above the level. The
    # runner-up is the highest local maximum outside it (a shoulder on the lobe's flank is
    # not a second peak); a bound counts as a maximum where it tops its one neighbour.
    level = MAX_SECOND_PEAK_RATIO * peak_value
    below = np.flatnonzero(magnitude < level)
    lobe_start = int(below[below < peak].max(initial=-1)) + 1
    lobe_stop = int(below[below > peak].min(initial=magnitude.size))
    padded = np.concatenate([[-np.inf], magnitude, [-np.inf]])
    local_maximum = (padded[1:-1] >= padded[:-2]) & (padded[1:-1] >= padded[2:])
    local_maximum[lobe_start:lobe_stop] = False
    second_peak = float(magnitude[local_maximum].max(initial=0.0))
    if second_peak >= level or (lobe_start == 0 and lobe_stop == magnitude.size):
        where = "at another lag" if second_peak >= level else "at every lag"
        raise CannotScore(
            f"no distinct peak: the normalised correlation reaches {peak_value:.3f} at "
            f"{lag:+d} samples and comes within {1 - MAX_SECOND_PEAK_RATIO:.0%} of it "
            f"{where} (a signal that repeats, or changes too slowly, within {bound_ms})"
        )
    return DelayEstimate(
        lag=lag,
        correlation=float(normalised[peak]),
        second_peak=second_peak,
        block_start=block_start,
        block_samples=block_samples,
    )


def overlap(
    reference: torch.Tensor, degraded: torch.Tensor, lag: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The parts of ``reference`` and ``degraded`` ``(channels, samples)`` that meet once
    ``degraded`` is moved ``lag`` samples earlier (``lag`` as in :class:`DelayEstimate`),
    as views of equal length."""
    reference_start, degraded_start = max(-lag, 0), max(lag, 0)
    length = max(
        0,
        min(reference.shape[-1] - reference_start, degraded.shape[-1] - degraded_start),
    )
    return (
        reference[:, reference_start : reference_start + length],
        degraded[:, degraded_start : degraded_start + length],
    )


def _describe(estimate: DelayEstimate, sample_rate: int) -> str:
    return (
        f"{estimate.lag:+d} samples at {sample_rate} Hz (normalised correlation "
        f"{estimate.correlation:.3f}, runner-up {estimate.second_peak:.3f}, over "
        f"{estimate.block_start / sample_rate:.2f} s to "
        f"{(estimate.block_start + estimate.block_samples) / sample_rate:.2f} s)"
    )


ALIGNMENT = {
    "needs_reference": True,
    "needs_transcript": False,
    "sample_rate": None,
    "backend": "bench (numpy, scipy.signal)",
    "backend_version": f"{bench_version}/numpy {np.__version__}/scipy {scipy.__version__}",
    "version": 1,
}


@metric(
    **ALIGNMENT,
    higher_is_better=False,
    unit="ms",
    mono_mix="float64",
    description="delay of the decoded signal left after the codec's own alignment "
    "(cross-correlation peak, + = late)",
    # About one sample at 48 kHz (0.0208 ms): a codec whose every item moves by a sample
    # has changed its alignment.
    tolerance=Tolerance(absolute=0.02),
)
def residual_delay(
    reference: torch.Tensor, degraded: torch.Tensor, sample_rate: int, item: Item | None = None
) -> Score:
    """The delay of the degraded signal against the reference in milliseconds, positive
    when it is late, at the codec's rate in whole samples (a step of ``1000 /
    sample_rate`` ms): :func:`estimate_delay` on the mono mixes. 0 for a well aligned
    codec.

    The ideal is 0 and a delay either way is as wrong, but a metric has one direction:
    ``higher_is_better=False``, so `bench compare` flags a mean that moves later, and an
    earlier one only through the value. The row's note gives the lag in samples and the
    correlation it was found with. NaN with the reason where :func:`estimate_delay`
    cannot tell.
    """
    estimate = estimate_delay(reference, degraded, sample_rate)
    return Score(estimate.lag / sample_rate * 1000, _describe(estimate, sample_rate))


@metric(
    **ALIGNMENT,
    higher_is_better=True,
    unit="dB",
    description="SI-SDR at the codec's rate after removing the residual delay",
    tolerance=Tolerance(absolute=0.2),
)
def si_sdr_aligned(
    reference: torch.Tensor, degraded: torch.Tensor, sample_rate: int, item: Item | None = None
) -> Score:
    """SI-SDR in dB, as :func:`~bench.metrics.signal.si_sdr` defines it, once the
    residual delay is removed: the degraded signal is moved by the lag
    :func:`estimate_delay` finds (the one ``residual_delay`` reports) and the two are
    compared where they overlap, ``|lag|`` samples fewer than the pair. Equal to
    ``si_sdr`` where the lag is 0; NaN with the reason where the lag cannot be found.
    Higher is better.
    """
    estimate = estimate_delay(reference, degraded, sample_rate)
    value = si_sdr(*overlap(reference, degraded, estimate.lag), sample_rate)
    return Score(value, f"aligned by {_describe(estimate, sample_rate)}")

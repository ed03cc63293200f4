"""residual_delay and si_sdr_aligned: known shifts recovered exactly, SI-SDR after removing
them, and NaN with the reason where no delay can be told (silence, a delay beyond the lag
bound, a signal that repeats within it, unrelated signals)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from bench.audio import load_audio, resample
from bench.data.embedded import EMBEDDED_DIR
from bench.data.item import Item
from bench.metrics import CannotScore, Score, alignment, get_metric
from bench.metrics.alignment import estimate_delay, residual_delay, si_sdr_aligned
from bench.metrics.signal import si_sdr
from bench.scoring import ItemSignals, bind_metrics, score_metric

RATE = 48_000
MAX_LAG = round(alignment.MAX_LAG_SECONDS * RATE)


def delayed(signal: torch.Tensor, lag: int) -> torch.Tensor:
    """``signal`` ``lag`` samples late (early where negative), zero-filled, same length."""
    shifted = torch.zeros_like(signal)
    if lag >= 0:
        shifted[:, lag:] = signal[:, : signal.shape[-1] - lag]
    else:
        shifted[:, :lag] = signal[:, -lag:]
    return shifted


def noise(seconds: float = 3.0, seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(1, int(seconds * RATE), generator=torch.Generator().manual_seed(seed))


def speech(name: str = "librivox_0880", rate: int = RATE) -> torch.Tensor:
    """An embedded LibriVox utterance (3 s of read speech) at ``rate``."""
    loaded = load_audio(EMBEDDED_DIR / f"{name}.flac")
    return resample(loaded.audio, loaded.sample_rate, rate)


@pytest.mark.parametrize("source", ["noise", "speech"])
@pytest.mark.parametrize("lag", [3, -5, 0, MAX_LAG - 1])
def test_a_known_integer_shift_is_recovered_exactly(source, lag):
    reference = noise() if source == "noise" else speech()
    degraded = delayed(reference, lag)
    assert estimate_delay(reference, degraded, RATE).lag == lag
    score = residual_delay(reference, degraded, RATE)
    # Positive: the degraded signal is late; in milliseconds at the signals' rate.
    assert score.value == pytest.approx(lag / RATE * 1000, abs=1e-12)
    assert f"{lag:+d} samples at {RATE} Hz" in score.note


def test_the_delay_is_found_at_any_rate_and_in_the_mono_mix():
    reference = speech(rate=16_000)
    stereo = torch.cat([reference, 0.5 * reference])
    assert estimate_delay(stereo, delayed(stereo, -4), 16_000).lag == -4
    # 4 samples at 16 kHz.
    assert residual_delay(stereo, delayed(stereo, 4), 16_000).value == pytest.approx(0.25)


def test_an_inverted_polarity_does_not_hide_the_delay():
    reference = speech()
    estimate = estimate_delay(reference, -0.5 * delayed(reference, 7), RATE)
    assert estimate.lag == 7 and estimate.correlation < -0.99


def test_si_sdr_aligned_of_a_shifted_copy_is_far_above_si_sdr():
    reference = speech()
    for lag in (3, -5):
        degraded = delayed(reference, lag)
        aligned = si_sdr_aligned(reference, degraded, RATE)
        # Off by a few samples the waveforms hardly match; aligned they are the same
        # samples, bar the zeros shifted in at one end, which fall outside the overlap.
        assert si_sdr(reference, degraded, RATE) < 15
        assert aligned.value > 100
        assert f"aligned by {lag:+d} samples" in aligned.note


def test_si_sdr_aligned_is_si_sdr_over_the_overlap_of_a_noisy_shifted_copy():
    reference = speech()
    noisy = reference + 0.01 * torch.randn(
        reference.shape, generator=torch.Generator().manual_seed(1)
    )
    degraded = delayed(noisy, -2)
    expected = si_sdr(reference[:, 2:], noisy[:, 2:], RATE)
    assert si_sdr_aligned(reference, degraded, RATE).value == pytest.approx(expected, abs=1e-12)
    # With no delay it is si_sdr itself.
    assert si_sdr_aligned(reference, noisy, RATE).value == pytest.approx(
        si_sdr(reference, noisy, RATE), abs=1e-12
    )


def test_the_block_is_the_loudest_of_a_long_item(monkeypatch):
    # 10 s of quiet noise, loud noise from 6 s to 8 s: the block is that span. Small
    # chunks, so the energies are summed in several runs.
    monkeypatch.setattr(alignment, "BLOCK_SAMPLES", 30_001)
    reference = 0.001 * noise(10.0, seed=2)
    reference[:, 6 * RATE : 8 * RATE] *= 100
    estimate = estimate_delay(reference, delayed(reference, 2), RATE)
    assert (estimate.block_start, estimate.block_samples) == (6 * RATE, 2 * RATE)
    assert estimate.lag == 2


def test_a_reference_shorter_than_the_block_is_used_whole():
    reference = speech()[:, : RATE // 2]
    estimate = estimate_delay(reference, delayed(reference, -3), RATE)
    assert (estimate.lag, estimate.block_start, estimate.block_samples) == (-3, 0, RATE // 2)


@pytest.mark.parametrize("metric", [residual_delay, si_sdr_aligned])
def test_silence_cannot_be_aligned(metric):
    with pytest.raises(CannotScore, match="reference is silent"):
        metric(torch.zeros(1, RATE), speech(), RATE)
    with pytest.raises(CannotScore, match="degraded is silent"):
        metric(speech(), torch.zeros(1, speech().shape[-1]), RATE)
    with pytest.raises(CannotScore, match="reference is empty"):
        metric(torch.zeros(1, 0), speech(), RATE)


def test_a_peak_at_the_lag_bound_is_refused_not_reported_as_the_bound():
    reference = speech()
    with pytest.raises(CannotScore, match="lag bound .*may lie beyond ±10 ms"):
        estimate_delay(reference, delayed(reference, MAX_LAG), RATE)


@pytest.mark.parametrize("metric", [residual_delay, si_sdr_aligned])
@pytest.mark.parametrize("lag", [3 * MAX_LAG, -10 * MAX_LAG])
def test_a_delay_beyond_the_lag_bound_cannot_be_scored(metric, lag):
    with pytest.raises(CannotScore):
        metric(noise(), delayed(noise(), lag), RATE)
    with pytest.raises(CannotScore):
        metric(speech(), delayed(speech(), lag), RATE)


def test_a_steady_tone_repeats_within_the_bound_and_has_no_distinct_peak():
    time = torch.arange(3 * RATE) / RATE
    tone = 0.3 * torch.sin(2 * torch.pi * 440 * time)[None]
    with pytest.raises(CannotScore, match="no distinct peak.*at another lag"):
        estimate_delay(tone, delayed(tone, 3), RATE)
    # A 5 Hz swell is within 10 % of its peak correlation 10 ms away: no lag stands out.
    hum = 0.3 * torch.sin(2 * torch.pi * 5 * time)[None]
    with pytest.raises(CannotScore, match="no distinct peak.*at every lag"):
        estimate_delay(hum, hum, RATE)


def test_unrelated_signals_do_not_match():
    with pytest.raises(CannotScore, match="no match"):
        estimate_delay(noise(seed=3), noise(seed=4), RATE)


def test_metadata_follows_si_sdr():
    delay, aligned, plain = (get_metric(n) for n in ("residual_delay", "si_sdr_aligned", "si_sdr"))
    assert delay.unit == "ms" and delay.higher_is_better is False
    assert delay.sample_rate is None and delay.mono_mix == "float64"
    for field in ("sample_rate", "higher_is_better", "unit", "needs_equal_lengths", "mono_mix"):
        assert getattr(aligned, field) == getattr(plain, field), field
    assert aligned.tolerance == plain.tolerance


def test_through_the_harness_each_row_records_the_delay_and_its_note():
    reference = torch.cat([speech(), speech()])
    generator = torch.Generator().manual_seed(5)
    degraded = delayed(reference, -2) + 0.001 * torch.randn(reference.shape, generator=generator)
    item = Item(id="shifted", path=Path("shifted.wav"))
    signals = ItemSignals(reference, degraded, RATE)
    outcomes = {
        bound.name: score_metric(bound, item, signals)
        for bound in bind_metrics(("residual_delay", "si_sdr_aligned", "si_sdr"))
    }
    assert outcomes["residual_delay"].values == {"residual_delay": pytest.approx(-2 / 48)}
    assert "-2 samples at 48000 Hz" in outcomes["residual_delay"].note
    # The harness hands residual_delay the mono mix it declares: the same value.
    direct = residual_delay(reference, degraded, RATE)
    assert isinstance(direct, Score) and direct.value == pytest.approx(-2 / 48)
    gain = outcomes["si_sdr_aligned"].values["si_sdr_aligned"] - outcomes["si_sdr"].values["si_sdr"]
    assert gain > 20 and not math.isnan(gain)

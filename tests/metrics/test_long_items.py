"""Long items: metrics whose backends hold the whole signal refuse beyond a stated length,
and the metrics computed block by block give the whole-signal values."""

from __future__ import annotations

import dataclasses
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from bench.codecs.modules.spectral import mel_spectrogram
from threadpoolctl import threadpool_limits

from bench.data.item import Item
from bench.metrics import asr, get_metric, signal
from bench.scoring import BoundMetric, ItemSignals, score_metric

ITEM = Item(id="long", path=Path("long.wav"))


@pytest.mark.parametrize(
    "name", ["visqol_audio", "visqol_speech", "stoi", "estoi", "pesq_wb", "pesq_nb"]
)
def test_a_metric_refuses_an_item_over_its_limit_before_any_work(name, monkeypatch):
    spec = get_metric(name)

    def no_work(*args, **kwargs):
        raise AssertionError("the metric ran")

    # Neither set-up (models, kernels) nor scoring may run for an item it refuses.
    spec = dataclasses.replace(spec, function=no_work, setup=no_work)
    silence = torch.zeros(1, int(spec.max_seconds * 1000) + 1000)
    outcome = score_metric(BoundMetric(spec), ITEM, ItemSignals(silence, silence, 1000))
    assert outcome.values == {name: pytest.approx(float("nan"), nan_ok=True)}
    assert f"too long for {name}: {spec.max_seconds + 1:.1f} s" in outcome.failure
    assert f"at most {spec.max_seconds:g} s ({spec.max_seconds_reason})" in outcome.failure
    assert "--max-seconds" in outcome.failure
    assert not outcome.cacheable


def _noisy_pair(seconds: float, rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    time = torch.arange(int(seconds * rate)) / rate
    reference = torch.stack(
        [torch.sin(2 * torch.pi * 330 * time), torch.cos(2 * torch.pi * 90 * time)]
    )
    reference = 0.3 * reference * (1 + torch.sin(2 * torch.pi * 0.7 * time))
    degraded = reference + 0.02 * torch.randn(reference.shape, generator=generator)
    return reference.float(), degraded.float()


def _whole_signal_distance(profile: signal.MelDistanceProfile, reference, degraded) -> float:
    """The distance from whole-signal mel spectrograms, as it was computed at first."""
    total = 0.0
    for n_fft, n_mels in profile.scales:
        mels = [
            mel_spectrogram(
                x,
                profile.sample_rate,
                n_fft,
                n_fft // 4,
                n_mels,
                normalized=profile.normalized_stft,
            )
            for x in (reference, degraded)
        ]
        logs = [profile.log_power * torch.log10(mel.clamp(min=profile.floor)) for mel in mels]
        total += (logs[0] - logs[1]).abs().double().mean().item()
        if profile.linear_weight:
            total += profile.linear_weight * (mels[0] - mels[1]).abs().double().mean().item()
    return total / len(profile.scales)


@pytest.mark.parametrize("profile", [signal.ENCODEC_PROFILE, signal.DAC_PROFILE])
def test_the_mel_distance_in_blocks_equals_the_whole_signal_one(profile, monkeypatch):
    # Small blocks, so that every scale is computed in many runs of frames.
    monkeypatch.setattr(signal, "BLOCK_SAMPLES", 3001)
    reference, degraded = _noisy_pair(1.3, profile.sample_rate)
    expected = _whole_signal_distance(profile, reference, degraded)
    assert profile.distance(reference, degraded) == pytest.approx(expected, rel=1e-6)


def test_si_sdr_in_blocks_equals_the_whole_signal_value(monkeypatch):
    reference, degraded = _noisy_pair(1.0, 16000)
    whole = signal.si_sdr(reference, degraded, 16000)
    monkeypatch.setattr(signal, "BLOCK_SAMPLES", 1000)
    assert signal.si_sdr(reference, degraded, 16000) == pytest.approx(whole, rel=1e-12)


def test_the_speaker_mel_frames_in_blocks_equal_librosa_on_the_whole_signal(monkeypatch):
    import librosa
    import numpy as np

    from bench.metrics import speaker

    monkeypatch.setattr(speaker, "MEL_BLOCK_FRAMES", 77)
    wav = (0.1 * np.random.default_rng(0).standard_normal(50_001)).astype(np.float32)
    whole = librosa.feature.melspectrogram(
        y=wav,
        sr=speaker.SAMPLE_RATE,
        n_fft=speaker.MEL_WINDOW,
        hop_length=speaker.MEL_HOP,
        n_mels=speaker.MEL_BANDS,
    ).T
    blocks = speaker.mel_frames(wav)
    assert blocks.shape == whole.shape
    np.testing.assert_allclose(blocks, whole, rtol=1e-5, atol=1e-7 * whole.max())


def _whisper_features():
    return asr._whisper(asr.resolve_model(asr.DEFAULT_MODEL).folder).feature_extractor


def _noise(seconds: float) -> np.ndarray:
    return 0.1 * np.random.default_rng(7).standard_normal(int(seconds * 16_000), dtype=np.float32)


@pytest.mark.parametrize("seconds", [29.99, 30.0, 30.01, 65.3, 90.0])
def test_whisper_features_of_a_long_signal_equal_the_library_s(seconds):
    from faster_whisper.feature_extractor import FeatureExtractor

    features = _whisper_features()
    library = FeatureExtractor(feature_size=features.mel_filters.shape[0])
    waveform = _noise(seconds)
    # Exactly equal, not close: WER of items up to 30 s must not move, and long ones neither.
    # The library's on one BLAS thread, as ours always are (see the next test).
    with threadpool_limits(limits=1, user_api="blas"):
        expected = library(waveform)
    assert np.array_equal(features(waveform), expected)


@pytest.mark.parametrize("seconds", [10.0, 65.3])
def test_whisper_features_do_not_depend_on_the_blas_thread_count(seconds):
    """OpenBLAS rounds the mel product differently on more threads, and Whisper turned that
    into another transcript of a CI suite item: the features must be the same however many
    threads the process allows (OMP_NUM_THREADS, a worker's limits)."""
    features, waveform = _whisper_features(), _noise(seconds)
    by_threads = []
    for threads in (1, 2, 4):
        with threadpool_limits(limits=threads, user_api="blas"):
            by_threads.append(features(waveform))
    assert all(np.array_equal(by_threads[0], other) for other in by_threads[1:])


def test_whisper_features_of_a_long_signal_hold_no_whole_signal_spectrum():
    features = _whisper_features()
    waveform = _noise(300)
    tracemalloc.start()
    try:
        features(waveform)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # faster-whisper's own extractor peaked at 16 times the signal's size (its frames and
    # their spectrum, complex128 then complex64); block by block it is 4 times.
    assert peak < 8 * waveform.nbytes


def _traced_peak(function, *arguments):
    """What ``function(*arguments)`` returns, and the peak of the Python-visible memory
    (numpy's arrays included) it allocated."""
    tracemalloc.start()
    try:
        result = function(*arguments)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("samples", [1, 7, 2**16, 2**16 + 1, 1_234_567, 600 * 16_000])
def test_the_rms_level_is_numpy_s_whole_signal_value_without_a_float64_copy(samples):
    from bench.metrics import speaker

    wav = _noise(samples / 16_000)
    wav[::3] *= 0.01  # uneven magnitudes, so that the order of the sum shows in its bits
    whole = 20 * np.log10(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
    level, peak = _traced_peak(speaker.rms_dbfs, wav)
    assert level == whole  # bit for bit: the speaker embedding is scaled by it
    # The float64 squares of the whole signal took twice its size; one block's now.
    assert peak <= wav.nbytes // 4 + 8 * speaker.SQUARES_BLOCK + 4096


def test_dnsmos_hands_its_model_a_long_signal_without_copying_it(monkeypatch):
    from bench.metrics import dnsmos

    received = []

    def model(wav, sample_rate, personalized):
        received.append(wav)
        return {"ovrl_mos": 3.0, "sig_mos": 3.5, "bak_mos": 4.0, "p808_mos": 3.25}

    monkeypatch.setattr(dnsmos, "dnsmos_model", lambda: model)
    mix = torch.from_numpy(_noise(600.0)[None])  # the one-channel mix that scoring passes
    value, peak = _traced_peak(dnsmos.dnsmos, mix, mix, dnsmos.SAMPLE_RATE)
    assert value == {"ovrl": 3.0, "sig": 3.5, "bak": 4.0, "p808": 3.25}
    assert np.shares_memory(received[0], mix.numpy())
    # Before: the mix, its float64 squares, its magnitudes and its clipped copy, 3 times its
    # size at once; now the comparisons' booleans, a quarter of it.
    assert peak <= mix.numpy().nbytes // 3
    loud = 4 * mix
    value = dnsmos.dnsmos(loud, loud, dnsmos.SAMPLE_RATE)
    assert np.array_equal(received[1], np.clip(loud[0].numpy(), -1, 1))
    clipped = int(np.count_nonzero(np.abs(loud.numpy()) > 1))
    assert value.note == f"{clipped} samples beyond full scale clipped to [-1, 1]"

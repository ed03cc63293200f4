"""PESQ, STOI/ESTOI and ViSQOL through ``bench.scoring`` on real speech.

Agreement with ``pystoi`` called directly, the best score for identity, strictly worse
scores with more noise, multi-channel input, and a failure with a reason (never a crash
or a silent NaN) for inputs a metric cannot score. The conformance of PESQ and ViSQOL
with published values is in test_conformance.py.
"""

from __future__ import annotations

import math

import pystoi
import pytest
import torch

from bench import audio
from bench.data.embedded import EMBEDDED_DIR
from bench.data.item import Item
from bench.metrics import asr, get_metric, metric_names
from bench.scoring import ItemSignals, MetricOutcome, bind_metrics, score_metric

METRICS = ("pesq_wb", "pesq_nb", "stoi", "estoi", "visqol_speech", "visqol_audio")
# Every registered intrusive metric must rank identity best and more noise worse. The ASR
# error rates (WER, CER) are checked in test_model_metrics.py and test_asr.py instead: on
# one 3 s utterance a single word decides them, and they need not move between 40 and 20 dB.
RANKED = tuple(
    name
    for name in metric_names()
    if get_metric(name).inputs == "audio"
    and get_metric(name).needs_reference
    and name not in asr.METRIC_NAMES
    # A time shift, not a quality: added noise leaves it at 0.
    and name != "residual_delay"
)
# 3 s of real read speech (LibriVox, 16 kHz). On the other LibriVox files white noise at
# 20 dB SNR already takes visqol_speech to the lattice mapper's floor of 1.0, where the
# 10 dB step could not score lower; on this one every metric stays above it until 10 dB.
SPEECH_FILE = EMBEDDED_DIR / "librivox_0880.flac"
SAMPLE_RATE = 16_000
SNRS_DB = (40, 20, 10)
# (value, tolerance) for identical signals: the top of PESQ's P.862.2 and P.862.1 MOS-LQO
# mappings and of ViSQOL's audio SVR model; the speech lattice gives 4.52-4.59 on LibriVox.
IDENTITY = {
    "pesq_wb": (4.644, 1e-3),
    "pesq_nb": (4.549, 1e-3),
    "stoi": (1.0, 1e-9),
    "estoi": (1.0, 1e-9),
    "visqol_speech": (4.55, 0.05),
    "visqol_audio": (4.732, 1e-3),
}


def _score(name: str, reference: torch.Tensor, degraded: torch.Tensor) -> MetricOutcome:
    (metric,) = bind_metrics((name,))
    item = Item(id=SPEECH_FILE.stem, path=SPEECH_FILE)
    return score_metric(metric, item, ItemSignals(reference, degraded, SAMPLE_RATE))


def _with_white_noise(speech: torch.Tensor, snr_db: float) -> torch.Tensor:
    noise = torch.randn(speech.shape, generator=torch.Generator().manual_seed(0))
    return speech + noise * (speech.norm() / noise.norm()) * 10 ** (-snr_db / 20)


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    return audio.load_audio(SPEECH_FILE).audio


@pytest.fixture(scope="module")
def noise_ladder(speech) -> dict[str, list[float]]:
    """Each metric's scores for identity, then white noise at 40, 20 and 10 dB SNR."""
    conditions = [speech] + [_with_white_noise(speech, snr) for snr in SNRS_DB]
    scores = {}
    for name in RANKED:
        outcomes = [_score(name, speech, degraded) for degraded in conditions]
        assert all(outcome.failure is None for outcome in outcomes), name
        scores[name] = [outcome.values[name] for outcome in outcomes]
    return scores


@pytest.mark.parametrize("name", METRICS)
def test_identity_scores_the_best_value(name, noise_ladder):
    value, tolerance = IDENTITY[name]
    assert noise_ladder[name][0] == pytest.approx(value, abs=tolerance)


@pytest.mark.parametrize("name", RANKED)
def test_identity_is_best_and_more_noise_scores_strictly_worse(name, noise_ladder):
    scores = noise_ladder[name]
    if not get_metric(name).higher_is_better:
        scores = [-score for score in scores]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores), scores


@pytest.mark.parametrize(("name", "extended"), [("stoi", False), ("estoi", True)])
def test_stoi_equals_pystoi_called_directly(name, extended, speech):
    degraded = _with_white_noise(speech, 10)
    direct = pystoi.stoi(
        speech[0].double().numpy(), degraded[0].double().numpy(), SAMPLE_RATE, extended=extended
    )
    # Not ==: pystoi's sums vary in the last bit with the arrays' memory alignment.
    assert _score(name, speech, degraded).values[name] == pytest.approx(direct, abs=1e-12)


@pytest.mark.parametrize("name", METRICS)
def test_multichannel_input_is_scored_as_its_mono_mix(name, speech):
    degraded = _with_white_noise(speech, 20)
    stereo = _score(name, speech.repeat(2, 1), degraded.repeat(2, 1)).values[name]
    # The mix equals the mono signal exactly; the backends' sums may still differ in the
    # last bits with the arrays' memory alignment.
    assert stereo == pytest.approx(_score(name, speech, degraded).values[name], abs=1e-9)


def _silent(speech: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(speech)


def _excerpt(speech: torch.Tensor) -> torch.Tensor:
    return speech[:, SAMPLE_RATE // 2 : SAMPLE_RATE // 2 + int(0.3 * SAMPLE_RATE)]


# Inputs a metric may be unable to score: (reference, degraded) from the speech, and per
# metric the start of the recorded reason, or None where a real value is expected.
EDGE_CASES = {
    "silent reference": (
        lambda speech: (_silent(speech), speech),
        dict.fromkeys(METRICS, "reference is silent"),
    ),
    "silent degraded": (
        lambda speech: (speech, _silent(speech)),
        {
            "pesq_wb": "degraded is silent",
            "pesq_nb": "degraded is silent",
            # STOI 0 and ESTOI -0.009 once stood for silence, values that a working but
            # noisy codec need not beat (correlations can go below 0): refused instead.
            "stoi": "degraded is silent",
            "estoi": "degraded is silent",
            "visqol_speech": "degraded is silent",
            "visqol_audio": "degraded is silent",
        },
    ),
    "0.3 s": (
        lambda speech: (_excerpt(speech), _with_white_noise(_excerpt(speech), 20)),
        {
            "pesq_wb": None,  # PESQ needs 0.25 s
            "pesq_nb": None,
            "stoi": "too little speech",  # 30 frames of 384 ms
            "estoi": "too little speech",
            "visqol_speech": "ViSQOL speech mode found no usable reference patch",
            "visqol_audio": "ViSQOL audio mode found no usable reference patch",
        },
    ),
}


@pytest.mark.parametrize("name", METRICS)
@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_unscorable_input_gives_a_reason_never_a_crash_or_silent_nan(case, name, speech):
    make_signals, expected_reasons = EDGE_CASES[case]
    outcome = _score(name, *make_signals(speech))
    value = outcome.values[name]
    expected = expected_reasons[name]
    if expected is None:
        assert outcome.failure is None and math.isfinite(value)
    else:
        assert math.isnan(value) and outcome.failure.startswith(expected), outcome.failure
        assert outcome.cacheable  # raised CannotScore, not an unexpected exception


def test_pesq_of_24khz_audio_resamples_by_rate_unlike_hificodecs_evaluation_script(speech):
    """HiFi-Codec's official `compute_pesq.py` calls ``scipy.signal.resample(x, 16000)``, which
    squeezes every file into 16,000 samples (one second) instead of resampling it to 16 kHz.
    The harness brings 24 kHz audio to 16 kHz by rate; the bug would change the score."""
    import pesq as pesq_backend
    import scipy.signal

    reference = audio.resample(speech, SAMPLE_RATE, 24_000)
    degraded = _with_white_noise(reference, 20)
    (metric,) = bind_metrics(("pesq_wb",))
    signals = ItemSignals(reference, degraded, 24_000)
    item = Item(id=SPEECH_FILE.stem, path=SPEECH_FILE)
    outcome = score_metric(metric, item, signals)
    at_16khz = signals.pair(16_000, "float64")
    assert at_16khz[0].shape[-1] == round(reference.shape[-1] * 16_000 / 24_000) != 16_000
    assert outcome.values["pesq_wb"] == pytest.approx(
        pesq_backend.pesq(16_000, at_16khz[0][0].double().numpy(), at_16khz[1][0].double().numpy())
    )
    squeezed = [
        scipy.signal.resample(signal[0].double().numpy(), 16_000)
        for signal in (reference, degraded)
    ]
    assert abs(pesq_backend.pesq(16_000, *squeezed) - outcome.values["pesq_wb"]) > 0.1

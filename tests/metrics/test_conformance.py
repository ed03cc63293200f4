"""PESQ and ViSQOL through our metrics against published reference values.

The data live in ``$BENCH_CONFORMANCE_DIR`` (``../shared/conformance`` in CI): the 21
cases of the C++ ViSQOL conformance test (google/visqol, conformance version 333) and
ludlows/PESQ's test pair, whose values the ITU-T reference binary reproduces. Without
the variable these tests skip. Every value goes through ``bench.scoring``, so options,
channel mixing, resampling and the backend call are all ours.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path

import pytest
import soundfile

from bench import audio
from bench.cli import EXIT_FAILURES, EXIT_OK, main
from bench.data.item import Item
from bench.metrics.visqol import SPEECH_MAPPERS
from bench.registry import METRICS
from bench.scoring import (
    BoundMetric,
    ItemSignals,
    bind_metrics,
    length_tolerance,
    score_metric,
    score_pair,
)

pytestmark = pytest.mark.conformance

CONFORMANCE_DIR = os.environ.get("BENCH_CONFORMANCE_DIR")
NO_DATA = "BENCH_CONFORMANCE_DIR is not set (point it at ../shared/conformance)"

VISQOL_TOLERANCE = {"audio": 1e-4, "speech": 0.03}
# Cases where visqol-python itself, called directly on the files, departs from the C++
# value by more than the rule (../shared/reference/metrics.md §3); pinned just above the
# measured deviation so that anything our wrapper adds would still show.
VISQOL_BACKEND_DEVIATIONS = {
    "audio contrabassoon 24aac": 2e-4,  # visqol-python: -1.17e-4
    "CA01 as audio mode": 5e-3,  # visqol-python: +3.14e-3
}
# Within 0.05 MOS of the native-rate value after our resampling from 24 kHz.
PESQ_RESAMPLING_TOLERANCE = 0.05


def _data(*parts: str) -> Path:
    return Path(CONFORMANCE_DIR, *parts)


def _at_input_rate(metric: BoundMetric) -> BoundMetric:
    """``metric`` scoring at the rate of its input, as the reference values were made."""
    return BoundMetric(dataclasses.replace(metric.spec, sample_rate=None), metric.options)


def _visqol_cases() -> list:
    if not CONFORMANCE_DIR:
        return [pytest.param(None, id="no-data", marks=pytest.mark.skip(reason=NO_DATA))]
    cases = json.loads(_data("visqol", "cases.json").read_text())["cases"]
    return [pytest.param(case, id=case["name"]) for case in cases]


def _visqol_metric(case: dict) -> BoundMetric:
    """Our ViSQOL metric configured as the case asks, at the rate of the case's files.

    The C++ test feeds its 48 kHz files to both modes. The registered speech metric
    would first resample them to 16 kHz, a different input (it moves these cases by up
    to 0.12 MOS), so the rate is left to the input, as the C++ test does.
    """
    name = f"visqol_{case['mode']}"
    options = {}
    if case["mode"] == "speech":
        mappers = [
            mapper for mapper, arguments in SPEECH_MAPPERS.items() if arguments == case["options"]
        ]
        assert mappers, f"no visqol_speech mapper has the case's options {case['options']}"
        options["mapper"] = mappers[0]
    (metric,) = bind_metrics((name,), {name: options})
    return _at_input_rate(metric)


@pytest.mark.parametrize("case", _visqol_cases())
def test_visqol_matches_the_cpp_conformance_values(case):
    metric = _visqol_metric(case)
    reference = audio.load_audio(_data("visqol", case["reference"]))
    degraded = audio.load_audio(_data("visqol", case["degraded"]))
    # Through score_metric, the sweep's path; `bench score` has its own test below.
    item = Item(id=case["name"], path=_data("visqol", case["degraded"]))
    signals = ItemSignals(reference.audio, degraded.audio, reference.sample_rate)
    outcome = score_metric(metric, item, signals)
    assert outcome.failure is None
    tolerance = VISQOL_BACKEND_DEVIATIONS.get(case["name"], VISQOL_TOLERANCE[case["mode"]])
    assert outcome.values[metric.name] == pytest.approx(case["expected_moslqo"], abs=tolerance)


def _unequal_length_cases() -> list:
    """The ViSQOL cases whose degraded file differs in length from its reference."""
    cases = []
    for param in _visqol_cases():
        case = param.values[0]
        if case is not None:
            lengths = [
                soundfile.info(_data("visqol", case[side])).frames
                for side in ("reference", "degraded")
            ]
            if lengths[0] == lengths[1]:
                continue
        cases.append(param)
    return cases


@pytest.mark.parametrize("case", _unequal_length_cases())
def test_visqol_through_bench_score_gets_pairs_of_different_lengths_as_they_are(
    case, monkeypatch, capsys
):
    """`bench score` itself, on every case whose files differ in length.

    ViSQOL aligns the pair itself: trimming the longer file first moved "audio glock 48aac"
    to 4.3336 (C++: 4.3325). Beyond the length tolerance the pair is refused, and
    ``--trim`` scores it, still handing ViSQOL the files as they are.
    """
    metric = _visqol_metric(case)
    # The case's configuration (rate, mapper) registered under the metric's own name, as
    # `bench score` has no option for it.
    configured = dataclasses.replace(
        metric.spec, function=functools.partial(metric.spec.function, **metric.options)
    )
    monkeypatch.setitem(METRICS._targets, metric.name, configured)
    reference, degraded = (str(_data("visqol", case[side])) for side in ("reference", "degraded"))
    command = ["score", reference, degraded, "--metrics", metric.name, "--json"]
    reference_samples = soundfile.info(reference).frames
    difference = abs(soundfile.info(degraded).frames - reference_samples)
    if difference > length_tolerance(reference_samples, soundfile.info(reference).samplerate):
        assert main(command) == EXIT_FAILURES
        refused = json.loads(capsys.readouterr().out)
        assert refused["values"] == {metric.name: None}
        assert "beyond the tolerance" in refused["failures"][metric.name]
        command.append("--trim")
    assert main(command) == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    tolerance = VISQOL_BACKEND_DEVIATIONS.get(case["name"], VISQOL_TOLERANCE[case["mode"]])
    assert printed["values"][metric.name] == pytest.approx(case["expected_moslqo"], abs=tolerance)
    assert any(f"{metric.name} scored the files as they are" in note for note in printed["notes"])


@pytest.fixture
def pesq_case() -> dict:
    if not CONFORMANCE_DIR:
        pytest.skip(NO_DATA)
    return json.loads(_data("pesq", "expected.json").read_text())


def test_pesq_reproduces_the_reference_values_exactly(pesq_case):
    # The values are for the 16 kHz files as they are, narrowband included (P.862
    # accepts 16 kHz), so both metrics score at the files' rate.
    metrics = tuple(_at_input_rate(metric) for metric in bind_metrics(("pesq_wb", "pesq_nb")))
    scores = score_pair(
        _data("pesq", pesq_case["reference"]), _data("pesq", pesq_case["degraded"]), metrics
    )
    assert scores.failures == {}
    assert scores.values == {
        "pesq_wb": pesq_case["expected"]["wb"],
        "pesq_nb": pesq_case["expected"]["nb"],
    }


def test_pesq_after_our_resampling_from_24_khz_stays_near_the_native_value(pesq_case):
    """The registered metrics on the pair at 16 kHz and on the pair brought to 24 kHz,
    which our harness resamples back to 16 kHz (wideband) and 8 kHz (narrowband).

    Wideband at 16 kHz is the reference value itself. Narrowband at 8 kHz is compared
    with our own 8 kHz value of the 16 kHz files: the reference value is for narrowband
    PESQ of 16 kHz samples, 0.06 lower on this pair, a difference of rate, not of code.
    """
    native_rate = pesq_case["sample_rate"]
    reference = audio.load_audio(_data("pesq", pesq_case["reference"])).audio
    degraded = audio.load_audio(_data("pesq", pesq_case["degraded"])).audio
    item = Item(id="pesq", path=_data("pesq", pesq_case["degraded"]))
    upsampled = [audio.resample(signal, native_rate, 24_000) for signal in (reference, degraded)]
    native_signals = ItemSignals(reference, degraded, native_rate)
    upsampled_signals = ItemSignals(*upsampled, 24_000)
    for metric in bind_metrics(("pesq_wb", "pesq_nb")):
        native = score_metric(metric, item, native_signals)
        after = score_metric(metric, item, upsampled_signals)
        assert native.failure is None and after.failure is None
        assert after.values[metric.name] == pytest.approx(
            native.values[metric.name], abs=PESQ_RESAMPLING_TOLERANCE
        )
        if metric.name == "pesq_wb":
            assert native.values["pesq_wb"] == pesq_case["expected"]["wb"]

"""Coding metrics read from measurements, not audio: real bitrate and real-time factors.

The real-time factor (RTF) is compute seconds per second of audio, so below 1 is faster
than real time; warm-up calls are excluded by the harness before timing.
"""

from __future__ import annotations

from bench import __version__ as bench_version
from bench.metrics.base import CodingStats, MetricSpec, register_metric


def rtf_encode(coding: CodingStats) -> float:
    """Encode seconds per second of audio."""
    return coding.encode_seconds / coding.audio_seconds


def rtf_decode(coding: CodingStats) -> float:
    """Decode seconds per second of audio."""
    return coding.decode_seconds / coding.audio_seconds


def kbps_actual(coding: CodingStats) -> float:
    """The bitrate of the real payload bytes, in kbps."""
    return coding.kbps_actual


for _function, _unit, _description in (
    (rtf_encode, "s/s", "encode compute seconds per audio second (warm-up excluded)"),
    (rtf_decode, "s/s", "decode compute seconds per audio second (warm-up excluded)"),
    (kbps_actual, "kbps", "bitrate measured from len(payload) over the duration"),
):
    register_metric(
        MetricSpec(
            name=_function.__name__,
            function=_function,
            higher_is_better=False,
            needs_reference=False,
            needs_transcript=False,
            sample_rate=None,
            backend="bench",
            backend_version=bench_version,
            inputs="coding",
            unit=_unit,
            description=_description,
        )
    )

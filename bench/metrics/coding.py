"""Coding metrics read from measurements, not audio: real bitrate and real-time factors.

The real-time factor (RTF) is compute seconds per second of audio, so below 1 is faster
than real time; warm-up calls are excluded by the harness before timing.
"""

from __future__ import annotations

from bench import __version__ as bench_version
from bench.metrics.base import CodingStats, Tolerance, metric

CODING = {
    "higher_is_better": False,
    "needs_reference": False,
    "needs_transcript": False,
    "sample_rate": None,
    "backend": "bench",
    "backend_version": bench_version,
    "inputs": "coding",
}
# Timings move with the machine's load; only a doubling is worth a red build.
TIMING_TOLERANCE = Tolerance(relative=1.0)


@metric(
    **CODING,
    unit="s/s",
    description="encode compute seconds per audio second (warm-up excluded)",
    tolerance=TIMING_TOLERANCE,
)
def rtf_encode(coding: CodingStats) -> float:
    """Encode seconds per second of audio."""
    return coding.encode_seconds / coding.audio_seconds


@metric(
    **CODING,
    unit="s/s",
    description="decode compute seconds per audio second (warm-up excluded)",
    tolerance=TIMING_TOLERANCE,
)
def rtf_decode(coding: CodingStats) -> float:
    """Decode seconds per second of audio."""
    return coding.decode_seconds / coding.audio_seconds


@metric(
    **CODING,
    unit="kbps",
    description="bitrate measured from len(payload) over the duration",
    tolerance=Tolerance(relative=0.01),
)
def kbps_actual(coding: CodingStats) -> float:
    """The bitrate of the real payload bytes, in kbps."""
    return coding.kbps_actual

"""STOI and ESTOI speech intelligibility, through ``pystoi``.

STOI follows Taal et al., "An Algorithm for Intelligibility Prediction of Time-Frequency
Weighted Noisy Speech" (IEEE TASLP 2011); ESTOI follows Jensen and Taal, "An Algorithm
for Predicting the Intelligibility of Speech Masked by Modulated Noise Maskers" (IEEE
TASLP 2016). ``pystoi`` matches Taal's MATLAB code to ~1e-15 on real speech.

Both algorithms work at 10 kHz. The metrics declare 16 kHz, the rate of most speech
corpora, and pass it on as ``fs_sig``: ``pystoi`` then brings the signals to 10 kHz with
its own MATLAB-compatible resampler, so the value is exactly what ``pystoi.stoi`` gives on
the same 16 kHz arrays, as in torchmetrics and most papers.
"""

from __future__ import annotations

import warnings
from importlib.metadata import version

import numpy as np
import torch

from bench import audio as bench_audio
from bench.data.item import Item
from bench.metrics.base import SPEECH_ONLY, CannotScore, Tolerance, metric

STOI_SAMPLE_RATE = 16_000
# pystoi warns with this text and returns 1e-5, a placeholder rather than a score, when
# fewer than 30 frames (384 ms) of the reference remain after dropping silent frames.
_TOO_FEW_FRAMES_WARNING = "Not enough STFT frames"
# pystoi holds every frame of both signals at once, as lists of float64 arrays and
# complex128 spectrograms: about 1.25 MB of working memory per second of audio for STOI,
# 3.5 MB for ESTOI, so the limit keeps it near 0.4 GB. (E)STOI were designed for, and are
# reported on, utterances.
MAX_SECONDS = 120.0
MAX_SECONDS_REASON = "pystoi holds every frame of both signals at once"


def _stoi(
    reference: torch.Tensor, degraded: torch.Tensor, sample_rate: int, extended: bool
) -> float:
    """(E)STOI of ``(channels, samples)`` signals averaged to mono, in float64."""
    from pystoi import stoi as pystoi_stoi

    reference_mono = bench_audio.mono_float64(reference)
    degraded_mono = bench_audio.mono_float64(degraded)
    if not np.any(reference_mono):
        # With no speech to select, pystoi keeps every frame and returns ~0: not a score.
        raise CannotScore("reference is silent (every sample is zero)")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", _TOO_FEW_FRAMES_WARNING, RuntimeWarning)
        try:
            return float(pystoi_stoi(reference_mono, degraded_mono, sample_rate, extended=extended))
        except RuntimeWarning as warning:
            raise CannotScore(
                "too little speech: under 30 frames (384 ms) of the reference remain "
                "after removing silent frames"
            ) from warning


STOI = {
    "higher_is_better": True,
    "needs_reference": True,
    "needs_transcript": False,
    "content": SPEECH_ONLY,
    "sample_rate": STOI_SAMPLE_RATE,
    "backend": "pystoi",
    "backend_version": version("pystoi"),
    "max_seconds": MAX_SECONDS,
    "max_seconds_reason": MAX_SECONDS_REASON,
    "tolerance": Tolerance(absolute=0.005),
    "mono_mix": "float64",  # bench.audio.mono_float64
}


@metric(**STOI, description="STOI (Taal et al. 2011), 16 kHz in, 10 kHz inside pystoi, mono mix")
def stoi(
    reference: torch.Tensor, degraded: torch.Tensor, sample_rate: int, item: Item | None = None
) -> float:
    """Short-time objective intelligibility, about 0 to 1. Higher is better."""
    return _stoi(reference, degraded, sample_rate, extended=False)


@metric(**STOI, description="ESTOI (Jensen & Taal 2016), 16 kHz in, 10 kHz inside pystoi, mono mix")
def estoi(
    reference: torch.Tensor, degraded: torch.Tensor, sample_rate: int, item: Item | None = None
) -> float:
    """Extended STOI, for modulated maskers; about 0 to 1. Higher is better."""
    return _stoi(reference, degraded, sample_rate, extended=True)

"""PESQ (ITU-T P.862) wideband and narrowband MOS-LQO, through the ``pesq`` package.

``pesq_wb`` is ITU-T P.862.2 wideband PESQ at 16 kHz. ``pesq_nb`` is ITU-T P.862
narrowband PESQ at 8 kHz, reported on the ITU-T P.862.1 MOS-LQO scale (not the raw
P.862 score). ``pesq`` 0.0.4 wraps the ITU-T reference C code of October 2005, *without*
P.862.2 Corrigendum 2 (2018), which lowers the wideband input filter by 12 dB: the
corrected code scores wideband higher (1.08 -> 1.51 on ludlows' test pair), so wideband
values compare only across tools that use the same variant. Narrowband is unaffected.

Licence: the ITU-T code carries the PESQ IPR notice (Psytechnics/OPTICOM), which allows
use only to evaluate the algorithm, not for external commercial purposes.

This module shares its name with the backend package; the backend is imported lazily
(an absolute import, so ``import pesq`` here is the top-level package, never this module).
"""

from __future__ import annotations

from importlib.metadata import version

import numpy as np
import torch

from bench import audio as bench_audio
from bench.data.item import Item
from bench.metrics.base import SPEECH_ONLY, CannotScore, Tolerance, metric

PESQ_BACKEND = "pesq (ITU-T P.862 / P.862.2 reference code 2005, without Corrigendum 2)"
# The reference C code is made for utterances of seconds (it keeps at most 50 speech
# segments in fixed arrays) and kills the process (SIGSEGV) on the 10-minute item of
# benchmarks/long_item_memory.py; items of up to 80 s of that speech score normally.
MAX_SECONDS = 60.0
MAX_SECONDS_REASON = "the ITU-T reference code is made for utterances and crashes on long items"


def _pesq(reference: torch.Tensor, degraded: torch.Tensor, sample_rate: int, mode: str) -> float:
    """PESQ of ``(channels, samples)`` signals averaged to mono; ``mode`` is "wb" or "nb"."""
    import pesq as pesq_backend

    reference_mono = bench_audio.mono_float64(reference)
    degraded_mono = bench_audio.mono_float64(degraded)
    if not np.any(reference_mono):
        raise CannotScore("reference is silent (every sample is zero)")
    if not np.any(degraded_mono):
        # The C code equalises levels by dividing by the degraded power and fails with
        # an unrelated "cannot convert float NaN to integer"; say what is wrong instead.
        raise CannotScore("degraded is silent (every sample is zero); PESQ cannot level-align it")
    try:
        return float(pesq_backend.pesq(sample_rate, reference_mono, degraded_mono, mode))
    except pesq_backend.NoUtterancesError as error:
        raise CannotScore("PESQ found no utterance in the reference (too quiet?)") from error
    except pesq_backend.PesqError as error:
        # The C code's messages arrive as bytes (b'Buffer needs to be at least 1/4 ...').
        message = (
            error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else error
        )
        raise CannotScore(f"pesq failed: {type(error).__name__}: {message}") from error


PESQ = {
    "higher_is_better": True,
    "needs_reference": True,
    "needs_transcript": False,
    "needs_equal_lengths": False,  # PESQ time-aligns the pair itself
    "content": SPEECH_ONLY,
    "backend": PESQ_BACKEND,
    "backend_version": version("pesq"),
    "unit": "MOS-LQO",
    "max_seconds": MAX_SECONDS,
    "max_seconds_reason": MAX_SECONDS_REASON,
    "tolerance": Tolerance(absolute=0.05),
    "mono_mix": "float64",  # bench.audio.mono_float64
}


@metric(
    **PESQ,
    sample_rate=16_000,
    description="wideband PESQ, ITU-T P.862.2 (no Corrigendum 2), 16 kHz, mono mix",
)
def pesq_wb(
    reference: torch.Tensor, degraded: torch.Tensor, sample_rate: int, item: Item | None = None
) -> float:
    """Wideband PESQ (P.862.2) MOS-LQO, 1.04 to 4.64, of 16 kHz signals. Higher is better."""
    return _pesq(reference, degraded, sample_rate, "wb")


@metric(
    **PESQ,
    sample_rate=8_000,
    description="narrowband PESQ, ITU-T P.862 as P.862.1 MOS-LQO, 8 kHz, mono mix",
)
def pesq_nb(
    reference: torch.Tensor, degraded: torch.Tensor, sample_rate: int, item: Item | None = None
) -> float:
    """Narrowband PESQ (P.862) mapped to P.862.1 MOS-LQO, 1.02 to 4.55, of 8 kHz signals
    (P.862 also accepts 16 kHz, which the conformance test uses). Higher is better."""
    return _pesq(reference, degraded, sample_rate, "nb")

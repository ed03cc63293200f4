"""DNSMOS P.835: no-reference estimates of the quality of decoded speech: overall (OVRL),
speech signal (SIG), background (BAK), and the P.808 overall rating.

DNSMOS P.835 (Reddy et al., "DNSMOS P.835: A Non-Intrusive Perceptual Objective Speech
Quality Metric to Evaluate Noise Suppressors", ICASSP 2022) predicts the ITU-T P.835
ratings of speech signal (SIG), background (BAK) and overall quality (OVRL) from the
degraded signal alone. The ONNX models and the front end are those of ``speechmos``
0.0.1.1 (the wheel ships Microsoft's ``sig_bak_ovr.onnx`` and ``model_v8.onnx``).

The metric records OVRL as ``dnsmos`` (the number codec papers report) and SIG, BAK and
P.808 beside it as ``dnsmos.sig``, ``dnsmos.bak`` and ``dnsmos.p808``, as peers do: the
model computes all four in one pass. P.808 is the separate P.808 model speechmos runs on the
same clip (``model_v8.onnx``).

It is an indicator, not a fidelity metric: it never sees the reference, and it hardly
reacts to band-limiting (LibriVox low-passed for 8 kHz sampling keeps its OVRL of 3.1;
see ../shared/reference/metrics.md section 7).
"""

from __future__ import annotations

import functools
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from bench.data.item import Item
from bench.metrics.base import SPEECH_ONLY, Score, Tolerance, metric
from bench.metrics.speaker import voiced_mono

if TYPE_CHECKING:
    from speechmos.dnsmos import DNSMOS

SAMPLE_RATE = 16_000
# The model rates 9.01 s windows; speechmos, like Microsoft's reference script, tiles
# shorter clips up to that. Below 1 s the tiling's repetitions and seams dominate: 0.25 s
# crops of the LibriVox utterances score OVRL 1.4-2.4, the whole utterances 2.8-3.4.
MIN_SECONDS = 1.0
# The recorded value -> speechmos's key for it; OVRL is the metric's primary value.
SCORES = {"ovrl": "ovrl_mos", "sig": "sig_mos", "bak": "bak_mos", "p808": "p808_mos"}


@functools.cache
def dnsmos_model() -> DNSMOS:
    """speechmos's DNSMOS with both ONNX sessions on one thread, built once per process."""
    import onnxruntime
    from speechmos import dnsmos as speechmos_dnsmos

    class SingleThreadDNSMOS(speechmos_dnsmos.DNSMOS):
        # speechmos opens its sessions with a pool of one thread per core. One thread
        # matches the harness's single-threaded workers (parallelism comes from their
        # number), and a session that runs in the calling thread keeps working in a worker
        # forked after it was opened, where a pool's threads would be missing and hang it.
        def __init__(self, primary_model_path: str, p808_model_path: str) -> None:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            # Without the arena, memory freed after a run goes back instead of staying
            # reserved for the next (about 170 MB less held after the first clip).
            options.enable_cpu_mem_arena = False
            providers = ["CPUExecutionProvider"]
            self.primary_model_path = primary_model_path
            self.onnx_sess = onnxruntime.InferenceSession(
                primary_model_path, options, providers=providers
            )
            self.p808_onnx_sess = onnxruntime.InferenceSession(
                p808_model_path, options, providers=providers
            )

    models = Path(speechmos_dnsmos.__file__).parent / "dnsmos_models"
    return SingleThreadDNSMOS(str(models / "sig_bak_ovr.onnx"), str(models / "model_v8.onnx"))


def setup() -> None:
    """Open the ONNX sessions once per worker."""
    dnsmos_model()


@metric(
    higher_is_better=True,
    needs_reference=False,
    needs_transcript=False,
    content=SPEECH_ONLY,
    sample_rate=SAMPLE_RATE,
    backend="speechmos (DNSMOS P.835 ONNX)",
    backend_version="/".join(
        f"{name} {version(name)}" for name in ("speechmos", "onnxruntime", "librosa")
    ),
    unit="MOS",
    description=(
        "DNSMOS P.835 (Reddy et al. 2022): OVRL as dnsmos, with SIG, BAK and P.808 as "
        "dnsmos.sig/.bak/.p808; a no-reference quality indicator of the decoded audio "
        "alone, not a fidelity metric (it ignores band-limiting)"
    ),
    version=2,
    subvalues=tuple(SCORES),
    primary="ovrl",
    setup=setup,
    mono_mix="float32",  # voiced_mono: a numpy mean of float32 channels
    tolerance=Tolerance(absolute=0.05),
)
def dnsmos(
    reference: torch.Tensor, degraded: torch.Tensor, sample_rate: int, item: Item | None = None
) -> dict[str, float] | Score:
    """DNSMOS P.835 OVRL, SIG, BAK and P.808 (1-5, higher is better) of ``degraded``
    ``(channels, samples)``, keyed as :data:`SCORES`.

    The reference is ignored. Channels are averaged; samples beyond full scale are
    clipped to [-1, 1] as playback would (noted in the result). Clips shorter than
    ``MIN_SECONDS`` or quieter than ``bench.metrics.speaker.SILENCE_DBFS`` cannot be scored.
    """
    # Shorter clips are mostly repetition once tiled to 9 s; the model still rates
    # silence (digital silence: OVRL 1.8), but that number is noise.
    wav = voiced_mono(degraded, "degraded", MIN_SECONDS, "DNSMOS needs")
    # Counted side by side rather than through np.abs, and clipped only when needed: a
    # long item's signal is not copied twice more (the values are the same).
    clipped = int(np.count_nonzero(wav > 1)) + int(np.count_nonzero(wav < -1))
    if clipped:
        wav = np.clip(wav, -1, 1)
    ratings = dnsmos_model()(wav, SAMPLE_RATE, False)
    scores = {key: float(ratings[field]) for key, field in SCORES.items()}
    if clipped:
        return Score(scores, f"{clipped} samples beyond full scale clipped to [-1, 1]")
    return scores

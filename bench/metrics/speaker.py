"""Speaker similarity: the cosine of GE2E speaker embeddings of reference and decoded audio.

The embedder is the d-vector LSTM of Wan et al., "Generalized End-to-End Loss for Speaker
Verification" (ICASSP 2018), with the pretrained weights that ship in the ``resemblyzer``
0.1.4 wheel (``resemblyzer/pretrained.pt``). Its inference is reproduced here, with
Resemblyzer's hyper-parameters, rather than imported, for two reasons:

- ``import resemblyzer`` imports ``webrtcvad``. PyPI's ``webrtcvad`` 2.0.10 (the one
  Resemblyzer requires) does ``import pkg_resources``, which setuptools >= 81 no longer
  has (torch requires setuptools >= 77.0.3, so pip installs 84). ``webrtcvad-wheels``
  provides a working module of the same name, but both distributions write the same
  files: which one works depends on pip's install order, installing webrtcvad after it
  breaks the import, and uninstalling either deletes the other's module. Not importing
  the package makes the metric independent of all that (and of Resemblyzer's import of
  ``scipy.ndimage.morphology``, which SciPy 2.0 removes).
- The only thing ``webrtcvad`` is used for is ``trim_long_silences`` in
  ``preprocess_wav``, which we do not want: reference and decoded audio are aligned, and
  trimming each with a VAD that reacts to codec artefacts would make the two embeddings
  cover different stretches of the utterance. Both are embedded whole instead; the rest
  of ``preprocess_wav`` (raising quiet audio to -30 dBFS) is kept. On the embedded
  corpus this changes little: same-speaker pairs average 0.851 without the VAD and
  0.855 with it, different-speaker pairs 0.578 and 0.575.

tests/metrics/test_model_metrics.py checks the embeddings against Resemblyzer's own.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from bench.data.item import Item
from bench.metrics.base import SPEECH_ONLY, CannotScore, Tolerance, metric
from bench.parallel import pinned_threads

SAMPLE_RATE = 16_000
# Resemblyzer 0.1.4's hyper-parameters (resemblyzer/hparams.py), which the weights need.
MEL_WINDOW = 400  # samples: 25 ms
MEL_HOP = 160  # samples: 10 ms
MEL_BANDS = 40
PARTIAL_FRAMES = 160  # mel frames per partial utterance: 1.6 s
PARTIALS_PER_SECOND = 1.3
MIN_PARTIAL_COVERAGE = 0.75  # a trailing partial less covered than this is dropped
PARTIAL_BATCH = 64  # partials embedded at once (about 50 s of audio)
MEL_BLOCK_FRAMES = 6000  # mel frames computed at once (60 s of audio)
SQUARES_BLOCK = 2**16  # samples squared at once in float64 by rms_dbfs
HIDDEN_SIZE = 256
LAYERS = 3
TARGET_DBFS = -30.0  # quieter audio is raised to this RMS level; louder is left alone
# Below this RMS level a signal holds no speech (16-bit silence is about -100 dBFS):
# raising it to -30 dBFS would embed amplified noise. bench.metrics.dnsmos uses it too.
SILENCE_DBFS = -70.0
# Shorter audio is zero-padded to one 1.6 s partial, and the padding takes over: on the
# embedded LibriVox reader, a crop's mean similarity to the reader's other utterances
# falls from 0.78 (1.6 s) and 0.76 (1 s) to 0.68 (0.5 s), inside the different-speaker
# range (up to 0.75).
MIN_SECONDS = 1.0
EMBEDDING_NEEDS = "speaker embeddings need"


class GE2EEncoder(torch.nn.Module):
    """Resemblyzer's speaker encoder: a 3-layer LSTM, a linear layer, ReLU and L2 norm."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(MEL_BANDS, HIDDEN_SIZE, LAYERS, batch_first=True)
        self.linear = torch.nn.Linear(HIDDEN_SIZE, HIDDEN_SIZE)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """``(partials, frames, bands)`` mel power spectra to ``(partials, 256)`` unit vectors."""
        _, (hidden, _) = self.lstm(mels)
        embeddings = torch.relu(self.linear(hidden[-1]))
        return embeddings / embeddings.norm(dim=1, keepdim=True)


def weights_path() -> Path:
    # find_spec locates the package without importing it (and so without webrtcvad).
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or spec.origin is None:
        raise ValueError("resemblyzer is not installed; it ships the GE2E weights")
    return Path(spec.origin).parent / "pretrained.pt"


@functools.cache
def encoder() -> GE2EEncoder:
    """The pretrained encoder on CPU, built once per process."""
    checkpoint = torch.load(weights_path(), map_location="cpu", weights_only=True)
    state = checkpoint["model_state"]
    # similarity_weight/bias scale the GE2E training loss; inference does not use them.
    del state["similarity_weight"], state["similarity_bias"]
    model = GE2EEncoder()
    model.load_state_dict(state, strict=True)
    return model.eval()


def _sum_of_squares(wav: np.ndarray) -> float:
    """The float64 sum of the squares of ``(samples,)`` ``wav``, bit for bit what numpy sums
    over the whole float64 copy, without that copy (77 MB for ten minutes at 16 kHz).

    numpy sums a contiguous array pairwise: it halves it (the first half rounded down to a
    multiple of 8) until a part is small, and adds the parts' sums. Splitting the same way
    and summing each small part's squares with numpy adds the same numbers in the same order.
    """
    if wav.size <= SQUARES_BLOCK:
        return float(np.add.reduce(np.square(wav, dtype=np.float64)))
    half = wav.size // 2
    half -= half % 8
    return _sum_of_squares(wav[:half]) + _sum_of_squares(wav[half:])


def rms_dbfs(wav: np.ndarray) -> float:
    """RMS level in dB relative to full scale; minus infinity for digital silence."""
    if wav.size == 0:
        return -math.inf
    rms = math.sqrt(_sum_of_squares(wav) / wav.size)
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def _partial_starts(samples: int) -> list[int]:
    """First mel frame of each 1.6 s partial, as ``VoiceEncoder.compute_partial_slices``."""
    frames = math.ceil((samples + 1) / MEL_HOP)
    step = round(SAMPLE_RATE / PARTIALS_PER_SECOND / MEL_HOP)
    starts = list(range(0, max(1, frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (samples - starts[-1] * MEL_HOP) / (PARTIAL_FRAMES * MEL_HOP)
    if coverage < MIN_PARTIAL_COVERAGE and len(starts) > 1:
        starts.pop()
    return starts


def mel_frames(wav: np.ndarray) -> np.ndarray:
    """``librosa.feature.melspectrogram`` of ``(samples,)`` 16 kHz audio with Resemblyzer's
    parameters, as ``(frames, bands)`` float32, computed a block of frames at a time.

    librosa centres frames by zero-padding half a window at each end; the blocks are cut
    from the padded signal, so they hold exactly those frames. Whole, the complex
    spectrogram of a 10-minute item would take about 100 MB, and its power as much again.
    """
    import librosa

    padded = np.pad(wav, MEL_WINDOW // 2)
    frames = 1 + (len(padded) - MEL_WINDOW) // MEL_HOP
    blocks = []
    for first in range(0, frames, MEL_BLOCK_FRAMES):
        last = min(first + MEL_BLOCK_FRAMES, frames)
        block = librosa.feature.melspectrogram(
            y=padded[first * MEL_HOP : (last - 1) * MEL_HOP + MEL_WINDOW],
            sr=SAMPLE_RATE,
            n_fft=MEL_WINDOW,
            hop_length=MEL_HOP,
            n_mels=MEL_BANDS,
            center=False,
        )
        blocks.append(block.T.astype(np.float32))
    return np.concatenate(blocks)


def embed(wav: np.ndarray) -> np.ndarray:
    """The ``(256,)`` unit embedding of ``(samples,)`` mono 16 kHz audio, not silent.

    The normalised mean of the embeddings of its 1.6 s partials.

    Follows ``resemblyzer.VoiceEncoder.embed_utterance`` after ``normalize_volume``.
    """
    level = rms_dbfs(wav)
    if level < TARGET_DBFS:
        wav = wav * 10 ** ((TARGET_DBFS - level) / 20)
    starts = _partial_starts(len(wav))
    wav = np.pad(wav, (0, max(0, (starts[-1] + PARTIAL_FRAMES) * MEL_HOP - len(wav))))
    mel = mel_frames(wav)
    partials = np.stack([mel[start : start + PARTIAL_FRAMES] for start in starts])
    # One thread whatever the process allows: with more, torch's parallel kernels start an
    # OpenMP team in this process, and a worker forked from it later hangs in libgomp as
    # soon as it runs one (see bench.parallel). Harness workers run on one thread anyway.
    # Partials go through the LSTM a batch at a time: all of a 10-minute item's at once
    # would hold 780 x 160 steps of activations per layer.
    with pinned_threads(1), torch.inference_mode():
        embeddings = torch.cat(
            [
                encoder()(torch.from_numpy(partials[first : first + PARTIAL_BATCH]))
                for first in range(0, len(partials), PARTIAL_BATCH)
            ]
        )
        embeddings = embeddings.mean(dim=0).numpy()
    return embeddings / np.linalg.norm(embeddings)


def voiced_mono(audio: torch.Tensor, role: str, min_seconds: float, needed_by: str) -> np.ndarray:
    """The 16 kHz ``(channels, samples)`` signal mixed to mono, or ``CannotScore`` when it
    is shorter than ``min_seconds`` or silent (below ``SILENCE_DBFS``)."""
    # Mixed in numpy: a torch reduction over many samples runs on torch's OpenMP team
    # (see embed), which the metric must not start in the calling process. One channel is
    # its own mean (scoring passes the mix: MetricSpec.mono_mix): a view, not a copy.
    channels = audio.numpy()
    wav = channels[0] if channels.shape[0] == 1 else channels.mean(axis=0)
    if len(wav) < min_seconds * SAMPLE_RATE:
        raise CannotScore(
            f"{role} is {len(wav) / SAMPLE_RATE:.2f} s long; {needed_by} at least {min_seconds} s"
        )
    if rms_dbfs(wav) < SILENCE_DBFS:
        raise CannotScore(f"{role} is silent (RMS below {SILENCE_DBFS:g} dBFS): no voice")
    return wav


def setup() -> None:
    """Load the encoder once per worker."""
    encoder()


@metric(
    higher_is_better=True,
    needs_reference=True,
    needs_transcript=False,
    content=SPEECH_ONLY,
    sample_rate=SAMPLE_RATE,
    backend="resemblyzer weights (GE2E)",
    backend_version=f"resemblyzer {version('resemblyzer')}/librosa {version('librosa')}",
    description=(
        "cosine similarity of GE2E d-vectors (Resemblyzer weights) of the reference and "
        "decoded audio, whole utterances without VAD trimming"
    ),
    setup=setup,
    mono_mix="float32",  # voiced_mono: a numpy mean of float32 channels
    tolerance=Tolerance(absolute=0.01),
)
def speaker_similarity(
    reference: torch.Tensor, degraded: torch.Tensor, sample_rate: int, item: Item | None = None
) -> float:
    """Cosine similarity of the GE2E embeddings of ``(channels, samples)`` 16 kHz signals.

    Both are mixed to mono. 1 means the same point in speaker space; on the embedded
    corpus, two utterances of one speaker score 0.66-0.94 (mean 0.85) and of two speakers
    0.38-0.75 (mean 0.58). Audio shorter than ``MIN_SECONDS`` or quieter than
    ``SILENCE_DBFS`` cannot be scored. Higher is better.
    """
    reference_embedding = embed(voiced_mono(reference, "reference", MIN_SECONDS, EMBEDDING_NEEDS))
    degraded_embedding = embed(voiced_mono(degraded, "degraded", MIN_SECONDS, EMBEDDING_NEEDS))
    similarity = float(np.dot(reference_embedding, degraded_embedding))
    if not math.isfinite(similarity):
        # The ReLU can zero every unit of an embedding, leaving no direction to compare.
        raise CannotScore("a speaker embedding is all zeros")
    return similarity

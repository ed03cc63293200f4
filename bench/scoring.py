"""Scoring a (reference, degraded) pair with registered metrics, for sweeps and `bench score`.

Every metric call goes through :func:`score_metric`: its options are checked, its
per-process set-up (model loading, JIT compilation) runs once and untimed, a silent
degraded signal is refused, both signals are brought to the metric's rate by
``bench.audio``, and any failure becomes NaN with a reason instead of an exception or a
substitute value.

Two files given to `bench score` may differ in length. Up to :func:`length_tolerance`
(20 ms or 1 % of the reference, whichever is larger) the metrics that compare sample by
sample score both trimmed to the shorter (``MetricSpec.needs_equal_lengths``), and the
metrics that align the pair themselves or need no reference score the files as they are. A
larger difference means the pair is not what it claims to be (a truncated decode, the
wrong file): every full-reference metric is NaN with the reason, unless ``trim`` asks
to score the common part.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import torch

from bench import audio as bench_audio
from bench.codecs.base import Encoded
from bench.data.item import Item
from bench.metrics import CannotScore, MetricSpec, Score, get_metric, metric_names
from bench.parallel import pinned_threads, process_pool
from bench.store import content_key

# The version of what the harness does around a metric call (which inputs it refuses:
# version 2 refuses a silent degraded signal, which version 1 scored). It keys every
# cached metric value, so that values computed under an older harness are not served.
HARNESS_VERSION = 2
# A degraded signal whose every sample is below half a 16-bit step is digital silence: it
# would be stored as zeros. No codec output is worse, so no metric may score it.
SILENCE_PEAK = 2.0**-16
LENGTH_TOLERANCE_SECONDS = 0.020
LENGTH_TOLERANCE_FRACTION = 0.01
# An item's pair at the codec's rate above this size (about 2.9 minutes at 48 kHz stereo)
# moves to a temporary file while the pairs at the metrics' rates are made (ItemSignals).
SPILL_BYTES = 128 * 2**20


@dataclass(frozen=True)
class BoundMetric:
    """A metric together with the options it runs with (e.g. the ASR model for WER)."""

    spec: MetricSpec
    options: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def backend_version(self) -> str:
        return self.spec.backend_version_for(self.options)

    def cache_key(self, decoded_key: str, item: Item) -> str:
        """Keys a value by the decoded audio and everything that defines the metric.

        The decoded key covers the input and its cropping; a metric that reads transcripts
        is keyed by the item's too, so one file with and without a transcript (a WER and a
        dWER) never share a value.
        """
        key = {
            "decoded": decoded_key,
            "harness": HARNESS_VERSION,
            "metric": self.spec.name,
            "version": self.spec.version,
            "backend": self.spec.backend,
            "backend_version": self.backend_version,
            "sample_rate": self.spec.sample_rate,
            "options": self.options,
        }
        if self.spec.uses_transcript:
            key["transcript"] = item.transcript
        return content_key(key)


def bind_metrics(
    names: tuple[str, ...] | None, options: dict[str, dict[str, str]] | None = None
) -> tuple[BoundMetric, ...]:
    """Resolve metric names (``None``: all) and attach their options, checking both."""
    options = options or {}
    names = tuple(metric_names()) if names is None else names
    bound = tuple(BoundMetric(get_metric(name), dict(options.get(name, {}))) for name in names)
    for metric_name, metric_options in options.items():
        spec = get_metric(metric_name)
        if metric_name not in names:
            raise ValueError(
                f"options were given for metric {metric_name!r}, which is not among the "
                f"requested metrics: {', '.join(names)}"
            )
        spec.check_options(metric_options)
    return bound


@dataclass
class MetricOutcome:
    """One metric's result on one item: values (NaN on failure), reason, note, seconds,
    and a ratio metric's counts (:attr:`Score.counts`)."""

    values: dict[str, float]
    failure: str | None
    note: str | None
    seconds: float
    cacheable: bool = True
    counts: dict[str, int] | None = None

    def to_cache(self) -> dict:
        return {
            "values": self.values,
            "failure": self.failure,
            "note": self.note,
            "seconds": self.seconds,
            "counts": self.counts,
        }

    @classmethod
    def from_cache(cls, entry: dict) -> MetricOutcome:
        return cls(
            entry["values"],
            entry["failure"],
            entry.get("note"),
            entry["seconds"],
            counts=entry.get("counts"),
        )

    @classmethod
    def failed(cls, metric: BoundMetric, reason: str, cacheable: bool = True) -> MetricOutcome:
        names = metric.spec.value_names
        return cls(dict.fromkeys(names, math.nan), reason, None, 0.0, cacheable)


_SET_UP: set[tuple] = set()
CROPPED_TRANSCRIPT_NOTE = (
    "the item was cropped (--max-seconds) and its transcript is of the whole file, "
    "so it does not apply"
)


def ensure_set_up(metric: BoundMetric) -> None:
    """Run the metric's per-process set-up once (untimed): load models, compile kernels."""
    key = (metric.name, tuple(sorted(metric.options.items())))
    if metric.spec.setup is not None and key not in _SET_UP:
        metric.spec.setup(**metric.options)
    _SET_UP.add(key)


def _check_counts(spec: MetricSpec, counts: dict[str, int] | None) -> None:
    """A pooled metric must report the counts its aggregation pools; raise ``TypeError``."""
    if spec.aggregation is not None:
        spec.aggregation.check_counts(counts)


def _values(spec: MetricSpec, result: float | dict[str, float]) -> dict[str, float]:
    if isinstance(result, dict):
        if spec.subvalues and set(result) != set(spec.subvalues):
            raise TypeError(
                f"metric {spec.name!r} declares the values {spec.subvalues}, got {sorted(result)}"
            )
        return {spec.value_name(key): float(value) for key, value in result.items()}
    return {spec.name: float(result)}


def is_silent(audio: torch.Tensor) -> bool:
    """Whether every sample of ``audio`` is below :data:`SILENCE_PEAK` (zero at 16 bits).

    No samples is not silence: the metrics say what is too short.
    """
    # In numpy: a torch reduction would start torch's thread pool in the calling process
    # (see bench.metrics.speaker).
    samples = audio.detach().numpy()
    # The extremes, not np.abs: no copy of what may be a long file.
    return samples.size > 0 and bool(samples.max() < SILENCE_PEAK and samples.min() > -SILENCE_PEAK)


# From glibc's <malloc.h>.
M_MMAP_THRESHOLD = -3
# Blocks of this size or more get their own mapping (see map_large_blocks).
MMAP_THRESHOLD_BYTES = 4 * 2**20


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc, else ``None`` (musl, macOS, Windows)."""
    try:
        os.confstr("CS_GNU_LIBC_VERSION")  # raises (or is missing) where there is no glibc
        return ctypes.CDLL("libc.so.6")
    except (AttributeError, OSError, ValueError):
        return None


def release_freed_memory() -> bool:
    """Give the memory freed inside the C heap back to the system; whether any was.

    glibc keeps freed blocks in the heap for reuse and returns heap pages only from its
    top: a long item's signals dropped between rates would stay resident while the models
    of the next metrics load. ``malloc_trim`` returns every free page. Elsewhere a no-op.
    """
    glibc = _glibc()
    return bool(glibc.malloc_trim(0)) if glibc is not None else False


def map_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Have glibc give each allocation of ``threshold`` bytes or more its own mapping,
    which goes back to the system when freed; whether it did (a no-op without glibc).

    By default glibc raises that threshold, up to 32 MB, each time a larger block is
    freed: a long item's signal blocks and a model's activations (DNSMOS's ONNX model
    takes about 100 MB for each 9 s window) then come from the heap, which keeps them once
    freed and fragments. DNSMOS on a 60 s clip peaks 50 MB lower with a fixed threshold.
    """
    glibc = _glibc()
    return glibc is not None and glibc.mallopt(M_MMAP_THRESHOLD, threshold) == 1


def scoring_order(metrics: tuple[BoundMetric, ...]) -> list[BoundMetric]:
    """The metrics grouped by working rate and mix, the order in which to score one item.

    :class:`ItemSignals` holds both signals at one metric rate at a time, so metrics that
    share a rate and a mix (:attr:`MetricSpec.mono_mix`) should follow each other: each
    pair is then made once. Those at the codec's rate come first, while its pair is held,
    then the others from the highest rate down: the largest pairs are made before the
    models of the 16 kHz speech metrics take their memory.
    """

    def position(metric: BoundMetric) -> tuple[bool, int, str]:
        rate = metric.spec.sample_rate
        return rate is not None, -(rate or 0), metric.spec.mono_mix or ""

    return sorted(metrics, key=position)


class ItemSignals:
    """One item's reference and degraded signals, ``(channels, samples)`` float32 at
    ``sample_rate`` (the codec's), and the pair at each metric's rate, made from them.

    Only one pair at a metric's rate is held at a time: a long item's signals at every
    metric rate would take several times the memory of the item. A pair is made channel
    by channel, and a metric that scores the mono mix (``mono_mix``) gets the mean of the
    resampled channels, one channel per signal. A pair at the codec's rate of more than
    ``spill_bytes`` moves to a temporary file when the first pair at another rate is
    made, and is read back a channel at a time: a 10-minute 48 kHz stereo pair takes
    460 MB, which would otherwise be held through every model a metric loads. Whoever
    builds the object hands the signals over: only if no other reference to them is
    kept is their memory freed.
    """

    def __init__(
        self,
        reference: torch.Tensor,
        degraded: torch.Tensor,
        sample_rate: int,
        spill_bytes: int = SPILL_BYTES,
    ) -> None:
        self.sample_rate = sample_rate
        self.samples = reference.shape[-1]
        self.reference_silent = is_silent(reference)
        self.degraded_silent = is_silent(degraded)
        self._signals: tuple[torch.Tensor, torch.Tensor] | None = (reference, degraded)
        self._shapes = (tuple(reference.shape), tuple(degraded.shape))
        self._spill_bytes = spill_bytes
        self._spill: IO[bytes] | None = None
        self._pair: tuple[tuple[int, bool], tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def duration_seconds(self) -> float:
        return self.samples / self.sample_rate

    @property
    def spills(self) -> bool:
        """Whether the pair at the codec's rate moves to a file between rates."""
        return 4 * sum(math.prod(shape) for shape in self._shapes) > self._spill_bytes

    def pair(
        self, rate: int | None = None, mono_mix: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both signals at ``rate`` (``None``: the codec's), each mixed to one channel of
        dtype ``mono_mix`` if given (see :attr:`MetricSpec.mono_mix`)."""
        key = (rate or self.sample_rate, mono_mix)
        if self._pair is not None and self._pair[0] == key:
            return self._pair[1]
        if self._pair is not None:  # the previous rate's pair goes before the next is made
            self._pair = None
            release_freed_memory()
        if key == (self.sample_rate, None) and self._signals is not None:
            return self._signals
        if self._signals is not None and self.spills:
            self._spill_to_file()
            release_freed_memory()
        pair = (self._made(0, *key), self._made(1, *key))
        self._pair = (key, pair)
        return pair

    def close(self) -> None:
        """Drop every signal and the temporary file."""
        self._signals = self._pair = None
        release_freed_memory()
        if self._spill is not None:
            self._spill.close()
            self._spill = None

    def __enter__(self) -> ItemSignals:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _spill_to_file(self) -> None:
        """Move the pair at the codec's rate to a temporary file; where none can be
        written (a full or read-only temporary folder), it stays in memory, as it would
        for a short item: the values are the same, only the peak memory is higher."""
        spill = None
        try:
            spill = tempfile.TemporaryFile(prefix="bench-signals-")
            for signal in self._signals:
                spill.write(memoryview(signal.detach().contiguous().numpy()).cast("B"))
            spill.flush()
        except OSError:
            if spill is not None:
                spill.close()
            self._spill_bytes = math.inf  # not tried again for this item
            return
        self._spill, self._signals = spill, None

    def _channel(self, index: int, channel: int) -> np.ndarray:
        """One channel of one signal at the codec's rate, ``(samples,)`` float32."""
        if self._signals is not None:
            return self._signals[index][channel].detach().numpy()
        channels, samples = self._shapes[index]
        offset = 4 * (sum(math.prod(shape) for shape in self._shapes[:index]) + channel * samples)
        values = np.empty(samples, dtype=np.float32)
        self._spill.seek(offset)
        if self._spill.readinto(memoryview(values).cast("B")) != values.nbytes:
            raise OSError(f"the temporary file of the item's signals ends before {offset} bytes")
        return values

    def _made(self, index: int, rate: int, mono_mix: str | None) -> torch.Tensor:
        """One signal at ``rate``, channel by channel, mixed to one channel of dtype
        ``mono_mix`` if given: summed in that dtype in channel order, then divided by the
        number of channels, as ``numpy.mean`` over the channels computes it."""
        channels = self._shapes[index][0]
        rows = (
            bench_audio.resample_channel(self._channel(index, channel), self.sample_rate, rate)
            for channel in range(channels)
        )
        first = next(rows)
        if mono_mix is None:
            made = np.empty((channels, first.size), dtype=np.float32)
            made[0] = first
            del first
            for channel, row in enumerate(rows, start=1):
                made[channel] = row
            return torch.from_numpy(made)
        # A new array: at the codec's rate the row may be the signal itself.
        mix = np.array(first, dtype=mono_mix)
        del first
        for row in rows:
            mix += row
        if channels > 1:
            mix /= channels
        return torch.from_numpy(mix[None])


def score_metric(
    metric: BoundMetric,
    item: Item,
    signals: ItemSignals,
    *,
    cropped: bool = False,
    encoded: Encoded | None = None,
) -> MetricOutcome:
    """Score one audio metric on an item's signals, at the metric's rate and mix.

    ``signals`` makes the pair at each metric's rate, one rate at a time, for the next
    metric of the item too (see :func:`scoring_order`).
    ``encoded`` is the codec's bitstream of the item, passed to a metric on tokens
    (``needs_codes``), which cannot score without it.
    ``cropped`` says the signals are a crop of the item's file: its transcript, which is
    of the whole file, then does not apply (WER becomes a dWER; a metric that needs a
    transcript gives NaN), and the row's note says so.
    A silent degraded signal is NaN for every metric: silence is the worst possible output,
    and a metric's value for it (SI-SDR 0 dB, a WER of 1, a mel distance set by the
    log floor) could beat a working codec. Only where the reference is silent too is
    silence the right output; the metric then decides what it can score.
    """
    spec = metric.spec
    transcript_note = None
    if cropped and item.transcript and spec.uses_transcript:
        item = dataclasses.replace(item, transcript=None)
        transcript_note = CROPPED_TRANSCRIPT_NOTE
    if spec.needs_transcript and not item.transcript:
        return MetricOutcome.failed(metric, transcript_note or "no transcript for this item")
    if spec.needs_codes and encoded is None:
        return MetricOutcome.failed(metric, "no codec bitstream (Encoded) to read codes from")
    duration = signals.duration_seconds
    if spec.max_seconds is not None and duration > spec.max_seconds:
        # Not cached: the limit is not part of the cache key, and refusing costs nothing.
        return MetricOutcome.failed(
            metric,
            f"too long for {spec.name}: {duration:.1f} s, it scores items of at most "
            f"{spec.max_seconds:g} s ({spec.max_seconds_reason}); crop with --max-seconds",
            cacheable=False,
        )
    if signals.degraded_silent and not (spec.needs_reference and signals.reference_silent):
        return MetricOutcome.failed(
            metric, "degraded is silent (every sample is zero at 16-bit resolution)"
        )
    try:
        ensure_set_up(metric)
    except Exception as error:  # noqa: BLE001 - a broken backend fails its metric only
        return MetricOutcome.failed(
            metric, f"set-up failed: {type(error).__name__}: {error}", cacheable=False
        )
    start = time.perf_counter()
    rate = spec.sample_rate or signals.sample_rate
    # Bringing both signals to the metric's rate is part of scoring it; the pair is
    # shared with later metrics at the same rate and mix.
    metric_reference, metric_degraded = signals.pair(rate, spec.mono_mix)
    note, counts = None, None
    inputs = {"encoded": encoded} if spec.needs_codes else {}
    try:
        result = spec.function(
            metric_reference, metric_degraded, rate, item, **inputs, **metric.options
        )
        if isinstance(result, Score):
            result, note, counts = result.value, result.note, result.counts
        _check_counts(spec, counts)
        outcome = MetricOutcome(_values(spec, result), None, note, 0.0, counts=counts)
    except CannotScore as reason:
        outcome = MetricOutcome.failed(metric, str(reason))
    except Exception as error:  # noqa: BLE001 - one broken metric must not stop the run
        # Unexpected errors may be transient (memory, a backend hiccup): not cached.
        outcome = MetricOutcome.failed(metric, f"{type(error).__name__}: {error}", False)
    outcome.seconds = time.perf_counter() - start
    outcome.note = "; ".join(part for part in (outcome.note, transcript_note) if part) or None
    if outcome.failure is None and any(not math.isfinite(v) for v in outcome.values.values()):
        outcome.failure = "the metric returned a non-finite value"
    return outcome


@dataclass
class PairScores:
    """The scores of one reference/degraded pair, as `bench score` prints them, with the
    counts of its ratio metrics (see :attr:`MetricOutcome.counts`); ``None`` for the side
    of an unpaired file that is missing."""

    reference: str | None
    degraded: str | None
    values: dict[str, float | None]
    failures: dict[str, str]
    notes: list[str]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {
            "reference": self.reference,
            "degraded": self.degraded,
            "values": self.values,
            "failures": self.failures,
            "notes": self.notes,
            "counts": self.counts,
        }

    def fail(self, metrics: tuple[BoundMetric, ...], reason: str) -> PairScores:
        """Record every metric as NaN (``None``) for ``reason``."""
        for metric in metrics:
            for name in metric.spec.value_names:
                self.values[name] = None
                self.failures[name] = reason
        return self


def _converted(
    reference: bench_audio.LoadedAudio, degraded: bench_audio.LoadedAudio
) -> tuple[torch.Tensor, list[str]]:
    """The degraded signal at the reference's rate and channel count, and every note on
    how the two files were read and converted."""
    notes = [f"reference: {note}" for note in reference.notes]
    notes += [f"degraded: {note}" for note in degraded.notes]
    converted, prepare_notes = bench_audio.prepare(
        degraded, reference.sample_rate, reference.audio.shape[0]
    )
    notes += [f"degraded: {note}" for note in prepare_notes[len(degraded.notes) :]]
    return converted, notes


def length_tolerance(reference_samples: int, sample_rate: int) -> int:
    """How many samples a degraded signal may differ from its reference in length and
    still be scored as its pair: 20 ms or 1 % of the reference, whichever is larger."""
    return max(
        round(LENGTH_TOLERANCE_SECONDS * sample_rate),
        int(LENGTH_TOLERANCE_FRACTION * reference_samples),
    )


def _takes_any_lengths(spec: MetricSpec) -> bool:
    """Whether a metric scores a pair of different lengths as it is: it aligns the pair
    itself (PESQ, ViSQOL), or it never reads the reference (DNSMOS)."""
    return not spec.needs_equal_lengths


def _length_note(metrics: tuple[BoundMetric, ...], lengths: str, shorter: int) -> str:
    """How a pair of different lengths was scored, naming the metrics on each side."""
    trimmed = [metric.name for metric in metrics if not _takes_any_lengths(metric.spec)]
    whole = [metric.name for metric in metrics if _takes_any_lengths(metric.spec)]
    parts = []
    if trimmed:
        parts.append(f"{', '.join(trimmed)} scored both trimmed to the shorter, {shorter}")
    if whole:
        parts.append(f"{', '.join(whole)} scored the files as they are")
    return f"{lengths}: {'; '.join(parts)}"


def score_pair(
    reference_path: str | os.PathLike,
    degraded_path: str | os.PathLike,
    metrics: tuple[BoundMetric, ...],
    transcript: str | None = None,
    trim: bool = False,
) -> PairScores:
    """Score two files with audio metrics; never raises for bad audio (NaN plus reason).

    Files of different lengths are scored as the module docstring says; ``trim`` scores
    a pair beyond :func:`length_tolerance` on its common part instead of refusing it.
    """
    result = PairScores(str(reference_path), str(degraded_path), {}, {}, [])
    try:
        reference = bench_audio.load_audio(reference_path)
        degraded = bench_audio.load_audio(degraded_path)
        degraded_audio, result.notes = _converted(reference, degraded)
    except bench_audio.AudioError as error:
        return result.fail(metrics, f"input: {error}")
    rate = reference.sample_rate
    common = None
    refusal = None
    want, have = reference.audio.shape[-1], degraded_audio.shape[-1]
    if want != have:
        difference, tolerance = abs(want - have), length_tolerance(want, rate)
        beyond = difference > tolerance
        lengths = (
            f"lengths differ: reference {want}, degraded {have} samples at {rate} Hz "
            f"({1000 * difference / rate:.1f} ms, {100 * difference / want:.2f} %), "
            f"{'beyond' if beyond else 'within'} the tolerance of {tolerance} samples "
            "(20 ms or 1 % of the reference, whichever is larger)"
        )
        if beyond and not trim:
            refusal = f"{lengths}; check the pair, or pass --trim to score its common part"
        else:
            common = min(want, have)
            result.notes.append(_length_note(metrics, lengths, common))
    item = Item(id=Path(degraded_path).stem, path=Path(degraded_path), transcript=transcript)
    # Each pair's signals are resampled once per rate, across the metrics that take it
    # (grouped by rate: see scoring_order). The signals are handed over, so that a long
    # pair's memory is freed while the metrics at other rates run.
    whole = ItemSignals(reference.audio, degraded_audio, rate)
    trimmed = whole
    if common is not None:
        trimmed = ItemSignals(reference.audio[:, :common], degraded_audio[:, :common], rate)
    del reference, degraded, degraded_audio
    outcomes: dict[str, MetricOutcome] = {}
    with whole, trimmed:
        for metric in scoring_order(metrics):
            if refusal and metric.spec.needs_reference:
                outcomes[metric.name] = MetricOutcome.failed(metric, refusal)
            else:
                signals = whole if _takes_any_lengths(metric.spec) else trimmed
                outcomes[metric.name] = score_metric(metric, item, signals)
    for metric in metrics:  # reported in the requested order
        outcome = outcomes[metric.name]
        for name, value in outcome.values.items():
            result.values[name] = value if math.isfinite(value) else None
            if outcome.failure:
                result.failures[name] = outcome.failure
        if outcome.note:
            result.notes.append(f"{metric.name}: {outcome.note}")
        if outcome.counts is not None:
            result.counts[metric.name] = outcome.counts
    return result


AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")


def _audio_files(folder: Path) -> dict[str, Path]:
    """Audio files below ``folder`` keyed by relative path without extension."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
            files[path.relative_to(folder).with_suffix("").as_posix()] = path
    return files


def pair_paths(reference: str | os.PathLike, degraded: str | os.PathLike) -> list[tuple]:
    """``(reference, degraded)`` pairs: two files, or two folders paired by relative path
    (extensions may differ, so ``a/x.flac`` pairs with ``a/x.wav``). A file present on one
    side only is paired with ``None``."""
    reference, degraded = Path(reference), Path(degraded)
    for path in (reference, degraded):
        if not path.exists():
            raise ValueError(f"expected an audio file or a folder, got a missing path: {path}")
    if reference.is_dir() != degraded.is_dir():
        raise ValueError(f"expected two files or two folders, got {reference} and {degraded}")
    if not reference.is_dir():
        return [(reference, degraded)]
    references, degradeds = _audio_files(reference), _audio_files(degraded)
    if not references:
        raise ValueError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {reference}")
    keys = sorted(set(references) | set(degradeds))
    return [(references.get(key), degradeds.get(key)) for key in keys]


def _sidecar_transcript(path: Path) -> str | None:
    sidecar = path.with_suffix(".txt")
    return sidecar.read_text().strip() or None if sidecar.is_file() else None


def _score_one(
    job: tuple[Path | None, Path | None, tuple[BoundMetric, ...], bool],
) -> PairScores:
    reference, degraded, metrics, trim = job
    if reference is None or degraded is None:
        missing = "reference" if reference is None else "degraded"
        # The missing side stays None, which JSON writes as null (str() gave "None").
        paths = [str(path) if path is not None else None for path in (reference, degraded)]
        result = PairScores(*paths, {}, {}, [])
        return result.fail(metrics, f"input: no {missing} file to pair with")
    return score_pair(reference, degraded, metrics, _sidecar_transcript(reference), trim)


def score_paths(
    reference: str | os.PathLike,
    degraded: str | os.PathLike,
    metrics: tuple[BoundMetric, ...],
    workers: int = 1,
    trim: bool = False,
) -> list[PairScores]:
    """Score two files or two folders (see :func:`pair_paths`) with audio metrics.

    A reference's sidecar ``.txt`` is its transcript (for WER). Pairs are scored in a
    process pool when ``workers > 1``; results keep the pairing order. ``trim``: see
    :func:`score_pair`.
    """
    run_only = [metric.name for metric in metrics if not metric.spec.scores_files]
    if run_only:
        raise ValueError(
            f"{', '.join(run_only)} measure a codec run and cannot score files; "
            "choose audio metrics (see `bench metrics`)"
        )
    jobs = [(ref, deg, metrics, trim) for ref, deg in pair_paths(reference, degraded)]
    if workers == 1 or len(jobs) == 1:
        with pinned_threads():
            return [_score_one(job) for job in jobs]
    with process_pool(workers) as pool:
        return list(pool.map(_score_one, jobs))


def mean_scores(
    pairs: list[PairScores], metrics: tuple[BoundMetric, ...]
) -> dict[str, float | None]:
    """Each metric over the pairs that scored it (``None`` if none did): the mean, or for a
    ratio metric (WER) the ratio of its counts summed over the pairs."""
    ratios = {metric.name: metric.spec.aggregation for metric in metrics}
    means = {}
    for name in dict.fromkeys(name for pair in pairs for name in pair.values):
        values = [value for pair in pairs if (value := pair.values.get(name)) is not None]
        ratio = ratios.get(name)
        if ratio is not None and values:
            counts = [pair.counts[name] for pair in pairs if pair.values.get(name) is not None]
            numerator = sum(count[ratio.numerator] for count in counts)
            means[name] = numerator / sum(count[ratio.denominator] for count in counts)
        else:
            means[name] = statistics.fmean(values) if values else None
    return means

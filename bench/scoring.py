"""Scoring a (reference, degraded) pair with registered metrics, for sweeps and `bench score`.

Every metric call goes through :func:`score_metric`: its options are checked, its
per-process set-up (model loading, JIT compilation) runs once and untimed, both signals
are brought to the metric's rate by ``bench.audio``, and any failure becomes NaN with a
reason instead of an exception or a substitute value.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench import audio as bench_audio
from bench.data.item import Item
from bench.metrics import CannotScore, MetricSpec, Score, get_metric, metric_names
from bench.parallel import pinned_threads, process_pool
from bench.store import content_key


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

    def cache_key(self, decoded_key: str) -> str:
        """Keys a value by the decoded audio and everything that defines the metric."""
        return content_key(
            {
                "decoded": decoded_key,
                "metric": self.spec.name,
                "version": self.spec.version,
                "backend": self.spec.backend,
                "backend_version": self.backend_version,
                "sample_rate": self.spec.sample_rate,
                "options": self.options,
            }
        )


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
    """One metric's result on one item: values (NaN on failure), reason, note, seconds."""

    values: dict[str, float]
    failure: str | None
    note: str | None
    seconds: float
    cacheable: bool = True

    def to_cache(self) -> dict:
        return {
            "values": self.values,
            "failure": self.failure,
            "note": self.note,
            "seconds": self.seconds,
        }

    @classmethod
    def from_cache(cls, entry: dict) -> MetricOutcome:
        return cls(entry["values"], entry["failure"], entry.get("note"), entry["seconds"])

    @classmethod
    def failed(cls, metric: BoundMetric, reason: str, cacheable: bool = True) -> MetricOutcome:
        return cls({metric.name: math.nan}, reason, None, 0.0, cacheable)


_SET_UP: set[tuple] = set()


def ensure_set_up(metric: BoundMetric) -> None:
    """Run the metric's per-process set-up once (untimed): load models, compile kernels."""
    key = (metric.name, tuple(sorted(metric.options.items())))
    if metric.spec.setup is not None and key not in _SET_UP:
        metric.spec.setup(**metric.options)
    _SET_UP.add(key)


def _values(spec: MetricSpec, result: float | dict[str, float]) -> dict[str, float]:
    if isinstance(result, dict):
        return {f"{spec.name}.{key}": float(value) for key, value in result.items()}
    return {spec.name: float(result)}


def scoring_order(metrics: tuple[BoundMetric, ...]) -> list[BoundMetric]:
    """The metrics grouped by working rate, the order in which to score one item.

    :func:`score_metric` holds both signals at one metric rate at a time, so metrics that
    share a rate should follow each other: each rate's signals are then made once.
    """
    return sorted(metrics, key=lambda metric: metric.spec.sample_rate or 0)


def score_metric(
    metric: BoundMetric,
    item: Item,
    reference: torch.Tensor,
    degraded: torch.Tensor,
    sample_rate: int,
    resampled: dict[int, tuple[torch.Tensor, torch.Tensor]],
) -> MetricOutcome:
    """Score one audio metric on ``(channels, samples)`` signals at ``sample_rate``.

    ``resampled`` memoises both signals at the last metric rate other than
    ``sample_rate`` for the next metric of the item (see :func:`scoring_order`).
    """
    spec = metric.spec
    if spec.needs_transcript and not item.transcript:
        return MetricOutcome.failed(metric, "no transcript for this item")
    duration = reference.shape[-1] / sample_rate
    if spec.max_seconds is not None and duration > spec.max_seconds:
        # Not cached: the limit is not part of the cache key, and refusing costs nothing.
        return MetricOutcome.failed(
            metric,
            f"too long for {spec.name}: {duration:.1f} s, it scores items of at most "
            f"{spec.max_seconds:g} s ({spec.max_seconds_reason}); crop with --max-seconds",
            cacheable=False,
        )
    try:
        ensure_set_up(metric)
    except Exception as error:  # noqa: BLE001 - a broken backend fails its metric only
        return MetricOutcome.failed(
            metric, f"set-up failed: {type(error).__name__}: {error}", cacheable=False
        )
    start = time.perf_counter()
    rate = spec.sample_rate or sample_rate
    # Bringing both signals to the metric's rate is part of scoring it; the result is
    # shared with later metrics at the same rate. Only one rate is held: a long item's
    # signals at every metric rate would take several times the memory of the item.
    if rate == sample_rate:
        metric_reference, metric_degraded = reference, degraded
    else:
        if rate not in resampled:
            resampled.clear()
            resampled[rate] = (
                bench_audio.resample(reference, sample_rate, rate),
                bench_audio.resample(degraded, sample_rate, rate),
            )
        metric_reference, metric_degraded = resampled[rate]
    note = None
    try:
        result = spec.function(metric_reference, metric_degraded, rate, item, **metric.options)
        if isinstance(result, Score):
            result, note = result.value, result.note
        outcome = MetricOutcome(_values(spec, result), None, note, 0.0)
    except CannotScore as reason:
        outcome = MetricOutcome.failed(metric, str(reason))
    except Exception as error:  # noqa: BLE001 - one broken metric must not stop the run
        # Unexpected errors may be transient (memory, a backend hiccup): not cached.
        outcome = MetricOutcome.failed(metric, f"{type(error).__name__}: {error}", False)
    outcome.seconds = time.perf_counter() - start
    if outcome.failure is None and any(not math.isfinite(v) for v in outcome.values.values()):
        outcome.failure = "the metric returned a non-finite value"
    return outcome


@dataclass
class PairScores:
    """The scores of one reference/degraded pair, as `bench score` prints them."""

    reference: str
    degraded: str
    values: dict[str, float | None]
    failures: dict[str, str]
    notes: list[str]

    def as_json(self) -> dict:
        return {
            "reference": self.reference,
            "degraded": self.degraded,
            "values": self.values,
            "failures": self.failures,
            "notes": self.notes,
        }


def _aligned(
    reference: bench_audio.LoadedAudio, degraded: bench_audio.LoadedAudio
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Bring the degraded signal to the reference's rate and channels; trim to the shorter."""
    notes = [f"reference: {note}" for note in reference.notes]
    notes += [f"degraded: {note}" for note in degraded.notes]
    converted, prepare_notes = bench_audio.prepare(
        degraded, reference.sample_rate, reference.audio.shape[0]
    )
    notes += [f"degraded: {note}" for note in prepare_notes[len(degraded.notes) :]]
    reference_audio = reference.audio
    have, want = converted.shape[-1], reference_audio.shape[-1]
    if have != want:
        shorter = min(have, want)
        notes.append(
            f"lengths differ (reference {want}, degraded {have} samples at "
            f"{reference.sample_rate} Hz): both trimmed to the shorter, {shorter}"
        )
        reference_audio, converted = reference_audio[:, :shorter], converted[:, :shorter]
    return reference_audio, converted, notes


def score_pair(
    reference_path: str | os.PathLike,
    degraded_path: str | os.PathLike,
    metrics: tuple[BoundMetric, ...],
    transcript: str | None = None,
) -> PairScores:
    """Score two files with audio metrics; never raises for bad audio (NaN plus reason)."""
    result = PairScores(str(reference_path), str(degraded_path), {}, {}, [])
    try:
        reference = bench_audio.load_audio(reference_path)
        degraded = bench_audio.load_audio(degraded_path)
        reference_audio, degraded_audio, result.notes = _aligned(reference, degraded)
    except bench_audio.AudioError as error:
        for metric in metrics:
            result.values[metric.name] = None
            result.failures[metric.name] = f"input: {error}"
        return result
    item = Item(id=Path(degraded_path).stem, path=Path(degraded_path), transcript=transcript)
    resampled: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    outcomes = {
        metric.name: score_metric(
            metric, item, reference_audio, degraded_audio, reference.sample_rate, resampled
        )
        for metric in scoring_order(metrics)
    }
    for metric in metrics:  # reported in the requested order
        outcome = outcomes[metric.name]
        for name, value in outcome.values.items():
            result.values[name] = value if math.isfinite(value) else None
            if outcome.failure:
                result.failures[name] = outcome.failure
        if outcome.note:
            result.notes.append(f"{metric.name}: {outcome.note}")
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


def _score_one(job: tuple[Path | None, Path | None, tuple[BoundMetric, ...]]) -> PairScores:
    reference, degraded, metrics = job
    if reference is None or degraded is None:
        missing = "reference" if reference is None else "degraded"
        result = PairScores(str(reference), str(degraded), {}, {}, [])
        for metric in metrics:
            result.values[metric.name] = None
            result.failures[metric.name] = f"input: no {missing} file to pair with"
        return result
    return score_pair(reference, degraded, metrics, _sidecar_transcript(reference))


def score_paths(
    reference: str | os.PathLike,
    degraded: str | os.PathLike,
    metrics: tuple[BoundMetric, ...],
    workers: int = 1,
) -> list[PairScores]:
    """Score two files or two folders (see :func:`pair_paths`) with audio metrics.

    A reference's sidecar ``.txt`` is its transcript (for WER). Pairs are scored in a
    process pool when ``workers > 1``; results keep the pairing order.
    """
    coding = [metric.name for metric in metrics if metric.spec.inputs == "coding"]
    if coding:
        raise ValueError(
            f"{', '.join(coding)} measure a codec run and cannot score files; "
            "choose audio metrics (see `bench metrics`)"
        )
    jobs = [(ref, deg, metrics) for ref, deg in pair_paths(reference, degraded)]
    if workers == 1 or len(jobs) == 1:
        with pinned_threads():
            return [_score_one(job) for job in jobs]
    with process_pool(workers) as pool:
        return list(pool.map(_score_one, jobs))

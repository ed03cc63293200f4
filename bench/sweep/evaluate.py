"""Evaluating one task: load and prepare the item, code and decode it once, score every
requested metric; and the per-process state a worker keeps between tasks.

An :class:`Evaluator` holds the codecs it built, the warm-up state and the last prepared
input. It returns what it computed, records and the listening audio alike, and writes
nothing but the shared cache, whose entries are content-addressed: two workers writing one
key write the same bytes. Every failure becomes records with NaN and a reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from bench import audio as bench_audio
from bench.codecs.base import Codec, Encoded
from bench.registry import create_codec
from bench.scoring import (
    BoundMetric,
    ItemSignals,
    MetricOutcome,
    bind_metrics,
    map_large_blocks,
    score_metric,
    scoring_order,
)
from bench.store import Cache, content_key
from bench.sweep.plan import Condition, Task
from bench.sweep.records import Decoding, Record, task_records

WARM_UP_SECONDS = 0.5


@dataclass(frozen=True)
class ListeningAudio:
    """The first ``bench.audio.LISTENING_SECONDS`` of a decoded item, for the run's
    listening copy, which the driver writes."""

    audio: np.ndarray  # float32, (channels, samples)
    sample_rate: int

    @classmethod
    def excerpt(cls, decoded: torch.Tensor, sample_rate: int) -> ListeningAudio:
        samples = int(bench_audio.LISTENING_SECONDS * sample_rate)
        return cls(decoded[:, :samples].numpy().copy(), sample_rate)


@dataclass
class TaskResult:
    """A task's records plus the seconds spent inside codec and metric calls."""

    task: Task
    records: list[Record]
    codec_seconds: float = 0.0
    metric_seconds: float = 0.0
    # Cache entries that failed their check and were recomputed (see Cache.discarded).
    discarded_cache_entries: set[str] = field(default_factory=set)
    # The decoded audio, when the task keeps it for listening (Task.keep_audio).
    listening: ListeningAudio | None = None


def _failure_records(task: Task, metrics: tuple[BoundMetric, ...], reason: str) -> list[Record]:
    records = []
    for metric in metrics:
        records += task_records(task, metric, MetricOutcome.failed(metric, reason), None)
    return records


def _coding_records(
    task: Task, metric: BoundMetric, decoding: Decoding, from_cache: bool
) -> list[Record]:
    outcome = MetricOutcome({metric.name: metric.spec.function(decoding)}, None, None, 0.0)
    return task_records(task, metric, outcome, decoding, from_cache)


class Evaluator:
    """Runs tasks in one process, holding its codec instances and warm-up state."""

    def __init__(self, cache: Cache | None) -> None:
        self.cache = cache
        self._codecs: dict[str, Codec] = {}
        self._warmed: set[tuple] = set()
        self._bound: dict[str, tuple[BoundMetric, ...]] = {}
        # Tasks arrive item by item, so the last prepared input is usually the next one's.
        self._last_input: tuple[tuple, tuple[torch.Tensor, tuple[str, ...], bool]] | None = None
        # The task's bitstream by decoded key, while metrics on tokens need it.
        self._last_encoded: tuple[str, Encoded] | None = None

    @staticmethod
    def _codec_key(condition: Condition) -> str:
        return content_key({"codec": condition.codec, "options": condition.options})

    def codec(self, condition: Condition) -> Codec:
        key = self._codec_key(condition)
        if key not in self._codecs:
            self._codecs[key] = create_codec(condition.codec, **condition.options)
        return self._codecs[key]

    def _warm_up(self, codec: Codec, condition: Condition) -> None:
        # The first call of a codec pays for lazy initialisation (allocations, JIT,
        # library loading); run it untimed so RTF reflects steady-state speed. Keyed by the
        # codec object's options too: two checkpoints of one codec are two codecs to warm.
        key = (self._codec_key(condition), condition.bitrate, condition.nfe)
        if key in self._warmed:
            return
        generator = torch.Generator().manual_seed(0)
        samples = int(WARM_UP_SECONDS * codec.sample_rate)
        noise = 0.01 * torch.randn(codec.channels, samples, generator=generator)
        codec.decode(codec.encode(noise, condition.bitrate), condition.nfe, condition.seed)
        self._warmed.add(key)

    def metrics(self, task: Task) -> tuple[BoundMetric, ...]:
        key = content_key({"metrics": task.metrics, "options": task.metric_options})
        if key not in self._bound:
            self._bound[key] = bind_metrics(task.metrics, task.metric_options)
        return self._bound[key]

    def _cached_decoding(self, key: str) -> Decoding | None:
        """The cached facts of a decode, or ``None`` if there are none."""
        meta = self.cache.decoded_meta(key) if self.cache is not None else None
        return None if meta is None else self._decoding(key, meta)

    def _decoding(self, key: str, meta: dict) -> Decoding | None:
        """The facts in a decoded entry's metadata; an entry of an older layout is discarded
        (and counted), to be decoded again."""
        try:
            return Decoding.from_json(meta)
        except ValueError:
            self.cache.discard_decoded(key)
            return None

    def cached_result(self, task: Task) -> TaskResult | None:
        """The task's records from the cache alone, or ``None`` if anything is missing."""
        if self.cache is None or task.input_hash is None:
            return None
        decoding = self._cached_decoding(task.decoded_key)
        if decoding is None:
            return None
        listening = None
        if task.keep_audio:
            decoded = self.cache.get_decoded(task.decoded_key)
            if decoded is None:
                return None
            listening = ListeningAudio.excerpt(torch.from_numpy(decoded[0]), decoding.sample_rate)
        records = []
        for metric in self.metrics(task):
            if metric.spec.inputs == "coding":
                records += _coding_records(task, metric, decoding, from_cache=True)
                continue
            entry = self.cache.get_metric(metric.cache_key(task.decoded_key, task.item))
            if entry is None:
                return None
            outcome = MetricOutcome.from_cache(entry)
            records += task_records(task, metric, outcome, decoding, decoded_from_cache=True)
        return TaskResult(task, records, listening=listening)

    def _decode(
        self, task: Task, codec: Codec, reference: torch.Tensor, notes: tuple[str, ...]
    ) -> tuple[torch.Tensor, Decoding, bool, float]:
        """Decoded audio and its facts, from the cache or by running the codec."""
        cached = self.cache.get_decoded(task.decoded_key) if self.cache is not None else None
        decoding = None if cached is None else self._decoding(task.decoded_key, cached[1])
        if decoding is not None:
            return torch.from_numpy(cached[0]), decoding, True, 0.0
        condition = task.condition
        self._warm_up(codec, condition)
        start = time.perf_counter()
        encoded = codec.encode(reference, condition.bitrate)
        encode_seconds = time.perf_counter() - start
        if any(metric.spec.needs_codes for metric in self.metrics(task)):
            # Kept only for metrics on tokens: the identity codec's payload is the signal.
            self._last_encoded = (task.decoded_key, encoded)
        start = time.perf_counter()
        decoded = codec.decode(encoded, condition.nfe, condition.seed)
        decode_seconds = time.perf_counter() - start
        decoding = Decoding(
            encode_seconds=encode_seconds,
            decode_seconds=decode_seconds,
            audio_seconds=encoded.duration_seconds,
            kbps_nominal=encoded.nominal_kbps,
            kbps_actual=encoded.actual_kbps,
            payload_bytes=len(encoded.payload),
            sample_rate=codec.sample_rate,
            input_notes=tuple(notes),
        )
        if self.cache is not None:
            self.cache.put_decoded(
                task.decoded_key, decoded.numpy(), encoded.payload, decoding.to_json()
            )
        return decoded, decoding, False, encode_seconds + decode_seconds

    def _encoded(self, task: Task, codec: Codec, reference: torch.Tensor) -> Encoded:
        """The task's bitstream, for a metric on tokens: the one just made, or, where the
        decoded audio came from the cache, the input encoded again (untimed, once per
        task). Encoding depends only on what the decoded key holds: the same bitstream."""
        if self._last_encoded is None or self._last_encoded[0] != task.decoded_key:
            encoded = codec.encode(reference, task.condition.bitrate)
            self._last_encoded = (task.decoded_key, encoded)
        return self._last_encoded[1]

    def _score(
        self,
        task: Task,
        metric: BoundMetric,
        codec: Codec,
        signals: ItemSignals,
        cropped: bool,
    ) -> MetricOutcome:
        """Score one metric of the task; a metric on tokens gets the task's bitstream."""
        encoded = None
        if metric.spec.needs_codes:
            try:
                encoded = self._encoded(task, codec, signals.pair()[0])
            except Exception as error:  # noqa: BLE001 - a codec failure must not stop the run
                reason = f"codec: {type(error).__name__}: {error}"
                return MetricOutcome.failed(metric, reason, cacheable=False)
        return score_metric(metric, task.item, signals, cropped=cropped, encoded=encoded)

    def _prepared_input(
        self, task: Task, codec: Codec
    ) -> tuple[torch.Tensor, tuple[str, ...], bool]:
        """The item at the codec's rate and channel count, the notes on how it changed, and
        whether it was cropped (shorter than its file).

        Raises :class:`bench.audio.AudioError` for an input that cannot be evaluated.
        """
        key = (task.item.path, task.input_hash, codec.sample_rate, codec.channels, task.max_seconds)
        if self._last_input is None or self._last_input[0] != key:
            loaded = bench_audio.load_audio(task.item.path, task.max_seconds)
            audio, notes = bench_audio.prepare(
                loaded, codec.sample_rate, codec.channels, task.max_seconds
            )
            cropped = bench_audio.crops(loaded, task.max_seconds)
            self._last_input = (key, (audio, notes, cropped))
        return self._last_input[1]

    def take_discarded(self) -> set[str]:
        """The cache entries found bad since the last call (they are recomputed)."""
        if self.cache is None:
            return set()
        discarded, self.cache.discarded = self.cache.discarded, set()
        return discarded

    def evaluate(self, task: Task) -> TaskResult:
        """Run one task; every failure becomes NaN records with a reason, never an exception."""
        result = self._evaluate(task)
        result.discarded_cache_entries = self.take_discarded()
        return result

    def _evaluate(self, task: Task) -> TaskResult:
        self._last_encoded = None  # the previous task's
        metrics = self.metrics(task)
        codec = self.codec(task.condition)
        try:
            reference, notes, cropped = self._prepared_input(task, codec)
        except bench_audio.AudioError as error:
            return TaskResult(task, _failure_records(task, metrics, f"input: {error}"))
        try:
            decoded, decoding, from_cache, codec_seconds = self._decode(
                task, codec, reference, notes
            )
        except Exception as error:  # noqa: BLE001 - a codec failure must not stop the run
            reason = f"codec: {type(error).__name__}: {error}"
            return TaskResult(task, _failure_records(task, metrics, reason))
        listening = ListeningAudio.excerpt(decoded, codec.sample_rate) if task.keep_audio else None
        result = TaskResult(task, [], codec_seconds=codec_seconds, listening=listening)
        signals = ItemSignals(reference, decoded, codec.sample_rate)
        # The signals are handed over: a long item's pair then leaves memory while the
        # metrics at other rates run, and its input is prepared again for its next task.
        del reference, decoded
        if signals.spills:
            self._last_input = None
        with signals:
            for metric in scoring_order(metrics):
                if metric.spec.inputs == "coding":
                    result.records += _coding_records(task, metric, decoding, from_cache)
                    continue
                key = metric.cache_key(task.decoded_key, task.item)
                entry = self.cache.get_metric(key) if self.cache is not None else None
                if entry is None:
                    outcome = self._score(task, metric, codec, signals, cropped)
                    result.metric_seconds += outcome.seconds
                    if self.cache is not None and outcome.cacheable:
                        self.cache.put_metric(key, outcome.to_cache())
                else:
                    outcome = MetricOutcome.from_cache(entry)
                result.records += task_records(task, metric, outcome, decoding, from_cache)
        # Records in the requested order of metrics, whatever order they were scored in.
        position = {metric.name: index for index, metric in enumerate(metrics)}
        result.records.sort(key=lambda record: position[record.metric_family])
        return result


# The evaluator of a worker process, set up once by the executor (see bench.executors).
_WORKER: Evaluator | None = None


def start_worker(cache_root: str | None) -> None:
    global _WORKER
    # A long item's blocks then leave memory when freed (see map_large_blocks).
    map_large_blocks()
    _WORKER = Evaluator(Cache(cache_root) if cache_root else None)


def stop_worker() -> None:
    """Drop the worker's evaluator and the codecs and models it holds (inline executor)."""
    global _WORKER
    _WORKER = None


def evaluate_in_worker(task: Task) -> TaskResult:
    if _WORKER is None:
        raise RuntimeError("the worker's evaluator is not set up: start_worker() first")
    return _WORKER.evaluate(task)

"""Plan and execute a sweep: codec x bitrate x nfe x seed x item -> result rows.

Each (condition, item) pair is one task: load the item, prepare it for the codec
(``bench.audio``), encode and decode once, then score every requested metric. Tasks
run inline or in a process pool; the parent process alone writes ``results.jsonl``, one
flushed block per finished task, so a killed run resumes where it stopped. Decoded
audio and metric values are looked up in the content-addressed cache first, so an
identical second run only reads the cache and adding a metric never re-decodes.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import soundfile
import torch
from tqdm import tqdm

from bench import audio as bench_audio
from bench.codecs.base import Codec, Encoded
from bench.data import Dataset, Item, load_dataset
from bench.metrics import CodingStats
from bench.parallel import THREADS_PER_WORKER, pinned_threads, process_pool
from bench.provenance import backend_versions, device_fingerprint, git_state
from bench.registry import CODECS, create_codec
from bench.scoring import BoundMetric, MetricOutcome, bind_metrics, score_metric, scoring_order
from bench.store import DEFAULT_CACHE_DIR, Cache, RunStore, content_key, writable_folder

# Bump when the preparation of inputs (loading, resampling, cropping) changes, so that
# cached decodes made from the old inputs are not reused.
PREPARATION_VERSION = 1
WARM_UP_SECONDS = 0.5


@dataclass(frozen=True)
class SweepSettings:
    """Everything that determines a run's results (output locations excluded).

    ``bitrates=None`` sweeps every bitrate of each codec; ``codec_bitrates`` gives some
    codecs bitrates of their own (a suite mixes Opus at 6 kbps with MP3 at 32 kbps);
    ``nfes`` applies to iterative decoders only; ``metrics=None`` scores every registered
    metric; ``metric_options`` maps a metric to its options (``{"wer": {"model": "PATH"}}``).
    """

    codecs: tuple[str, ...]
    bitrates: tuple[float, ...] | None = None
    nfes: tuple[int, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    data: str = "embedded"
    limit: int | None = None
    max_seconds: float | None = None
    tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    metrics: tuple[str, ...] | None = None
    metric_options: dict[str, dict[str, str]] = field(default_factory=dict)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    codec_bitrates: dict[str, tuple[float, ...]] = field(default_factory=dict)
    items: tuple[str, ...] | None = None
    # Constructor options per codec, e.g. {"encodec": {"checkpoint": "x.pt"}}.
    codec_options: dict[str, dict] = field(default_factory=dict)
    # Items whose reference and decoded audio the run keeps for the report's listening section.
    listening_items: int = 3

    def __post_init__(self) -> None:
        if not self.codecs:
            raise ValueError("expected at least one codec, got none")
        if self.workers < 1:
            raise ValueError(f"expected --workers >= 1, got {self.workers}")
        # A crop shorter than the shortest scorable input would be scored anyway (the
        # length check runs on the whole file), with bitrates inflated by frame overhead.
        shortest = bench_audio.MIN_DURATION_SECONDS
        if self.max_seconds is not None and not (
            math.isfinite(self.max_seconds) and self.max_seconds >= shortest
        ):
            raise ValueError(
                f"expected --max-seconds to be a finite number of at least "
                f"{shortest:g} s (the shortest input that can be "
                f"scored), got {self.max_seconds!r}"
            )
        for name in ("codecs", "bitrates", "nfes", "seeds", "metrics", "items", "tags"):
            refuse_duplicates(getattr(self, name) or (), name)
        refuse_duplicates(self.exclude_tags, "exclude_tags")
        for codec, bitrates in self.codec_bitrates.items():
            refuse_duplicates(bitrates, f"the bitrates of {codec}")
        if not self.seeds:
            raise ValueError("expected at least one seed, got none")
        if self.listening_items < 0:
            raise ValueError(f"expected listening items >= 0, got {self.listening_items}")
        unknown = (set(self.codec_bitrates) | set(self.codec_options)) - set(self.codecs)
        if unknown:
            raise ValueError(
                f"bitrates or options given for codecs not in the sweep: {sorted(unknown)}; "
                f"codecs: {list(self.codecs)}"
            )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SweepSettings:
        def as_tuple(name: str, value):
            # tuple("opus") would be a sweep over the codecs "o", "p", "u" and "s".
            if isinstance(value, str):
                raise ValueError(f"{name}: expected a list, got the string {value!r}")
            return None if value is None else tuple(value)

        return cls(
            **{
                **data,
                **{
                    name: as_tuple(name, data.get(name))
                    for name in ("codecs", "bitrates", "nfes", "seeds", "metrics", "items")
                    if name in data  # a suite file may leave out what has a default
                },
                "tags": as_tuple("tags", data.get("tags", ())),
                "metric_options": data.get("metric_options", {}),
                "exclude_tags": as_tuple("exclude_tags", data.get("exclude_tags", ())),
                "codec_options": data.get("codec_options", {}),
                "codec_bitrates": {
                    name: tuple(float(bitrate) for bitrate in bitrates)
                    for name, bitrates in data.get("codec_bitrates", {}).items()
                },
            }
        )


@dataclass(frozen=True)
class Condition:
    """One point of the sweep grid, applied to every item."""

    codec: str
    bitrate: float
    nfe: int | None
    seed: int


@dataclass(frozen=True)
class Task:
    """One (condition, item) pair, self-contained so it can be sent to a worker."""

    condition: Condition
    item: Item
    input_hash: str | None
    decoded_key: str
    metrics: tuple[str, ...]
    max_seconds: float | None
    metric_options: dict[str, dict[str, str]] = field(default_factory=dict)
    # Where to keep the decoded audio for the report's listening section, if anywhere.
    listening_path: str | None = None
    codec_options: dict = field(default_factory=dict)

    @property
    def identity(self) -> tuple:
        return task_identity(
            self.condition.codec,
            self.condition.bitrate,
            self.condition.nfe,
            self.condition.seed,
            self.item.id,
        )


def task_identity(codec: str, bitrate: float, nfe: int | None, seed: int, item: str) -> tuple:
    return (codec, float(bitrate), nfe, int(seed), item)


@dataclass
class TaskResult:
    """Rows of one task plus the seconds spent inside codec and metric calls."""

    rows: list[dict]
    codec_seconds: float = 0.0
    metric_seconds: float = 0.0
    # Cache entries that failed their check and were recomputed (see Cache.discarded).
    discarded_cache_entries: set[str] = field(default_factory=set)


@dataclass
class RunSummary:
    """What a finished (or resumed) run did, for the CLI and the benchmarks."""

    run_dir: Path
    tasks_total: int
    tasks_resumed: int
    tasks_from_cache: int
    tasks_computed: int
    failures: int
    wall_seconds: float
    codec_seconds: float
    metric_seconds: float
    # Cache entries that failed their digest check (corrupt or an older format), recomputed.
    bad_cache_entries: int = 0


def refuse_duplicates(values: Iterable, option: str) -> None:
    """Raise ``ValueError`` if a value repeats: each repeat would write duplicate rows."""
    seen = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{option}: expected each value once, got {value!r} more than once")
        seen.add(value)


def parse_list(text: str, kind: type, option: str) -> tuple:
    """Parse ``"1.5,3,6"`` into a tuple of ``kind``; raise ``ValueError`` naming the option.

    Numbers must be finite and no value may repeat.
    """
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = kind(part)
        except ValueError:
            raise ValueError(
                f"{option}: expected comma-separated {kind.__name__} values, got {part!r}"
            ) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{option}: expected finite numbers, got {part!r}")
        values.append(value)
    if not values:
        raise ValueError(f"{option}: expected at least one value, got {text!r}")
    refuse_duplicates(values, option)
    return tuple(values)


@dataclass(frozen=True)
class Plan:
    """The condition grid, and the requested (codec, bitrate) pairs left out of it."""

    conditions: list[Condition]
    # {"codec", "bitrate", "supported"} for each requested bitrate a codec lacks.
    skipped: list[dict] = field(default_factory=list)


def format_kbps(values: Iterable[float]) -> str:
    """Bitrates as "1.5, 6": repr, not :g, so that 6 and 6.0000001 read differently."""
    return ", ".join(repr(float(value)).removesuffix(".0") for value in values)


def _codec_bitrates(
    name: str, codec: Codec, settings: SweepSettings
) -> tuple[tuple[float, ...], list[dict]]:
    """The codec's own values of the bitrates to run, and the requested ones it lacks.

    Bitrates given for this codec alone must all be supported; of the bitrates given for
    every codec, each codec runs those it supports, and lacking all of them is an error,
    except for a codec of one fixed bitrate run beside others, which runs at that one.
    """
    own_bitrates = settings.codec_bitrates.get(name)
    if own_bitrates is None and settings.bitrates is None:
        return tuple(codec.bitrates), []
    requested = settings.bitrates if own_bitrates is None else own_bitrates
    matched: dict[float, float] = {}  # the codec's value -> the requested value matching it
    skipped = []
    for bitrate in requested:
        try:
            value = codec.check_bitrate(bitrate)
        except ValueError:
            if own_bitrates is not None:
                raise
            skipped.append({"codec": name, "bitrate": bitrate, "supported": list(codec.bitrates)})
            continue
        if value in matched:
            raise ValueError(
                f"bitrates {format_kbps([matched[value], bitrate])} both match {name}'s "
                f"{format_kbps([value])} kbps; expected each bitrate once"
            )
        matched[value] = bitrate
    if not matched and len(codec.bitrates) == 1 and len(settings.codecs) > 1:
        # A fixed-rate condition beside rate-swept codecs (the identity reference, a MUSHRA
        # anchor) has nothing to sweep: the requested rates are the other codecs', so it
        # runs at its one rate, and the skipped note says which that is.
        return tuple(codec.bitrates), skipped
    if not matched:
        raise ValueError(
            f"codec '{name}' supports none of the requested bitrates "
            f"({format_kbps(requested)} kbps); supported bitrates (kbps): "
            f"{format_kbps(codec.bitrates)}. "
            f"Give it bitrates of its own, e.g. --codec {name}:{format_kbps(codec.bitrates[:1])}"
        )
    return tuple(matched), skipped


def plan(settings: SweepSettings, codecs: dict[str, Codec]) -> Plan:
    """The condition grid; raises ``ValueError`` naming valid values for bad choices."""
    conditions = []
    skipped = []
    iterative = [name for name, codec in codecs.items() if codec.nfe_options is not None]
    if settings.nfes is not None and not iterative:
        raise ValueError(
            f"--nfe applies to iterative decoders only; {', '.join(codecs)} "
            "decode in one shot. Drop --nfe or add an iterative codec."
        )
    for name, codec in codecs.items():
        bitrates, skipped_here = _codec_bitrates(name, codec, settings)
        skipped += skipped_here
        if codec.nfe_options is None:
            nfes: tuple[int | None, ...] = (None,)
        else:
            nfes = settings.nfes or (max(codec.nfe_options),)
            for nfe in nfes:
                codec.check_nfe(nfe)
        for bitrate in bitrates:
            for nfe in nfes:
                for seed in settings.seeds:
                    conditions.append(Condition(name, float(bitrate), nfe, seed))
    return Plan(conditions, skipped)


def decoded_cache_key(
    codec: Codec, condition: Condition, input_hash: str, max_seconds: float | None
) -> str:
    return content_key(
        {
            "codec": condition.codec,
            "checkpoint": codec.checkpoint_hash,
            "bitrate": condition.bitrate,
            "nfe": condition.nfe,
            "seed": condition.seed,
            "input": input_hash,
            "max_seconds": max_seconds,
            "preparation": PREPARATION_VERSION,
            "resampler": bench_audio.RESAMPLER,
        }
    )


def _base_row(task: Task) -> dict:
    condition = task.condition
    return {
        "codec": condition.codec,
        "bitrate": condition.bitrate,
        "nfe": condition.nfe,
        "seed": condition.seed,
        "item": task.item.id,
        "tags": sorted(task.item.tags),
        "speaker": task.item.speaker,
        "input_hash": task.input_hash,
        "decoded_key": task.decoded_key,
    }


def _metric_rows(base: dict, metric: BoundMetric, outcome: MetricOutcome) -> list[dict]:
    return [
        {
            **base,
            "metric": name,
            "metric_family": metric.name,
            "value": value,
            "failure": outcome.failure,
            "metric_note": outcome.note,
            # A ratio metric's counts (e.g. WER's edits and reference words), which the
            # report pools over items.
            "metric_counts": outcome.counts,
            "metric_seconds": outcome.seconds,
            "metric_backend": metric.spec.backend,
            "metric_backend_version": metric.backend_version,
        }
        for name, value in outcome.values.items()
    ]


def _failure_rows(metrics: tuple[BoundMetric, ...], base: dict, reason: str) -> list[dict]:
    rows = []
    for metric in metrics:
        rows += _metric_rows(base, metric, MetricOutcome.failed(metric, reason))
    return rows


def _coding_fields(meta: dict, from_cache: bool) -> dict:
    return {
        "kbps_nominal": meta["nominal_kbps"],
        "kbps_actual": meta["actual_kbps"],
        "encode_seconds": meta["encode_seconds"],
        "decode_seconds": meta["decode_seconds"],
        "audio_seconds": meta["audio_seconds"],
        "input_notes": meta["input_notes"],
        "decoded_from_cache": from_cache,
    }


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

    def codec(self, name: str, options: dict) -> Codec:
        key = content_key({"codec": name, "options": options})
        if key not in self._codecs:
            self._codecs[key] = create_codec(name, **options)
        return self._codecs[key]

    def _warm_up(self, codec: Codec, condition: Condition) -> None:
        # The first call of a codec pays for lazy initialisation (allocations, JIT,
        # library loading); run it untimed so RTF reflects steady-state speed.
        key = (condition.codec, condition.bitrate, condition.nfe)
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

    def cached_result(self, task: Task) -> TaskResult | None:
        """The task's rows from the cache alone, or ``None`` if anything is missing."""
        if self.cache is None or task.input_hash is None:
            return None
        meta = self.cache.decoded_meta(task.decoded_key)
        if meta is None:
            return None
        if task.listening_path is not None and not os.path.exists(task.listening_path):
            decoded = self.cache.get_decoded(task.decoded_key)
            if decoded is None:
                return None
            bench_audio.save_listening_copy(
                task.listening_path, torch.from_numpy(decoded[0]), meta["sample_rate"]
            )
        base = {**_base_row(task), **_coding_fields(meta, from_cache=True)}
        rows = []
        for metric in self.metrics(task):
            if metric.spec.inputs == "coding":
                rows += self._coding_metric_rows(base, metric, meta)
                continue
            entry = self.cache.get_metric(metric.cache_key(task.decoded_key, task.item))
            if entry is None:
                return None
            rows += _metric_rows(base, metric, MetricOutcome.from_cache(entry))
        return TaskResult(rows)

    @staticmethod
    def _coding_metric_rows(base: dict, metric: BoundMetric, meta: dict) -> list[dict]:
        stats = CodingStats(
            encode_seconds=meta["encode_seconds"],
            decode_seconds=meta["decode_seconds"],
            audio_seconds=meta["audio_seconds"],
            nominal_kbps=meta["nominal_kbps"],
            actual_kbps=meta["actual_kbps"],
        )
        value = metric.spec.function(stats)
        return _metric_rows(base, metric, MetricOutcome({metric.name: value}, None, None, 0.0))

    def _decode(
        self, task: Task, codec: Codec, reference: torch.Tensor, notes: tuple[str, ...]
    ) -> tuple[torch.Tensor, dict, bool, float]:
        """Decoded audio and its metadata, from the cache or by running the codec."""
        if self.cache is not None:
            cached = self.cache.get_decoded(task.decoded_key)
            if cached is not None:
                return torch.from_numpy(cached[0]), cached[1], True, 0.0
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
        meta = {
            "nominal_kbps": encoded.nominal_kbps,
            "actual_kbps": encoded.actual_kbps,
            "payload_bytes": len(encoded.payload),
            "encode_seconds": encode_seconds,
            "decode_seconds": decode_seconds,
            "audio_seconds": encoded.duration_seconds,
            "sample_rate": codec.sample_rate,
            "input_notes": list(notes),
        }
        if self.cache is not None:
            self.cache.put_decoded(task.decoded_key, decoded.numpy(), encoded.payload, meta)
        return decoded, meta, False, encode_seconds + decode_seconds

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
        signals: tuple[torch.Tensor, torch.Tensor],
        resampled: dict[int, tuple[torch.Tensor, torch.Tensor]],
        cropped: bool,
    ) -> MetricOutcome:
        """Score one metric of the task; a metric on tokens gets the task's bitstream."""
        encoded = None
        if metric.spec.needs_codes:
            try:
                encoded = self._encoded(task, codec, signals[0])
            except Exception as error:  # noqa: BLE001 - a codec failure must not stop the run
                reason = f"codec: {type(error).__name__}: {error}"
                return MetricOutcome.failed(metric, reason, cacheable=False)
        return score_metric(
            metric,
            task.item,
            *signals,
            codec.sample_rate,
            resampled,
            cropped=cropped,
            encoded=encoded,
        )

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
        """Run one task; every failure becomes NaN rows with a reason, never an exception."""
        result = self._evaluate(task)
        result.discarded_cache_entries = self.take_discarded()
        return result

    def _evaluate(self, task: Task) -> TaskResult:
        self._last_encoded = None  # the previous task's
        base = _base_row(task)
        metrics = self.metrics(task)
        codec = self.codec(task.condition.codec, task.codec_options)
        try:
            reference, notes, cropped = self._prepared_input(task, codec)
        except bench_audio.AudioError as error:
            return TaskResult(_failure_rows(metrics, base, f"input: {error}"))
        try:
            decoded, meta, from_cache, codec_seconds = self._decode(task, codec, reference, notes)
        except Exception as error:  # noqa: BLE001 - a codec failure must not stop the run
            reason = f"codec: {type(error).__name__}: {error}"
            return TaskResult(_failure_rows(metrics, base, reason))
        base.update(_coding_fields(meta, from_cache))
        if task.listening_path is not None and not os.path.exists(task.listening_path):
            bench_audio.save_listening_copy(task.listening_path, decoded, codec.sample_rate)
        result = TaskResult([], codec_seconds=codec_seconds)
        resampled: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for metric in scoring_order(metrics):
            if metric.spec.inputs == "coding":
                result.rows += self._coding_metric_rows(base, metric, meta)
                continue
            key = metric.cache_key(task.decoded_key, task.item)
            entry = self.cache.get_metric(key) if self.cache is not None else None
            if entry is None:
                outcome = self._score(task, metric, codec, (reference, decoded), resampled, cropped)
                result.metric_seconds += outcome.seconds
                if self.cache is not None and outcome.cacheable:
                    self.cache.put_metric(key, outcome.to_cache())
            else:
                outcome = MetricOutcome.from_cache(entry)
            result.rows += _metric_rows(base, metric, outcome)
        # Rows in the requested order of metrics, whatever order they were scored in.
        position = {metric.name: index for index, metric in enumerate(metrics)}
        result.rows.sort(key=lambda row: position[row["metric_family"]])
        return result


_WORKER: Evaluator | None = None


def _init_worker(cache_root: str | None) -> None:
    global _WORKER
    _WORKER = Evaluator(Cache(cache_root) if cache_root else None)


def _evaluate_in_worker(task: Task) -> TaskResult:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.evaluate(task)


def _input_hashes(items: Iterable[Item]) -> dict[str, str | None]:
    hashes = {}
    for item in items:
        try:
            # Hashing a FIFO or a device (a manifest may name one) would never return.
            bench_audio.require_regular_file(item.path)
            hashes[item.id] = bench_audio.file_sha256(item.path)
        except (OSError, bench_audio.AudioError):
            hashes[item.id] = None  # the task reports the unreadable file as a NaN row
    return hashes


def _duration_seconds(item: Item) -> float:
    """The item's length from its header, or 0 for a file that cannot be read."""
    try:
        return soundfile.info(str(item.path)).duration
    except (OSError, RuntimeError, soundfile.LibsndfileError):
        return 0.0


def listening_selection(items: Iterable[Item], count: int) -> list[Item]:
    """The items kept for listening: one of each kind of content first, then in order.

    A speech-and-music corpus thus gets a music example even when speech comes first.
    """
    items = list(items)
    chosen: dict[str, Item] = {}
    kinds: set[frozenset[str]] = set()
    for item in items:
        if len(chosen) < count and item.tags not in kinds:
            kinds.add(item.tags)
            chosen[item.id] = item
    for item in items:
        if len(chosen) < count:
            chosen.setdefault(item.id, item)
    return [item for item in items if item.id in chosen]


def _write_references(store: RunStore, items: list[Item], max_seconds: float | None) -> None:
    """Keep each listening item's reference, cropped as the codecs got it, at its own rate."""
    for item in items:
        path = store.reference_audio_path(item.id)
        if path.exists():
            continue
        try:
            loaded = bench_audio.load_audio(item.path, max_seconds)
        except bench_audio.AudioError:
            continue  # its tasks record the failure as NaN rows
        audio, _ = bench_audio.prepare(
            loaded, loaded.sample_rate, loaded.audio.shape[0], max_seconds
        )
        bench_audio.save_listening_copy(path, audio, loaded.sample_rate)


def _build_tasks(
    conditions: list[Condition],
    dataset: Dataset,
    codecs: dict[str, Codec],
    hashes: dict[str, str | None],
    settings: SweepSettings,
    store: RunStore,
) -> list[Task]:
    metrics = bind_metrics(settings.metrics, settings.metric_options)
    listening = {item.id for item in listening_selection(dataset.items, settings.listening_items)}
    first_seed = settings.seeds[0]
    tasks = []
    # Item-major order: consecutive tasks share an input, which workers prepare once.
    # Longest items first, so that a pool does not end waiting on one long straggler.
    # An item without a hash is not a readable file: do not open it for its length.
    by_length = sorted(
        dataset.items,
        key=lambda item: _duration_seconds(item) if hashes[item.id] else 0.0,
        reverse=True,
    )
    for item in by_length:
        # Only the metrics valid for the item's content (no WER on music, say).
        names = tuple(metric.name for metric in metrics if metric.spec.applies_to(item.tags))
        options = {name: value for name, value in settings.metric_options.items() if name in names}
        for condition in conditions:
            input_hash = hashes[item.id]
            key = (
                decoded_cache_key(
                    codecs[condition.codec], condition, input_hash, settings.max_seconds
                )
                if input_hash
                else ""
            )
            keep = item.id in listening and condition.seed == first_seed
            listening_path = (
                str(
                    store.decoded_audio_path(
                        condition.codec, condition.bitrate, condition.nfe, item.id
                    )
                )
                if keep
                else None
            )
            tasks.append(
                Task(
                    condition,
                    item,
                    input_hash,
                    key,
                    names,
                    settings.max_seconds,
                    options,
                    listening_path,
                    settings.codec_options.get(condition.codec, {}),
                )
            )
    return tasks


def _completed_tasks(store: RunStore) -> dict[tuple, set[str]]:
    """The metric families already recorded for each task of a run."""
    done: dict[tuple, set[str]] = {}
    for number, row in enumerate(store.rows(), start=1):
        try:
            identity = task_identity(
                row["codec"], row["bitrate"], row["nfe"], row["seed"], row["item"]
            )
            done.setdefault(identity, set()).add(row["metric_family"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{store.results_path}: line {number}: expected a result row, got one with a "
                f"missing or malformed field ({type(error).__name__}: {error})"
            ) from None
    return done


def _new_run_dir(out_root: Path, config_hash: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = out_root / f"{stamp}-{config_hash[:8]}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = out_root / f"{stamp}-{config_hash[:8]}-{suffix}"
    return run_dir


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run whose directory exists; ``run_dir`` is the run to resume."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(f"interrupted run {run_dir}")
        self.run_dir = run_dir


@contextlib.contextmanager
def _resumable(store: RunStore) -> Iterator[None]:
    """Turn Ctrl-C in the block into :class:`RunInterrupted` naming the store's run."""
    try:
        yield
    except KeyboardInterrupt as interrupt:
        raise RunInterrupted(store.run_dir) from interrupt


@contextlib.contextmanager
def _worker_pool(
    workers: int, cache_dir: str | os.PathLike | None
) -> Iterator[ProcessPoolExecutor | None]:
    """A started pool of ``workers`` processes, or ``None`` to run inline."""
    if workers == 1:
        yield None
        return
    # Created before this process runs any torch operation: see bench.parallel.
    with process_pool(
        workers, _init_worker, (str(cache_dir) if cache_dir is not None else None,)
    ) as pool:
        yield pool


def _provenance(
    store: RunStore,
    config_hash: str,
    settings: SweepSettings,
    cache_dir: str | os.PathLike | None,
    codecs: dict[str, Codec],
    dataset: Dataset,
    hashes: dict[str, str | None],
) -> dict:
    """The run's ``config.json``: resolved settings, versions, git state and machine."""
    return {
        "run_id": store.run_dir.name,
        "created": datetime.now(UTC).isoformat(),
        "config_hash": config_hash,
        "settings": settings.to_json(),
        "cache_dir": str(Path(cache_dir).resolve()) if cache_dir is not None else None,
        "codecs": {
            name: {**codec.describe(), "checkpoint_hash": codec.checkpoint_hash}
            for name, codec in codecs.items()
        },
        "metrics": {
            metric.name: {
                **metric.spec.metadata(),
                "options": metric.options,
                "backend_version": metric.backend_version,
            }
            for metric in bind_metrics(settings.metrics, settings.metric_options)
        },
        "dataset": {
            "spec": settings.data,
            "items": [
                {
                    "id": item.id,
                    "path": str(item.path),
                    "input_hash": hashes[item.id],
                    "transcript": item.transcript,
                    "speaker": item.speaker,
                    "tags": sorted(item.tags),
                }
                for item in dataset.items
            ],
            "skipped": list(dataset.skipped),
        },
        "preparation": {"version": PREPARATION_VERSION, "resampler": bench_audio.RESAMPLER},
        "versions": backend_versions(),
        "git": git_state(),
        "device": device_fingerprint(THREADS_PER_WORKER),
    }


def run_sweep(
    settings: SweepSettings | None = None,
    *,
    out_root: str | os.PathLike = "runs",
    run_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
) -> RunSummary:
    """Plan, execute and record a sweep; or continue the run in ``resume``.

    The run goes to ``run_dir`` if given, else to a new folder under ``out_root``.
    ``cache_dir=None`` disables the cache; a resumed run uses the cache of the run it
    continues, whatever ``cache_dir`` says. Raises ``ValueError`` (with the valid values)
    for unknown codecs or metrics, unsupported bitrates or NFEs and bad dataset specs.
    """
    started = time.perf_counter()
    store = None
    recorded_hashes = None
    if resume is not None:
        store = RunStore(resume)
        # A resumed run reads and writes the cache its first part used (or none).
        settings, cache_dir, recorded_hashes = _resumed_run(store)
    elif settings is None:
        raise ValueError("expected sweep settings or a run directory to resume")
    for name in settings.codecs:
        CODECS.check(name)
    bind_metrics(settings.metrics, settings.metric_options)
    if cache_dir is not None:
        writable_folder(cache_dir, "--cache" if resume is None else "the run's cache_dir")

    # The lock is taken after the pool has forked its workers, so only this process holds it.
    with contextlib.ExitStack() as held, _worker_pool(settings.workers, cache_dir) as pool:
        codecs = {
            name: create_codec(name, **settings.codec_options.get(name, {}))
            for name in settings.codecs
        }
        sweep_plan = plan(settings, codecs)
        dataset = load_dataset(
            settings.data,
            limit=settings.limit,
            tags=settings.tags or None,
            exclude_tags=settings.exclude_tags or None,
            item_ids=settings.items,
        )
        hashes = _input_hashes(dataset.items)
        if recorded_hashes is not None:
            held.enter_context(store.locked())
            _check_inputs_unchanged(store, recorded_hashes, hashes)
            store.repair()
        if store is None:
            config_hash = content_key(
                {
                    "settings": settings.to_json(),
                    "codecs": {name: codec.checkpoint_hash for name, codec in codecs.items()},
                    "items": hashes,
                }
            )
            store = RunStore(
                run_dir or _new_run_dir(writable_folder(out_root, "--out"), config_hash)
            )
            store.create(
                {
                    **_provenance(store, config_hash, settings, cache_dir, codecs, dataset, hashes),
                    "skipped_conditions": sweep_plan.skipped,
                }
            )
            held.enter_context(store.locked())
        with _resumable(store):
            tasks = _build_tasks(sweep_plan.conditions, dataset, codecs, hashes, settings, store)
            _write_references(
                store,
                listening_selection(dataset.items, settings.listening_items),
                settings.max_seconds,
            )
            cache = Cache(cache_dir) if cache_dir is not None else None
            summary = _execute(tasks, store, Evaluator(cache), pool, progress)
    summary.wall_seconds = time.perf_counter() - started
    return summary


def _resumed_run(store: RunStore) -> tuple[SweepSettings, str | None, dict[str, str | None]]:
    """The settings, cache folder and input hashes a run recorded, to continue it."""
    config = store.read_config()
    try:
        settings = SweepSettings.from_json(config["settings"])
        recorded = {item["id"]: item["input_hash"] for item in config["dataset"]["items"]}
        return settings, config["cache_dir"], recorded
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"{store.config_path}: expected a run's configuration with its settings, cache_dir "
            f"and dataset items, got one without {error}"
        ) from None


def _check_inputs_unchanged(
    store: RunStore, recorded: dict[str, str | None], current: dict[str, str | None]
) -> None:
    """Refuse to resume over inputs that differ from those the run started with.

    The finished rows were scored on the recorded files; scoring the rest on new ones
    would mix two datasets under one config.json.
    """
    changes = {
        "changed or unreadable": [
            item for item in recorded.keys() & current.keys() if recorded[item] != current[item]
        ],
        "new": list(current.keys() - recorded.keys()),
        "gone": list(recorded.keys() - current.keys()),
    }
    found = [f"{what}: {_some(items)}" for what, items in changes.items() if items]
    if found:
        raise ValueError(
            f"--resume {store.run_dir}: the input files differ from those the run started with "
            f"({'; '.join(found)}); start a new run to score them"
        )


def _some(names: list[str], shown: int = 5) -> str:
    names = sorted(names)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(repr(name) for name in names[:shown]) + more


PROGRESS_LABEL = "bench run"


def _metrics_with_set_up(tasks: list[Task], evaluator: Evaluator) -> list[str]:
    """The metrics of ``tasks`` that load models or compile kernels before their first score."""
    names = {
        metric.name
        for task in tasks
        for metric in evaluator.metrics(task)
        if metric.spec.setup is not None
    }
    return sorted(names)


def _execute(
    tasks: list[Task],
    store: RunStore,
    evaluator: Evaluator,
    pool: ProcessPoolExecutor | None,
    progress: bool,
) -> RunSummary:
    """Skip finished tasks, serve cached ones, compute the rest; record as they finish."""
    done = _completed_tasks(store)
    summary = RunSummary(store.run_dir, len(tasks), 0, 0, 0, 0, 0.0, 0.0, 0.0)
    # A key, not a count per read: the parent's cache look-up and the worker that then
    # recomputes the task may both meet the same bad entry.
    discarded_cache_entries: set[str] = set()
    bar = tqdm(
        total=len(tasks), desc=PROGRESS_LABEL, unit="item", disable=not progress, dynamic_ncols=True
    )

    def record(task: Task, result: TaskResult) -> None:
        # Once tasks finish, loading no longer holds the bar back.
        bar.set_description(PROGRESS_LABEL, refresh=False)
        already = done.get(task.identity, set())
        rows = [row for row in result.rows if row["metric_family"] not in already]
        for row in rows:
            row["run_id"] = store.run_dir.name
        store.append(rows)
        summary.failures += sum(1 for row in rows if row["failure"] is not None)
        summary.codec_seconds += result.codec_seconds
        summary.metric_seconds += result.metric_seconds
        discarded_cache_entries.update(result.discarded_cache_entries)
        bar.update(1)

    pending: list[Task] = []
    with bar:
        for task in tasks:
            if set(task.metrics) <= done.get(task.identity, set()):
                summary.tasks_resumed += 1
                bar.update(1)
                continue
            cached = evaluator.cached_result(task)
            discarded_cache_entries.update(evaluator.take_discarded())
            if cached is None:
                pending.append(task)
            else:
                summary.tasks_from_cache += 1
                record(task, cached)
        summary.tasks_computed = len(pending)
        loading = _metrics_with_set_up(pending, evaluator)
        if loading:
            # Loading models and compiling kernels can keep the bar at 0 % for a minute.
            bar.set_description(f"{PROGRESS_LABEL}: loading {', '.join(loading)} (once per worker)")
        if pool is None:
            with pinned_threads():
                for task in pending:
                    record(task, evaluator.evaluate(task))
        else:
            futures = {pool.submit(_evaluate_in_worker, task): task for task in pending}
            for future in as_completed(futures):
                record(futures[future], future.result())
    summary.bad_cache_entries = len(discarded_cache_entries)
    return summary

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
from bench.codecs.base import Codec
from bench.data import Dataset, Item, load_dataset
from bench.metrics import CodingStats
from bench.parallel import THREADS_PER_WORKER, pinned_threads, process_pool
from bench.provenance import backend_versions, device_fingerprint, git_state
from bench.registry import CODECS, create_codec
from bench.scoring import BoundMetric, MetricOutcome, bind_metrics, score_metric, scoring_order
from bench.store import DEFAULT_CACHE_DIR, Cache, RunStore, content_key

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
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"expected --max-seconds > 0, got {self.max_seconds}")
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
        def as_tuple(value):
            return None if value is None else tuple(value)

        return cls(
            **{
                **data,
                **{
                    name: as_tuple(data.get(name))
                    for name in ("codecs", "bitrates", "nfes", "seeds", "metrics", "items")
                },
                "tags": tuple(data.get("tags", ())),
                "metric_options": data.get("metric_options", {}),
                "exclude_tags": tuple(data.get("exclude_tags", ())),
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


def parse_list(text: str, kind: type, option: str) -> tuple:
    """Parse ``"1.5,3,6"`` into a tuple of ``kind``; raise ``ValueError`` naming the option."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(kind(part))
        except ValueError:
            raise ValueError(
                f"{option}: expected comma-separated {kind.__name__} values, got {part!r}"
            ) from None
    if not values:
        raise ValueError(f"{option}: expected at least one value, got {text!r}")
    return tuple(values)


def plan(settings: SweepSettings, codecs: dict[str, Codec]) -> list[Condition]:
    """The condition grid; raises ``ValueError`` naming valid values for bad choices."""
    conditions = []
    iterative = [name for name, codec in codecs.items() if codec.nfe_options is not None]
    if settings.nfes is not None and not iterative:
        raise ValueError(
            f"--nfe applies to iterative decoders only; {', '.join(codecs)} "
            "decode in one shot. Drop --nfe or add an iterative codec."
        )
    for name, codec in codecs.items():
        bitrates = settings.codec_bitrates.get(name, settings.bitrates) or codec.bitrates
        for bitrate in bitrates:
            codec.check_bitrate(bitrate)
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
    return conditions


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
        self._last_input: tuple[tuple, tuple[torch.Tensor, tuple[str, ...]]] | None = None

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
            audio, _ = self.cache.get_decoded(task.decoded_key)
            bench_audio.save_listening_copy(
                task.listening_path, torch.from_numpy(audio), meta["sample_rate"]
            )
        base = {**_base_row(task), **_coding_fields(meta, from_cache=True)}
        rows = []
        for metric in self.metrics(task):
            if metric.spec.inputs == "coding":
                rows += self._coding_metric_rows(base, metric, meta)
                continue
            entry = self.cache.get_metric(metric.cache_key(task.decoded_key))
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

    def _prepared_input(self, task: Task, codec: Codec) -> tuple[torch.Tensor, tuple[str, ...]]:
        """The item at the codec's rate and channel count, with the notes on how it changed.

        Raises :class:`bench.audio.AudioError` for an input that cannot be evaluated.
        """
        key = (task.item.path, task.input_hash, codec.sample_rate, codec.channels, task.max_seconds)
        if self._last_input is None or self._last_input[0] != key:
            loaded = bench_audio.load_audio(task.item.path, task.max_seconds)
            prepared = bench_audio.prepare(
                loaded, codec.sample_rate, codec.channels, task.max_seconds
            )
            self._last_input = (key, prepared)
        return self._last_input[1]

    def evaluate(self, task: Task) -> TaskResult:
        """Run one task; every failure becomes NaN rows with a reason, never an exception."""
        base = _base_row(task)
        metrics = self.metrics(task)
        codec = self.codec(task.condition.codec, task.codec_options)
        try:
            reference, notes = self._prepared_input(task, codec)
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
            key = metric.cache_key(task.decoded_key)
            entry = self.cache.get_metric(key) if self.cache is not None else None
            if entry is None:
                outcome = score_metric(
                    metric, task.item, reference, decoded, codec.sample_rate, resampled
                )
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
            hashes[item.id] = bench_audio.file_sha256(item.path)
        except OSError:
            hashes[item.id] = None  # the task reports the missing file as a NaN row
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
    for item in sorted(dataset.items, key=_duration_seconds, reverse=True):
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
    for row in store.rows():
        identity = task_identity(row["codec"], row["bitrate"], row["nfe"], row["seed"], row["item"])
        done.setdefault(identity, set()).add(row["metric_family"])
    return done


def _new_run_dir(out_root: Path, config_hash: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = out_root / f"{stamp}-{config_hash[:8]}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = out_root / f"{stamp}-{config_hash[:8]}-{suffix}"
    return run_dir


@contextlib.contextmanager
def _worker_pool(
    workers: int, cache_dir: str | os.PathLike | None
) -> Iterator[ProcessPoolExecutor | None]:
    """A started pool of ``workers`` processes, or ``None`` to run inline."""
    if workers == 1:
        yield None
        return
    # Created before this process runs any torch operation: see bench.parallel.
    pool = process_pool(workers, _init_worker, (str(cache_dir) if cache_dir is not None else None,))
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        pool.shutdown(wait=True)


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
    if resume is not None:
        store = RunStore(resume)
        config = store.read_config()
        settings = SweepSettings.from_json(config["settings"])
        # A resumed run reads and writes the cache its first part used (or none).
        cache_dir = config["cache_dir"]
        store.repair()
    elif settings is None:
        raise ValueError("expected sweep settings or a run directory to resume")
    for name in settings.codecs:
        CODECS.check(name)
    bind_metrics(settings.metrics, settings.metric_options)

    with _worker_pool(settings.workers, cache_dir) as pool:
        codecs = {
            name: create_codec(name, **settings.codec_options.get(name, {}))
            for name in settings.codecs
        }
        conditions = plan(settings, codecs)
        dataset = load_dataset(
            settings.data,
            limit=settings.limit,
            tags=settings.tags or None,
            exclude_tags=settings.exclude_tags or None,
            item_ids=settings.items,
        )
        hashes = _input_hashes(dataset.items)
        if store is None:
            config_hash = content_key(
                {
                    "settings": settings.to_json(),
                    "codecs": {name: codec.checkpoint_hash for name, codec in codecs.items()},
                    "items": hashes,
                }
            )
            store = RunStore(run_dir or _new_run_dir(Path(out_root), config_hash))
            store.create(
                _provenance(store, config_hash, settings, cache_dir, codecs, dataset, hashes)
            )
        tasks = _build_tasks(conditions, dataset, codecs, hashes, settings, store)
        _write_references(
            store,
            listening_selection(dataset.items, settings.listening_items),
            settings.max_seconds,
        )
        cache = Cache(cache_dir) if cache_dir is not None else None
        summary = _execute(tasks, store, Evaluator(cache), pool, progress)
    summary.wall_seconds = time.perf_counter() - started
    return summary


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
    bar = tqdm(
        total=len(tasks), desc="bench run", unit="item", disable=not progress, dynamic_ncols=True
    )

    def record(task: Task, result: TaskResult) -> None:
        already = done.get(task.identity, set())
        rows = [row for row in result.rows if row["metric_family"] not in already]
        for row in rows:
            row["run_id"] = store.run_dir.name
        store.append(rows)
        summary.failures += sum(1 for row in rows if row["failure"] is not None)
        summary.codec_seconds += result.codec_seconds
        summary.metric_seconds += result.metric_seconds
        bar.update(1)

    pending: list[Task] = []
    with bar:
        for task in tasks:
            if set(task.metrics) <= done.get(task.identity, set()):
                summary.tasks_resumed += 1
                bar.update(1)
                continue
            cached = evaluator.cached_result(task)
            if cached is None:
                pending.append(task)
            else:
                summary.tasks_from_cache += 1
                record(task, cached)
        summary.tasks_computed = len(pending)
        if pool is None:
            with pinned_threads():
                for task in pending:
                    record(task, evaluator.evaluate(task))
        else:
            futures = {pool.submit(_evaluate_in_worker, task): task for task in pending}
            for future in as_completed(futures):
                record(futures[future], future.result())
    return summary

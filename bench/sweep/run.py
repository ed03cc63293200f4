"""Running a sweep: plan it, start an executor, skip what a resumed run finished, serve what
the cache holds, evaluate the rest, and record the results as they come.

The driver alone writes the run directory: ``config.json`` once, ``results.jsonl`` one
flushed block per finished task (so a killed run resumes where it stopped), and the
listening copies that workers return. Decoded audio and metric values are looked up in the
content-addressed cache first, so an identical second run only reads the cache and adding a
metric never re-decodes. Where tasks run is the executor's business (``bench.executors``);
resuming, caching and writing stay here, so every executor inherits them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from tqdm import tqdm

from bench import audio as bench_audio
from bench.codecs.base import CodecInfo
from bench.data import Dataset, Item, load_dataset
from bench.executors import Executor, WorkerSetup, create_executor
from bench.parallel import THREADS_PER_WORKER
from bench.provenance import backend_versions, device_fingerprint, git_state
from bench.registry import CODECS
from bench.report.stats import metric_directions, results_frame
from bench.report.worst import WORST_KEPT, condition_of, worst_items
from bench.scoring import bind_metrics
from bench.store import DEFAULT_CACHE_DIR, Cache, RunStore, writable_folder
from bench.sweep import evaluate
from bench.sweep.evaluate import Evaluator, TaskResult
from bench.sweep.plan import (
    PREPARATION_VERSION,
    Task,
    build_tasks,
    codec_infos,
    input_hashes,
    listening_selection,
    new_run_dir,
    plan,
    run_identity,
)
from bench.sweep.settings import SweepSettings

PROGRESS_LABEL = "bench run"


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


def default_executor(workers: int | None) -> str:
    """The executor for ``workers`` (``None``: one per core) when none is named: inline for
    one, else processes."""
    return "inline" if (workers or os.cpu_count()) == 1 else "process"


def _provenance(
    store: RunStore,
    config_hash: str,
    settings: SweepSettings,
    execution: dict,
    cache_dir: str | os.PathLike | None,
    codecs: Mapping[str, CodecInfo],
    dataset: Dataset,
    hashes: dict[str, str | None],
) -> dict:
    """The run's ``config.json``: resolved settings, versions, git state and machine."""
    return {
        "run_id": store.run_dir.name,
        "created": datetime.now(UTC).isoformat(),
        "config_hash": config_hash,
        "settings": settings.to_json(),
        # How the run was executed: not part of its identity, recorded for the timings.
        "execution": execution,
        "cache_dir": str(Path(cache_dir).resolve()) if cache_dir is not None else None,
        "codecs": {
            label: {**codec.description, "checkpoint_hash": codec.checkpoint_hash}
            for label, codec in codecs.items()
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
    workers: int | None = None,
    executor: str | None = None,
    executor_options: Mapping[str, object] | None = None,
    out_root: str | os.PathLike = "runs",
    run_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
) -> RunSummary:
    """Plan, execute and record a sweep; or continue the run in ``resume``.

    ``workers`` (default: the executor's, one per core or per cluster CPU), ``executor`` (a
    name registered in :data:`bench.registry.EXECUTORS`; default: inline for one worker,
    else a process pool) and its ``executor_options`` (Ray's ``address``) say how the run is
    executed, never what it computes: they are not part of its identity, and a resumed run
    takes them from this call. The run goes to ``run_dir`` if given, else
    to a new folder under ``out_root``. ``cache_dir=None`` disables the cache; a resumed run
    uses the cache of the run it continues, whatever ``cache_dir`` says. Raises
    ``ValueError`` (with the valid values) for unknown codecs, metrics or executors,
    unsupported bitrates or NFEs and bad dataset specs.
    """
    started = time.perf_counter()
    executor = executor or default_executor(workers)
    store = None
    recorded_hashes = None
    if resume is not None:
        store = RunStore(resume)
        # A resumed run reads and writes the cache its first part used (or none).
        settings, cache_dir, recorded_hashes = _resumed_run(store)
    elif settings is None:
        raise ValueError("expected sweep settings or a run directory to resume")
    for label in settings.codecs:  # before any worker starts
        CODECS.check(settings.codec_of(label))
    bind_metrics(settings.metrics, settings.metric_options)
    cache_root = str(cache_dir) if cache_dir is not None else None
    setup = WorkerSetup(evaluate.start_worker, (cache_root,), evaluate.stop_worker)
    # Checked here, started below.
    pool = create_executor(executor, workers, setup, **(executor_options or {}))
    if cache_dir is not None:
        writable_folder(cache_dir, "--cache" if resume is None else "the run's cache_dir")

    # Workers start before this process runs any torch work (see bench.parallel); the lock
    # is taken after they have forked, so only this process holds it.
    with contextlib.ExitStack() as held, pool:
        codecs = codec_infos(settings)
        sweep_plan = plan(settings, codecs)
        dataset = load_dataset(
            settings.data,
            limit=settings.limit,
            tags=settings.tags or None,
            exclude_tags=settings.exclude_tags or None,
            item_ids=settings.items,
        )
        hashes = input_hashes(dataset.items)
        if recorded_hashes is not None:
            held.enter_context(store.locked())
            _check_inputs_unchanged(store, recorded_hashes, hashes)
            store.repair()
        if store is None:
            config_hash = run_identity(settings, codecs, hashes)
            store = RunStore(
                run_dir or new_run_dir(writable_folder(out_root, "--out"), config_hash)
            )
            execution = {**pool.execution(), "executor": executor}
            provenance = _provenance(
                store, config_hash, settings, execution, cache_dir, codecs, dataset, hashes
            )
            store.create({**provenance, "skipped_conditions": sweep_plan.skipped})
            held.enter_context(store.locked())
        with _resumable(store):
            tasks = build_tasks(sweep_plan.conditions, dataset, codecs, hashes, settings, store)
            _write_references(
                store,
                listening_selection(dataset.items, settings.listening_items),
                settings.max_seconds,
            )
            cache = Cache(cache_dir) if cache_dir is not None else None
            summary = _execute(tasks, store, Evaluator(cache), pool, progress)
            _keep_worst_audio(store, tasks, pool, settings.max_seconds)
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


def _keep_worst_audio(
    store: RunStore, tasks: list[Task], pool: Executor, max_seconds: float | None
) -> None:
    """Keep the decoded audio of each condition's worst items (``bench.report.worst``) and
    their references in the listening folder, as the listening items' are kept.

    Which items are worst is known only once every item is scored, so those not kept
    during the run are decoded again, by the run's workers, whose codecs are loaded (from
    the cache where it holds them; codecs are deterministic for a seed): a few per
    condition, the first seed's, with no metric.
    """
    frame = results_frame(store.run_dir)
    if frame.empty:
        return
    worst = worst_items(frame, metric_directions(store.run_dir), WORST_KEPT)
    wanted = {
        (condition.label, condition.bitrate, condition.nfe, item)
        for condition, item in zip(
            (condition_of(row) for _, row in worst.iterrows()), worst["item"], strict=True
        )
    }
    chosen: dict[tuple, Task] = {}
    for task in sorted(tasks, key=lambda task: task.condition.seed):
        condition = task.condition
        key = (condition.label, condition.bitrate, condition.nfe, task.item.id)
        if key in wanted:
            chosen.setdefault(key, task)
    _write_references(
        store, list({task.item.id: task.item for task in chosen.values()}.values()), max_seconds
    )
    missing = [
        dataclasses.replace(task, metrics=(), keep_audio=True)
        for key, task in chosen.items()
        if not store.decoded_audio_path(*key).exists()
    ]
    for result in pool.map(evaluate.evaluate_in_worker, missing):
        _save_listening(store, result)  # none where the codec failed, as its rows say


def _save_listening(store: RunStore, result: TaskResult) -> None:
    """Write the listening copy a task's worker returned, if it returned one."""
    if result.listening is None:
        return
    condition = result.task.condition
    path = store.decoded_audio_path(
        condition.label, condition.bitrate, condition.nfe, result.task.item.id
    )
    # A copy: an array a worker sent may be read-only (Ray hands out shared memory).
    audio = torch.tensor(result.listening.audio)
    bench_audio.save_listening_copy(path, audio, result.listening.sample_rate)


def _completed_tasks(store: RunStore) -> dict[tuple, set[str]]:
    """The metric families already recorded for each task of a run."""
    done: dict[tuple, set[str]] = {}
    for record in store.records():
        done.setdefault(record.identity, set()).add(record.metric_family)
    return done


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
    tasks: list[Task], store: RunStore, evaluator: Evaluator, pool: Executor, progress: bool
) -> RunSummary:
    """Skip finished tasks, serve cached ones, compute the rest on the started ``pool``;
    record each as it finishes."""
    done = _completed_tasks(store)
    summary = RunSummary(store.run_dir, len(tasks), 0, 0, 0, 0, 0.0, 0.0, 0.0)
    # A key, not a count per read: the parent's cache look-up and the worker that then
    # recomputes the task may both meet the same bad entry.
    discarded_cache_entries: set[str] = set()
    bar = tqdm(
        total=len(tasks), desc=PROGRESS_LABEL, unit="item", disable=not progress, dynamic_ncols=True
    )

    def record(result: TaskResult) -> None:
        # Once tasks finish, loading no longer holds the bar back.
        bar.set_description(PROGRESS_LABEL, refresh=False)
        task = result.task
        already = done.get(task.identity, set())
        records = [record for record in result.records if record.metric_family not in already]
        store.append(records)
        _save_listening(store, result)
        summary.failures += sum(1 for record in records if record.failure is not None)
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
                record(cached)
        summary.tasks_computed = len(pending)
        loading = _metrics_with_set_up(pending, evaluator)
        if loading:
            # Loading models and compiling kernels can keep the bar at 0 % for a minute.
            bar.set_description(f"{PROGRESS_LABEL}: loading {', '.join(loading)} (once per worker)")
        # Looked up at call time, so that a test can wrap the worker's function.
        for result in pool.map(evaluate.evaluate_in_worker, pending):
            record(result)
    summary.bad_cache_entries = len(discarded_cache_entries)
    return summary

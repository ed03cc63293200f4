"""Ray's cost against the local process pool, on the same cores, side by side.

Measures, in one process and one sitting (so the figures share the machine's state):

- sweep overhead: the wall time of one cold sweep (every metric by default) with
  ``--executor ray`` (a local Ray instance started and stopped by the run, as a user gets
  it) over the same sweep with ``--executor process``, same worker count, alternating
  which goes first; median of ``--repeats`` rounds (goal <= 1.15);
- per-task overhead: empty tasks through each started executor, in worker-milliseconds per
  task, and the item length below which Ray's overhead exceeds 1 % of a task's work;
- the driver's cost per task: recording a result (rows appended and fsynced, listening
  audio written), measured as a warm re-run served wholly from the cache, whose per-task
  work is the driver's own plus a cache read;
- cache I/O: the bytes a cold run writes to the cache per task;
- scale-out on paper: from these figures, the wall time of LibriSpeech test-clean
  (5.4 h, 2,620 utterances) x 10 conditions on 1, 8 and 64 workers, what limits it (the
  workers, or the driver recording results), and the write rate the shared cache must take.

Run: ``python benchmarks/ray_overhead.py [--repeats 2] [--json reports/ray_overhead.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from timing import provenance

from bench.executors import create_executor
from bench.store import RunStore
from bench.sweep import SweepSettings, parse_list, run_sweep

EMPTY_TASKS = 2000
# LibriSpeech test-clean: 2,620 utterances, 5.40 h (its published statistics).
TEST_CLEAN_ITEMS = 2620
TEST_CLEAN_SECONDS = 5.40 * 3600
CONDITIONS = 10
WORKER_COUNTS = (1, 8, 64)


def _nothing(task: int) -> int:
    return task


def _sweep(settings: SweepSettings, executor: str, workers: int, scratch: Path, cache: Path):
    started = time.perf_counter()
    summary = run_sweep(
        settings,
        workers=workers,
        executor=executor,
        out_root=scratch / executor,
        cache_dir=cache,
        progress=False,
    )
    return summary, time.perf_counter() - started


def _empty_task_ms(executor: str, workers: int) -> float:
    """Worker-milliseconds per empty task, the executor already started."""
    with create_executor(executor, workers) as pool:
        list(pool.map(_nothing, range(2 * workers)))  # first calls pay for imports
        started = time.perf_counter()
        list(pool.map(_nothing, range(EMPTY_TASKS)))
        return 1000 * (time.perf_counter() - started) * workers / EMPTY_TASKS


def _audio_seconds(run_dir: Path) -> float:
    """The audio the sweep coded: every task's item length, summed."""
    lengths = {
        (row["label"], row["bitrate"], row["nfe"], row["item"]): row["audio_seconds"]
        for row in RunStore(run_dir).rows()
    }
    return sum(seconds for seconds in lengths.values() if seconds)


def _driver_ms_per_task(
    settings: SweepSettings, workers: int, scratch: Path, cache: Path, items: int
) -> float:
    """The driver's marginal cost of a task: two re-runs served wholly from the warm
    ``cache``, of all the items and of half of them, so that the run's fixed start-up
    (planning, hashing inputs, starting workers) cancels out."""
    runs = []
    for limit in (None, items // 2):
        summary, wall = _sweep(replace(settings, limit=limit), "process", workers, scratch, cache)
        assert summary.tasks_computed == 0, "a warm re-run should only read the cache"
        runs.append((summary.tasks_total, wall))
    (tasks, wall), (fewer_tasks, fewer_wall) = runs
    return 1000 * (wall - fewer_wall) / (tasks - fewer_tasks)


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _scale_out(
    cpu_per_audio_second: float,
    driver_ms: float,
    ray_task_ms: float,
    cache_bytes_per_audio_s: float,
) -> dict:
    """Wall time of test-clean x CONDITIONS on each worker count, from measured unit costs:
    the workers' share of the work (plus Ray's per-task overhead) or the driver's recording
    time, whichever is longer; and the rate at which the workers write the shared cache."""
    tasks = TEST_CLEAN_ITEMS * CONDITIONS
    cpu_seconds = cpu_per_audio_second * TEST_CLEAN_SECONDS * CONDITIONS
    cache_bytes = cache_bytes_per_audio_s * TEST_CLEAN_SECONDS * CONDITIONS
    estimates = {}
    for workers in WORKER_COUNTS:
        work = (cpu_seconds + tasks * ray_task_ms / 1000) / workers
        driver = tasks * driver_ms / 1000
        wall = max(work, driver)
        estimates[str(workers)] = {
            "wall_hours": wall / 3600,
            "limited_by": "workers" if work >= driver else "driver",
            "cache_write_mb_per_s": cache_bytes / wall / 1e6,
        }
    estimates["cache_gb"] = cache_bytes / 1e9
    # Where the driver becomes the limit: the work per task over the driver's time per task.
    estimates["driver_limit_workers"] = int(
        (cpu_seconds / tasks + ray_task_ms / 1000) / (driver_ms / 1000)
    )
    estimates["tasks"] = tasks
    estimates["cpu_hours"] = cpu_seconds / 3600
    return estimates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codecs", default="encodec,opus")
    parser.add_argument("--bitrates", default="1.5,6")
    parser.add_argument("--metrics", help="comma-separated (default: every metric)")
    parser.add_argument("--data", default="embedded")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    arguments = parser.parse_args()
    settings = SweepSettings(
        codecs=tuple(arguments.codecs.split(",")),
        bitrates=parse_list(arguments.bitrates, float, "--bitrates"),
        data=arguments.data,
        **({"metrics": tuple(arguments.metrics.split(","))} if arguments.metrics else {}),
    )
    rounds = []
    for repeat in range(arguments.repeats):
        order = ("process", "ray") if repeat % 2 == 0 else ("ray", "process")
        walls, summaries = {}, {}
        with tempfile.TemporaryDirectory() as scratch:
            for executor in order:
                cache = Path(scratch) / f"cache-{executor}"
                summaries[executor], walls[executor] = _sweep(
                    settings, executor, arguments.workers, Path(scratch), cache
                )
            process = summaries["process"]
            items = len(RunStore(process.run_dir).read_config()["dataset"]["items"])
            driver_ms = _driver_ms_per_task(
                settings, arguments.workers, Path(scratch), Path(scratch) / "cache-process", items
            )
            audio_seconds = _audio_seconds(process.run_dir)
            cache_bytes = _folder_bytes(Path(scratch) / "cache-process")
        rounds.append(
            {
                "process_wall_s": walls["process"],
                "ray_wall_s": walls["ray"],
                "ray_over_process": walls["ray"] / walls["process"],
                "tasks": process.tasks_total,
                "cpu_s_per_audio_s": (process.codec_seconds + process.metric_seconds)
                / audio_seconds,
                "driver_ms_per_task": driver_ms,
                "cache_bytes_per_audio_s": cache_bytes / audio_seconds,
            }
        )
        print(
            f"round {repeat + 1} ({' then '.join(order)}): "
            + ", ".join(f"{key}={value:.3f}" for key, value in rounds[-1].items())
        )
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    empty = {
        executor: _empty_task_ms(executor, arguments.workers) for executor in ("process", "ray")
    }
    ray_task_ms = empty["ray"]
    # An item of L seconds costs cpu_s_per_audio_s * L worker-seconds per condition.
    one_percent_item_seconds = ray_task_ms / 1000 / (0.01 * medians["cpu_s_per_audio_s"])
    scale_out = _scale_out(
        medians["cpu_s_per_audio_s"],
        medians["driver_ms_per_task"],
        ray_task_ms,
        medians["cache_bytes_per_audio_s"],
    )
    report = {
        "measured": time.strftime("%Y-%m-%d"),
        "settings": {**settings.to_json(), "workers": arguments.workers},
        "rounds": rounds,
        "medians": medians,
        "empty_task_worker_ms": empty,
        "item_seconds_where_ray_overhead_is_1_percent": one_percent_item_seconds,
        "scale_out_test_clean_x10": scale_out,
        **provenance(arguments.workers),
    }
    print(
        f"\nmedian of {len(rounds)} rounds, {arguments.workers} workers, {medians['tasks']} tasks:"
    )
    print(f"  Ray over process pool, wall: {medians['ray_over_process']:.3f}  (goal <= 1.15)")
    print(f"  work: {medians['cpu_s_per_audio_s']:.3f} CPU-s per audio-s and condition")
    print(f"  driver: {medians['driver_ms_per_task']:.1f} ms per task (warm re-run)")
    print(
        "  empty tasks: "
        + ", ".join(f"{name} {ms:.2f} worker-ms" for name, ms in empty.items())
        + f"; Ray's overhead is 1 % of the work from items of {one_percent_item_seconds:.2f} s"
    )
    tasks, cpu_hours = scale_out["tasks"], scale_out["cpu_hours"]
    print(f"  test-clean x {CONDITIONS} ({tasks} tasks, {cpu_hours:.1f} CPU-h):")
    for workers in WORKER_COUNTS:
        estimate = scale_out[str(workers)]
        print(
            f"    {workers:3d} workers: {estimate['wall_hours']:.2f} h, limited by "
            f"{estimate['limited_by']}; cache writes {estimate['cache_write_mb_per_s']:.2f} MB/s"
        )
    print(f"    the driver limits beyond {scale_out['driver_limit_workers']} workers")
    print(f"    the cache grows by {scale_out['cache_gb']:.1f} GB")
    if arguments.json:
        arguments.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""A real `bench run` killed with SIGKILL at a random point resumes without losing or
repeating finished work; its workers die with it; Ctrl-C stops it at once and names the
run to resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import child_pids, install_plugin, process_alive, start_bench, write_tone

from bench.store import RunStore

ITEMS = 24
METRICS = "mel_distance,si_sdr,kbps_actual"


def _row_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _deterministic(rows: list[dict]) -> dict[tuple, float | None]:
    return {(row["item"], row["metric"]): row["value"] for row in rows}


def _slow_run_arguments(tmp_path: Path, items: int) -> list[str]:
    """`bench run` of ``items`` new tones through the slow plug-in codec, two workers;
    where it writes is left to the caller."""
    for index in range(items):
        write_tone(
            tmp_path / "data" / f"tone{index:02d}.wav", seconds=0.5, frequency=200 + 37 * index
        )
    arguments = ["run", "--codec", "slow-quantizer", "--data", f"folder:{tmp_path / 'data'}"]
    return [*arguments, "--metrics", METRICS, "--workers", "2", "--quiet"]


def _slow_run(tmp_path: Path, items: int, env: dict) -> subprocess.Popen:
    """A real `bench run` of ``items`` tones through the slow plug-in codec, two workers."""
    arguments = [*_slow_run_arguments(tmp_path, items), "--no-report"]
    arguments += ["--out", str(tmp_path / "runs"), "--cache", str(tmp_path / "cache")]
    return start_bench(arguments, env)


def _wait_for(condition, process: subprocess.Popen, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"the run ended before {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"no {what} after {seconds} s"
        time.sleep(0.01)


def _first_rows(runs: Path) -> bool:
    return any(_row_count(path) > 0 for path in runs.glob("*/results.jsonl"))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds workers through /proc")
def test_workers_exit_when_the_run_is_killed(tmp_path):
    process = _slow_run(tmp_path, ITEMS, install_plugin(tmp_path / "plugin"))
    _wait_for(lambda: _first_rows(tmp_path / "runs"), process, "a first row")
    workers = child_pids(process.pid)
    assert len(workers) >= 2, f"expected the two workers among the run's children: {workers}"
    os.kill(process.pid, signal.SIGKILL)  # the parent alone, as the OOM killer does
    process.wait()
    deadline = time.monotonic() + 30
    while any(map(process_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphans = [pid for pid in workers if process_alive(pid)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans, "processes of the run outlived it"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds workers through /proc")
def test_ctrl_c_stops_workers_mid_task_names_the_run_and_resume_completes(tmp_path):
    stalled = tmp_path / "stalled"
    stalled.mkdir()
    # Each worker records three items, then hangs in its next decode.
    env = install_plugin(tmp_path / "plugin")
    stalling = {**env, "BENCH_TEST_STALL_AFTER": "4", "BENCH_TEST_STALL_DIR": str(stalled)}
    process = _slow_run(tmp_path, 12, stalling)
    _wait_for(lambda: len(list(stalled.iterdir())) == 2, process, "two hung workers")
    os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches every process
    try:
        # A behaviour bound, not a timing: waiting for the hung tasks would take ten minutes.
        _, stderr = process.communicate(timeout=60)
    finally:
        hung = [int(path.name) for path in stalled.iterdir()]
        left = [pid for pid in [process.pid, *hung] if process_alive(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert not left, "the run or its hung workers were left running after Ctrl-C"
    assert process.returncode == 130, stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert f"continue with `bench run --resume {run_dir}`" in stderr
    assert _row_count(run_dir / "results.jsonl") > 0, "rows finished before Ctrl-C were lost"

    resumed = start_bench(["run", "--resume", str(run_dir), "--quiet", "--no-report"], env)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    keys = [(row["item"], row["metric"]) for row in RunStore(run_dir).rows()]
    assert len(keys) == len(set(keys)) == 12 * len(METRICS.split(",")), "rows lost or repeated"


@pytest.mark.slow
def test_sigkill_at_a_random_point_then_resume(tmp_path):
    common = _slow_run_arguments(tmp_path, ITEMS)
    env = install_plugin(tmp_path / "plugin")

    runs = tmp_path / "runs"
    process = start_bench([*common, "--out", str(runs), "--cache", str(tmp_path / "cache")], env)
    metrics_per_item = len(METRICS.split(","))
    kill_after_rows = random.Random(os.getpid()).randint(1, ITEMS // 2) * metrics_per_item
    deadline = time.monotonic() + 120
    results = None
    while time.monotonic() < deadline and process.poll() is None:
        found = list(runs.glob("*/results.jsonl"))
        if found and _row_count(found[0]) >= kill_after_rows:
            results = found[0]
            break
        time.sleep(0.005)
    assert process.poll() is None, f"the run ended before the kill: {process.communicate()}"
    os.killpg(process.pid, signal.SIGKILL)  # the whole group: the parent and its workers
    process.wait()
    before_kill = results.read_bytes()
    rows_before = [
        json.loads(line) for line in before_kill.splitlines(keepends=True) if line.endswith(b"\n")
    ]
    assert len(rows_before) < ITEMS * metrics_per_item

    resumed = start_bench(["run", "--resume", str(results.parent), "--quiet"], env)
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    metrics_seen: dict[str, int] = {}
    for row in rows_before:
        metrics_seen[row["item"]] = metrics_seen.get(row["item"], 0) + 1
    complete = sum(1 for count in metrics_seen.values() if count == metrics_per_item)
    assert f"{complete} already done" in stdout

    after = results.read_bytes()
    complete_lines = before_kill[: before_kill.rfind(b"\n") + 1]
    assert after.startswith(complete_lines), "rows written before the kill were changed"
    rows = list(RunStore(results.parent).rows())
    keys = [(row["item"], row["metric"]) for row in rows]
    assert len(keys) == len(set(keys)) == ITEMS * metrics_per_item, "rows lost or repeated"
    # Only items in flight at the kill were redone: nothing already recorded is recomputed.
    appended = [json.loads(line) for line in after[len(complete_lines) :].splitlines()]
    assert not {(row["item"], row["metric"]) for row in appended} & {
        (row["item"], row["metric"]) for row in rows_before
    }

    # The resumed run's values equal those of an uninterrupted run without the cache.
    reference = start_bench([*common, "--out", str(tmp_path / "reference"), "--no-cache"], env)
    reference.communicate(timeout=300)
    assert reference.returncode == 0
    reference_rows = list(RunStore(next((tmp_path / "reference").iterdir())).rows())
    assert _deterministic(rows) == _deterministic(reference_rows)


@pytest.mark.slow
def test_a_second_resume_of_a_running_run_is_refused_naming_the_holder(tmp_path):
    env = install_plugin(tmp_path / "plugin")
    run_dir = tmp_path / "run"
    arguments = _slow_run_arguments(tmp_path, ITEMS)
    killed = start_bench([*arguments, "--no-cache", "--run-dir", str(run_dir)], env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _row_count(run_dir / "results.jsonl") < 3:
        time.sleep(0.005)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()

    first = start_bench(["run", "--resume", str(run_dir), "--quiet", "--no-report"], env)
    lock = run_dir / ".lock"
    while time.monotonic() < deadline and first.poll() is None:
        if lock.read_text().strip() == str(first.pid):
            break
        time.sleep(0.005)
    # Paused while it holds the run, so that the second resume surely meets it there.
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        assert first.poll() is None, f"the first resume ended too soon: {first.communicate()}"
        second = start_bench(["run", "--resume", str(run_dir), "--quiet", "--no-report"], env)
        _, stderr = second.communicate(timeout=300)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert second.returncode == 2, stderr
    assert f"in use by another bench process (pid {first.pid})" in stderr
    assert "Traceback" not in stderr
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr

    keys = [(row["item"], row["metric"]) for row in RunStore(run_dir).rows()]
    assert len(keys) == len(set(keys)) == ITEMS * len(METRICS.split(","))

"""A real `bench run` killed with SIGKILL at a random point resumes without losing or
repeating finished work."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import install_plugin, write_tone

from bench.store import RunStore

ITEMS = 24
METRICS = "mel_distance,si_sdr,kbps_actual"


def _bench(arguments: list[str], env: dict, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "bench.cli", *arguments]
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    )


def _row_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _deterministic(rows: list[dict]) -> dict[tuple, float | None]:
    return {(row["item"], row["metric"]): row["value"] for row in rows}


@pytest.mark.slow
def test_sigkill_at_a_random_point_then_resume(tmp_path):
    for index in range(ITEMS):
        write_tone(
            tmp_path / "data" / f"tone{index:02d}.wav", seconds=0.5, frequency=200 + 37 * index
        )
    env = install_plugin(tmp_path / "plugin")
    common = [
        "run",
        "--codec",
        "slow-quantizer",
        "--data",
        f"folder:{tmp_path / 'data'}",
        "--metrics",
        METRICS,
        "--workers",
        "2",
        "--quiet",
    ]

    runs = tmp_path / "runs"
    process = _bench([*common, "--out", str(runs), "--cache", str(tmp_path / "cache")], env)
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

    resumed = _bench(["run", "--resume", str(results.parent), "--quiet"], env)
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
    reference = _bench([*common, "--out", str(tmp_path / "reference"), "--no-cache"], env)
    reference.communicate(timeout=300)
    assert reference.returncode == 0
    reference_rows = list(RunStore(next((tmp_path / "reference").iterdir())).rows())
    assert _deterministic(rows) == _deterministic(reference_rows)


@pytest.mark.slow
def test_a_second_resume_of_a_running_run_is_refused_naming_the_holder(tmp_path):
    for index in range(ITEMS):
        write_tone(
            tmp_path / "data" / f"tone{index:02d}.wav", seconds=0.5, frequency=200 + 37 * index
        )
    env = install_plugin(tmp_path / "plugin")
    run_dir = tmp_path / "run"
    killed = _bench(
        [
            "run",
            "--codec",
            "slow-quantizer",
            "--data",
            f"folder:{tmp_path / 'data'}",
            "--metrics",
            METRICS,
            "--workers",
            "2",
            "--quiet",
            "--no-cache",
            "--run-dir",
            str(run_dir),
        ],
        env,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _row_count(run_dir / "results.jsonl") < 3:
        time.sleep(0.005)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()

    first = _bench(["run", "--resume", str(run_dir), "--quiet", "--no-report"], env)
    lock = run_dir / ".lock"
    while time.monotonic() < deadline and first.poll() is None:
        if lock.read_text().strip() == str(first.pid):
            break
        time.sleep(0.005)
    # Paused while it holds the run, so that the second resume surely meets it there.
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        assert first.poll() is None, f"the first resume ended too soon: {first.communicate()}"
        second = _bench(["run", "--resume", str(run_dir), "--quiet", "--no-report"], env)
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

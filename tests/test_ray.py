"""`bench run --executor ray` on a real two-node Ray cluster started on this machine (a head
and a second node, one CPU each, loopback addresses, separate processes; not local_mode):
the rows of an inline run, weights loaded once per worker, a worker killed mid-task retried
with every row once, a killed driver resumed, and runs resumed across executors.

Locally the tests skip without Ray; CI installs the ``ray`` extra and sets
``BENCH_REQUIRE_RAY=1`` so that a missing Ray fails them instead. The cluster's processes
stay in the sessions of the two ``ray start`` commands; the teardown kills those sessions,
test failed or not, and fails if any process is left.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import install_plugin, start_bench, write_tone

from bench.cli import main
from bench.executors import create_executor
from bench.store import RunStore

REQUIRE_RAY_VARIABLE = "BENCH_REQUIRE_RAY"
METRICS = "mel_distance,si_sdr,kbps_actual"
ITEMS = 8
# What differs between two runs of the same settings: the run and the measured seconds.
VOLATILE = ("run_id", "encode_seconds", "decode_seconds", "metric_seconds")


def _require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        message = "Ray is not installed (pip install -e '.[ray]')"
        if os.environ.get(REQUIRE_RAY_VARIABLE):
            pytest.fail(f"{message}, and {REQUIRE_RAY_VARIABLE} is set")
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _session_processes(sessions: set[int]) -> list[int]:
    """The pids of the live processes in any of ``sessions`` (Linux /proc). A test starts a
    cluster, or a driver, in a session of its own; everything they start stays in it (Ray's
    workers take process groups of their own, not sessions), orphans included, and Ray
    rewrites its processes' command lines, so the session is how to find them all."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # Fields after the command name, which may hold spaces: state, ppid, pgrp, session.
        state, _, _, session = stat[stat.rindex(")") + 2 :].split()[:4]
        if int(session) in sessions and state != "Z":
            found.append(int(entry.name))
    return found


def _kill_sessions(sessions: set[int]) -> None:
    for pid in _session_processes(sessions):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _wait(lambda: not _session_processes(sessions), 30, "every process of the sessions to exit")


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.1)


@dataclass(frozen=True)
class RayCluster:
    address: str
    environment: dict[str, str]  # what its workers see: the test plug-in and its hooks
    control: Path  # the hooks' folder: a test arms them by creating it
    sessions: set[int]  # every process of the cluster is in one of these

    def cpus(self) -> float:
        script = (
            f"import ray; ray.init(address={self.address!r}, logging_level='error');"
            "print(ray.available_resources().get('CPU', 0.0))"
        )
        completed = subprocess.run(
            [sys.executable, "-c", script],
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return float(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    _require_ray()
    root = tmp_path_factory.mktemp("ray")
    control = root / "control"
    environment = {
        **install_plugin(root / "plugin"),
        "BENCH_TEST_PAUSE_ONCE": str(control / "paused"),
        "BENCH_TEST_BUILT": str(control / "built"),
        "RAY_USAGE_STATS_ENABLED": "0",
        # Ray 2.5x and later authenticate every connection; nodes and drivers share a token.
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": uuid.uuid4().hex,
    }
    # Ray's Unix sockets live under its temp folder, whose path must stay short.
    temp_dir = tempfile.mkdtemp(prefix="bench-ray-", dir="/tmp")
    ray = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    address = f"127.0.0.1:{port}"
    logs = root / "logs"
    logs.mkdir()

    def start(name: str, arguments: list[str]) -> subprocess.Popen:
        # Every port chosen free, so that a Ray cluster already on this machine is no matter.
        ports = ["--dashboard-agent-listen-port", "--dashboard-agent-grpc-port"]
        ports += ["--metrics-export-port", "--runtime-env-agent-port"]
        options = [value for option in ports for value in (option, str(_free_port()))]
        command = [ray, "start", "--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1"]
        return subprocess.Popen(
            [*command, "--disable-usage-stats", *options, *arguments],
            env=environment,
            stdout=(logs / f"{name}.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    head_options = ["--head", "--port", str(port), "--temp-dir", temp_dir]
    head_options += ["--include-dashboard", "false"]
    starters = [start("head", head_options)]
    cluster = RayCluster(address, environment, control, {starters[0].pid})

    def started(name: str, starter: subprocess.Popen) -> bool:
        log = (logs / f"{name}.log").read_text()
        assert starter.poll() is None, f"`ray start` of the {name} exited:\n{log}"
        return "Ray runtime started" in log

    try:
        _wait(lambda: started("head", starters[0]), 90, "the head")
        starters.append(start("node", ["--address", address]))
        cluster.sessions.add(starters[1].pid)
        _wait(lambda: started("node", starters[1]), 90, "the second node")
        _wait(lambda: cluster.cpus() == 2.0, 90, "two CPUs on two nodes")
        yield cluster
    finally:
        # All at once, SIGKILL: a node stopped with SIGTERM drains for 30 s first, and
        # nothing of a test cluster needs saving.
        _kill_sessions(cluster.sessions)
        for starter in starters:
            starter.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def disarmed_hooks(request):
    """Each test starts with the plug-in's pause and build log disarmed."""
    if "ray_cluster" in request.fixturenames:
        control = request.getfixturevalue("ray_cluster").control
        shutil.rmtree(control, ignore_errors=True)
    yield


def _tones(folder: Path, count: int) -> Path:
    for index in range(count):
        write_tone(folder / f"tone{index:02d}.wav", seconds=0.5, frequency=200 + 37 * index)
    return folder


def _run_arguments(data: Path, out: Path) -> list[str]:
    arguments = ["run", "--codec", "slow-quantizer,opus", "--bitrates", "6,128"]
    arguments += ["--data", f"folder:{data}", "--metrics", METRICS, "--quiet", "--no-report"]
    # A cache of its own: a run served from another run's cache computes nothing.
    return [*arguments, "--out", str(out), "--cache", str(out.parent / f"{out.name}-cache")]


def _ray_arguments(cluster: RayCluster) -> list[str]:
    return ["--executor", "ray", "--ray-address", cluster.address, "--workers", "2"]


def _finish(process: subprocess.Popen, timeout: float = 300) -> str:
    _, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr
    return stderr


def _stable_rows(run_dir: Path, ignored: tuple[str, ...] = ()) -> list[dict]:
    rows = [
        {key: value for key, value in row.items() if key not in VOLATILE + ignored}
        for row in RunStore(run_dir).rows()
    ]
    return sorted(rows, key=lambda row: json.dumps(row, sort_keys=True))


def _only_run(out: Path) -> Path:
    (run_dir,) = out.iterdir()
    return run_dir


def _keys(run_dir: Path) -> list[tuple]:
    return [(row["codec"], row["item"], row["metric"]) for row in RunStore(run_dir).rows()]


def _kill_after_rows(process: subprocess.Popen, out: Path, rows: int) -> Path:
    """SIGKILL the driver once its run has ``rows`` rows (and not all of them)."""

    def enough() -> bool:
        found = list(out.glob("*/results.jsonl"))
        return bool(found) and found[0].read_bytes().count(b"\n") >= rows

    _wait(lambda: enough() or process.poll() is not None, 120, f"{rows} rows")
    assert process.poll() is None, f"the run ended before the kill: {process.communicate()}"
    os.kill(process.pid, signal.SIGKILL)  # the driver alone, as the OOM killer would
    process.wait()
    return _only_run(out)


@dataclass(frozen=True)
class Sweep:
    """The tones every cluster test runs, and the rows of the same sweep run inline."""

    data: Path
    expected: list[dict]


@pytest.fixture(scope="module")
def sweep(ray_cluster, tmp_path_factory) -> Sweep:
    root = tmp_path_factory.mktemp("sweep")
    data = _tones(root / "data", ITEMS)
    # Hooks disarmed: nothing pauses, nothing is logged.
    environment = {**ray_cluster.environment, "BENCH_TEST_PAUSE_ONCE": "", "BENCH_TEST_BUILT": ""}
    _finish(start_bench([*_run_arguments(data, root / "inline"), "--workers", "1"], environment))
    expected = _stable_rows(_only_run(root / "inline"))
    assert len(expected) == ITEMS * 2 * len(METRICS.split(","))
    return Sweep(data, expected)


def _paused_pid(cluster: RayCluster, process: subprocess.Popen) -> int:
    """The pid of the worker the plug-in's pause holds, once it holds one."""
    paused = cluster.control / "paused"

    def claimed() -> bool:
        return paused.exists() and paused.read_text() != "" or process.poll() is not None

    _wait(claimed, 120, "a paused worker")
    assert process.poll() is None, f"the run ended before the pause: {process.communicate()}"
    return int(paused.read_text())


def _complete_once(run_dir: Path, expected: list[dict], resumed: bool = False) -> None:
    """Every row of ``expected`` once, with its values. A resumed run may take from the
    cache what the killed one's workers computed but the driver had not yet recorded."""
    keys = _keys(run_dir)
    assert len(keys) == len(set(keys)), "rows repeated"
    ignored = ("decoded_from_cache",) if resumed else ()
    expected = [
        {key: value for key, value in row.items() if key not in ignored} for row in expected
    ]
    assert _stable_rows(run_dir, ignored) == expected, "rows missing or unlike the inline run's"


def test_a_two_node_run_gives_the_inline_rows_and_loads_the_codec_once_per_worker(
    ray_cluster, sweep, tmp_path
):
    data, expected = sweep.data, sweep.expected
    ray_cluster.control.mkdir()  # arms the build log (the pause waits for a third decode)
    (ray_cluster.control / "paused").write_text("disarmed")
    arguments = [*_run_arguments(data, tmp_path / "ray"), *_ray_arguments(ray_cluster)]
    driver = start_bench(arguments, ray_cluster.environment)
    _finish(driver)
    run_dir = _only_run(tmp_path / "ray")
    _complete_once(run_dir, expected)
    execution = RunStore(run_dir).read_config()["execution"]
    assert execution["executor"] == "ray" and execution["workers"] == 2
    assert execution["ray"]["nodes"] == 2 and execution["ray"]["cpus"] == 2
    built = Counter((ray_cluster.control / "built").read_text().split())
    assert built.pop(str(driver.pid)) == 1  # the driver asks it for its bitrates
    # ITEMS tasks of the plug-in codec on two workers: built once in each, not once per task.
    assert len(built) == 2 and set(built.values()) == {1}, built


def test_a_worker_killed_mid_task_is_retried_and_every_row_is_there_once(
    ray_cluster, sweep, tmp_path
):
    data, expected = sweep.data, sweep.expected
    ray_cluster.control.mkdir()
    arguments = [*_run_arguments(data, tmp_path / "ray"), *_ray_arguments(ray_cluster)]
    process = start_bench(arguments, ray_cluster.environment)
    worker = _paused_pid(ray_cluster, process)
    assert worker in _session_processes(ray_cluster.sessions), "the paused codec is not on Ray"
    os.kill(worker, signal.SIGKILL)
    stderr = _finish(process)
    _complete_once(_only_run(tmp_path / "ray"), expected)
    built = Counter((ray_cluster.control / "built").read_text().split())
    del built[str(process.pid)]
    assert str(worker) in built and len(built) == 3, f"no restarted worker: {built}"
    assert "Traceback" not in stderr, stderr


def test_a_killed_driver_leaves_no_worker_and_its_run_resumes_on_the_cluster(
    ray_cluster, sweep, tmp_path
):
    data, expected = sweep.data, sweep.expected
    ray_cluster.control.mkdir()
    out = tmp_path / "ray"
    process = start_bench(
        [*_run_arguments(data, out), *_ray_arguments(ray_cluster)], ray_cluster.environment
    )
    paused = _paused_pid(ray_cluster, process)
    run_dir = _kill_after_rows(process, out, 1)
    # The dead driver's workers, the paused one included, go with it: their CPUs come back.
    _wait(lambda: ray_cluster.cpus() == 2.0, 60, "the dead driver's workers to be released")
    assert paused not in _session_processes(ray_cluster.sessions)
    assert len(_keys(run_dir)) < len(expected)
    resumed = start_bench(
        ["run", "--resume", str(run_dir), "--quiet", "--no-report", *_ray_arguments(ray_cluster)],
        ray_cluster.environment,
    )
    _finish(resumed)
    _complete_once(run_dir, expected, resumed=True)


def test_ctrl_c_stops_a_cluster_run_at_once_names_it_and_frees_the_workers(
    ray_cluster, sweep, tmp_path
):
    data = sweep.data
    ray_cluster.control.mkdir()
    out = tmp_path / "ray"
    process = start_bench(
        [*_run_arguments(data, out), *_ray_arguments(ray_cluster)], ray_cluster.environment
    )
    paused = _paused_pid(ray_cluster, process)
    # As a terminal's Ctrl-C: the driver's process group; the workers are on the cluster.
    os.killpg(process.pid, signal.SIGINT)
    # A behaviour bound, not a timing: the paused task would hold the run ten minutes.
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert f"continue with `bench run --resume {_only_run(out)}`" in stderr
    _wait(lambda: ray_cluster.cpus() == 2.0, 60, "the interrupted run's workers to be released")
    assert paused not in _session_processes(ray_cluster.sessions)


def test_runs_resume_across_executors_with_identical_values(ray_cluster, sweep, tmp_path):
    data, expected = sweep.data, sweep.expected
    # Started on a local process pool, killed, finished on Ray.
    ray_cluster.control.mkdir()
    out = tmp_path / "process"
    process = start_bench([*_run_arguments(data, out), "--workers", "2"], ray_cluster.environment)
    _paused_pid(ray_cluster, process)
    run_dir = _kill_after_rows(process, out, 1)
    _finish(
        start_bench(
            [
                "run",
                "--resume",
                str(run_dir),
                "--quiet",
                "--no-report",
                *_ray_arguments(ray_cluster),
            ],
            ray_cluster.environment,
        )
    )
    _complete_once(run_dir, expected, resumed=True)
    # Started on Ray, killed, finished inline.
    shutil.rmtree(ray_cluster.control)
    ray_cluster.control.mkdir()
    out = tmp_path / "ray"
    process = start_bench(
        [*_run_arguments(data, out), *_ray_arguments(ray_cluster)], ray_cluster.environment
    )
    _paused_pid(ray_cluster, process)
    run_dir = _kill_after_rows(process, out, 1)
    _finish(
        start_bench(
            ["run", "--resume", str(run_dir), "--quiet", "--no-report", "--workers", "1"],
            ray_cluster.environment,
        )
    )
    _complete_once(run_dir, expected, resumed=True)
    executions = RunStore(run_dir).read_config()["execution"]
    assert executions["executor"] == "ray", "config.json records how the run was started"


def test_a_local_ray_instance_gives_the_inline_rows_and_leaves_nothing_running(tmp_path):
    _require_ray()
    data = _tones(tmp_path / "data", 4)
    environment = {**install_plugin(tmp_path / "plugin"), "RAY_USAGE_STATS_ENABLED": "0"}
    _finish(
        start_bench([*_run_arguments(data, tmp_path / "inline"), "--workers", "1"], environment)
    )
    arguments = [*_run_arguments(data, tmp_path / "ray"), "--executor", "ray", "--workers", "2"]
    driver = start_bench(arguments, environment)
    try:
        _finish(driver)
        # The instance the driver started (its own session) stopped with it.
        _wait(lambda: not _session_processes({driver.pid}), 30, "the local Ray instance to stop")
    finally:
        _kill_sessions({driver.pid})
    assert _stable_rows(_only_run(tmp_path / "ray")) == _stable_rows(_only_run(tmp_path / "inline"))
    execution = RunStore(_only_run(tmp_path / "ray")).read_config()["execution"]
    assert execution["ray"]["address"] == "local" and execution["ray"]["nodes"] == 1


def test_without_ray_the_ray_executor_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ValueError, match=r"--executor ray needs Ray.*pip install -e '\.\[ray\]'"):
        create_executor("ray", 2)


def test_a_ray_address_without_the_ray_executor_is_refused(tmp_path, capsys):
    data = _tones(tmp_path / "data", 1)
    arguments = ["run", "--codec", "identity", "--data", f"folder:{data}"]
    status = main([*arguments, "--ray-address", "auto", "--out", str(tmp_path / "runs")])
    assert status == 2
    assert "--ray-address: expected --executor ray with it, got --executor (default)" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "runs").exists()

"""A new codec is its folder plus one registration (ARCHITECTURE.md): a toy codec package in
a temporary folder, registered through the ``bench.codecs`` entry-point group with no file of
this project touched, is checked by the codec contract, swept and reported like a built-in."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from helpers import REPO_ROOT, TOY_ENTRY_POINTS, TOY_MODULE, install_distribution

# The console script installed beside this interpreter, as a user runs it.
BENCH = str(Path(sys.executable).with_name("bench"))


def _run(arguments: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        arguments, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
    )


@pytest.mark.slow
def test_a_codec_package_is_checked_swept_and_reported_with_no_project_file_touched(tmp_path):
    site = tmp_path / "site"
    package = site / "toy_package"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""Toy codecs for codec-bench."""\n')
    (package / "codec.py").write_text(TOY_MODULE)
    env = install_distribution(
        site,
        "toy-package",
        {
            "bench.codecs": {
                name: f"toy_package.codec:{target}" for name, target in TOY_ENTRY_POINTS.items()
            }
        },
    )
    status = _run(["git", "status", "--porcelain"], env).stdout

    # The contract test parametrises itself over the new codecs: the good ones pass every
    # check, the one decoding a sample short fails its round trip.
    junit = tmp_path / "contract.xml"
    contract = _run(
        [
            *(sys.executable, "-m", "pytest", "tests/codecs/test_contract.py"),
            *("-k", "test_codec_contract and toy", "-p", "no:cacheprovider"),
            f"--junitxml={junit}",
        ],
        env,
    )
    outcomes: dict[str, dict[str, str | None]] = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        name, _, check = case.get("name").removeprefix("test_codec_contract[")[:-1].partition("-")
        if name == "toy" and check.startswith("iterative-"):
            name, check = "toy-iterative", check.removeprefix("iterative-")
        elif name == "toy" and check.startswith("short-"):
            name, check = "toy-short", check.removeprefix("short-")
        failure = case.find("failure")
        outcomes.setdefault(name, {})[check] = None if failure is None else failure.get("message")
    assert set(outcomes) == set(TOY_ENTRY_POINTS), contract.stdout[-2000:]
    checks = set(outcomes["toy"])
    assert len(checks) >= 7 and all(set(found) == checks for found in outcomes.values())
    assert not any(outcomes["toy"].values()) and not any(outcomes["toy-iterative"].values())
    assert "returned shape (1, 0)" in outcomes["toy-short"]["round_trip"]
    assert contract.returncode == 1  # pytest's status for failed tests: toy-short's

    # A sweep over bitrates and NFE counts, then the report, name the new codecs.
    run_dir = tmp_path / "run"
    sweep = _run(
        [
            *(BENCH, "run", "--codec", "toy,toy-iterative"),
            *("--bitrates", "32,64", "--nfe", "1,4", "--items", "cards_001,flite_slt_1"),
            *("--metrics", "si_sdr,mel_distance,kbps_actual", "--no-cache", "--workers", "1"),
            *("--run-dir", str(run_dir), "--quiet"),
        ],
        env,
    )
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    conditions = {(row["label"], row["bitrate"], row["nfe"]) for row in rows}
    assert conditions == {
        *(("toy", bitrate, None) for bitrate in (32.0, 64.0)),
        *(("toy-iterative", bitrate, nfe) for bitrate in (32.0, 64.0) for nfe in (1, 4)),
    }
    assert all(row["failure"] is None for row in rows), [row["failure"] for row in rows]
    kbps = {row["bitrate"]: row["value"] for row in rows if row["metric"] == "kbps_actual"}
    # From the real bytes: every sample at 64 kbps, every other one (rounded up) at 32.
    assert kbps[64.0] == pytest.approx(64.0) and kbps[32.0] == pytest.approx(32.0, rel=1e-3)

    report = _run([BENCH, "report", str(run_dir)], env)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "toy-iterative" in report.stdout
    assert "toy-iterative" in (run_dir / "report" / "index.html").read_text()
    # Nothing of the project changed on the way.
    assert _run(["git", "status", "--porcelain"], env).stdout == status

"""How long `bench report` takes, this build beside an earlier one, on the same runs.

    python benchmarks/report_speed.py [--baseline-rev 88c264f] [--ci-run DIR] [--rounds 3]

Two runs are reported on: a small one made here (Opus at 6 and 12 kbps on 4 embedded items,
scored by the CI suite's metrics: the "2-condition, 4-item run" of issue 20) and the CI
suite's run (``--ci-run DIR``, or made here with ``bench run --suite ci``, about ten
minutes), without its token statistics, which the earlier build cannot read. Each build
runs ``bench report RUN --out DIR`` as a user types it, in a fresh
interpreter, so imports count:

- cold: into a folder with no previous report;
- rebuild: into a folder holding the report this build wrote of the same run (this build
  takes what did not change from it; the earlier build draws everything again).

The earlier build is ``git worktree add`` of ``--baseline-rev`` (default: the commit
before issue 20's report changes), run with this virtual environment and its source first
on ``PYTHONPATH`` (``bench.codecs``, which the editable install maps to this checkout's
``codecs/``, is this checkout's in both; a report uses only its mel front end). Rounds
alternate the builds so machine load hits both alike; the table gives medians and the ratio
earlier / this. Writes ``reports/report_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import provenance

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "reports" / "report_speed.json"
DEFAULT_BASELINE = "88c264f"
CI_METRICS = (
    "mel_distance,mel_distance_dac,si_sdr,pesq_wb,pesq_nb,stoi,estoi,visqol_speech,"
    "visqol_audio,wer,cer,speaker_similarity,dnsmos,kbps_actual"
)


def bench(arguments: list[str], source: Path | None = None) -> float:
    """Run ``bench ARGUMENTS`` from ``source`` (default: this checkout); wall seconds."""
    environment = dict(os.environ)
    if source is not None:
        environment["PYTHONPATH"] = str(source)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bench.cli", *arguments],
        check=True,
        env=environment,
        cwd=source or REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def small_run(folder: Path) -> Path:
    run_dir = folder / "small"
    bench(
        [
            "run", "--codec", "opus:6,12", "--data", "embedded", "--limit", "4",
            "--metrics", CI_METRICS, "--no-cache", "--quiet", "--no-report",
            "--run-dir", str(run_dir),
        ]
    )  # fmt: skip
    return run_dir


def ci_run(folder: Path) -> Path:
    run_dir = folder / "ci"
    bench(
        ["run", "--suite", "ci", "--no-cache", "--quiet", "--no-report", "--run-dir", str(run_dir)]
    )
    return run_dir


def comparable_copy(run_dir: Path, scratch: Path) -> Path:
    """``run_dir`` without the token statistics (metrics pooled as code histograms), which
    builds before issue 20 cannot read; both builds report on this copy."""
    copy = scratch / f"{run_dir.name}-comparable"
    shutil.copytree(run_dir / "listening", copy / "listening")
    config = json.loads((run_dir / "config.json").read_text())
    pooled = {
        name
        for name, meta in config.get("metrics", {}).items()
        if "statistic" in (meta.get("aggregation") or {})
    }
    config["metrics"] = {
        name: meta for name, meta in config["metrics"].items() if name not in pooled
    }
    (copy / "config.json").write_text(json.dumps(config, indent=2))
    with (run_dir / "results.jsonl").open() as rows, (copy / "results.jsonl").open("w") as kept:
        for line in rows:
            if json.loads(line)["metric"].split(".", 1)[0] not in pooled:
                kept.write(line)
    return copy


def measure(run_dir: Path, builds: dict[str, Path | None], rounds: int, scratch: Path) -> dict:
    """Median cold and rebuild seconds of each build on ``run_dir``."""
    times: dict[str, dict[str, list[float]]] = {
        name: {"cold": [], "rebuild": []} for name in builds
    }
    for round_index in range(rounds):
        for name, source in builds.items():
            out = scratch / f"{run_dir.name}-{name}-{round_index}"
            shutil.rmtree(out, ignore_errors=True)
            report = ["report", str(run_dir), "--out", str(out)]
            times[name]["cold"].append(bench(report, source))
            times[name]["rebuild"].append(bench(report, source))
            shutil.rmtree(out)
    return {
        name: {kind: statistics.median(values) for kind, values in kinds.items()}
        | {"rounds": rounds}
        for name, kinds in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-rev", default=DEFAULT_BASELINE)
    parser.add_argument("--ci-run", type=Path, help="a finished `bench run --suite ci` run")
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="report-speed-") as temporary:
        scratch = Path(temporary)
        baseline = scratch / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(baseline), arguments.baseline_rev],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        try:
            builds = {arguments.baseline_rev: baseline, "this build": None}
            runs = {"2 conditions x 4 items": small_run(scratch)}
            runs["CI suite"] = comparable_copy(arguments.ci_run or ci_run(scratch), scratch)
            results = {
                name: measure(run_dir, builds, arguments.rounds, scratch)
                for name, run_dir in runs.items()
            }
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(baseline)], cwd=REPO, check=False
            )
    print(f"{'run':<24} {'build':<12} {'cold s':>8} {'rebuild s':>10}")
    for run_name, by_build in results.items():
        for build, seconds in by_build.items():
            print(f"{run_name:<24} {build:<12} {seconds['cold']:>8.2f} {seconds['rebuild']:>10.2f}")
        earlier, this = by_build[arguments.baseline_rev], by_build["this build"]
        print(
            f"{'':<24} {'ratio':<12} {earlier['cold'] / this['cold']:>7.1f}x "
            f"{earlier['rebuild'] / this['rebuild']:>9.1f}x"
        )
    REPORT.write_text(
        json.dumps(
            {
                "what": "wall seconds of `bench report RUN --out DIR` in a fresh interpreter, "
                "median over rounds; cold: no previous report, rebuild: the build's own "
                "previous report of the same run in the folder",
                "baseline_rev": arguments.baseline_rev,
                "results": results,
                **provenance(os.cpu_count() or 1),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten: {REPORT}")


if __name__ == "__main__":
    main()

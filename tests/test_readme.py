"""The README's commands are the ones CI runs, and its examples work as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from helpers import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def _block_after(marker: str, language: str) -> str:
    match = re.search(re.escape(marker) + r".*?```" + language + r"\n(.*?)```", README, re.S)
    assert match, f"no ```{language} block after {marker!r} in README.md"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command():
    command = _block_after("<!-- test-command", "bash")
    ci_lines = (REPO_ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-1] == command


def _python(arguments: list[str], cwd, env, exit_code: int = 0) -> str:
    """Run this Python with ``arguments``; return its output after checking its exit code."""
    completed = subprocess.run(
        [sys.executable, *arguments],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == exit_code, completed.stderr
    return completed.stdout


@pytest.mark.slow
def test_the_main_job_and_the_python_example_run(tmp_path):
    env = {**os.environ, "BENCH_CACHE": str(tmp_path / "cache")}
    main_job = _block_after("## On a fresh machine", "bash").split("&&")[-1].strip()
    assert main_job == ".venv/bin/bench run --codec opus --bitrates 6,12"
    # Exit 3, as the README says: at 6 kbps the residual delay of a few items cannot be
    # told (SILK narrowband), and those values alone are NaN, named under the table.
    printed = _python(["-m", "bench.cli", *main_job.split()[1:], "--quiet"], tmp_path, env, 3)
    failed = re.findall(r"^  \d+ x (.*)$", printed.split("value(s) failed")[1], re.MULTILINE)
    assert failed and all(reason.startswith(("no distinct peak", "no match")) for reason in failed)
    assert re.search(r"\|\s*opus\s*\|\s*6\s*\|\s*29\s*\|", printed)
    assert re.search(r"\|\s*opus\s*\|\s*12\s*\|\s*29\s*\|", printed)
    run_dir = tmp_path / printed.split("run: ")[1].split()[0]
    assert (run_dir / "report" / "index.html").exists(), "bench run writes the report"

    printed = _python(["-c", _block_after("## Python API", "python")], tmp_path, env)
    assert re.search(r"\|\s*mp3\s*\|\s*64\s*\|\s*3\s*\|", printed)

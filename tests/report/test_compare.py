"""Regression gating: `bench compare` statuses, tolerances, reports and exit codes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from bench.codecs.classic.opus import OpusCodec
from helpers import DIRECTIONS, frame, rows, with_added_noise

from bench.cli import EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, main
from bench.registry import CODECS
from bench.report.compare import (
    SUMMARY_FORMAT,
    SUMMARY_VERSION,
    Tolerance,
    compare_summaries,
    junit_xml,
    load_summary,
    load_tolerances,
    markdown_report,
)
from bench.report.stats import summary_stats


def document(*groups: list[dict], run_id: str = "run") -> dict:
    stats = summary_stats(frame(*groups), DIRECTIONS)
    return {
        "format": SUMMARY_FORMAT,
        "version": SUMMARY_VERSION,
        "run_id": run_id,
        "git": {"commit": "abc123", "dirty": False},
        "versions": {"pesq": "0.0.4"},
        "conditions": json.loads(stats.to_json(orient="records")),
    }


BASELINE = document(
    rows("opus", 6.0, "pesq_wb", [2.0, 2.2, 2.4]),
    rows("opus", 6.0, "mel_distance", [0.10, 0.10, 0.10]),
    rows("mp3", 32.0, "pesq_wb", [3.5, 3.6, 3.7]),
    run_id="base",
)


def statuses(comparison) -> dict[tuple, str]:
    return {
        (row.codec, row.bitrate, row.metric): row.status
        for row in comparison.itertuples(index=False)
    }


def test_identical_runs_are_unchanged():
    comparison = compare_summaries(BASELINE, BASELINE)
    assert set(comparison["status"]) == {"unchanged"}
    assert "✅ no regressions" in markdown_report(comparison, BASELINE, BASELINE)


def test_changes_beyond_tolerance_in_the_worse_direction_regress():
    new = document(
        rows("opus", 6.0, "pesq_wb", [1.9, 2.1, 2.3]),  # -0.1 MOS: beyond the default 0.05
        rows("opus", 6.0, "mel_distance", [0.101, 0.101, 0.101]),  # +1%: within 2%
        rows("mp3", 32.0, "pesq_wb", [3.7, 3.8, 3.9]),  # +0.2: an improvement
        rows("mp3", 64.0, "pesq_wb", [4.0, 4.1, 4.2]),
        run_id="new",
    )
    comparison = compare_summaries(BASELINE, new)
    assert statuses(comparison) == {
        ("opus", 6.0, "pesq_wb"): "regression",
        ("opus", 6.0, "mel_distance"): "unchanged",
        ("mp3", 32.0, "pesq_wb"): "improvement",
        ("mp3", 64.0, "pesq_wb"): "new",
    }
    text = markdown_report(comparison, BASELINE, new)
    assert "❌ regressions found" in text
    assert "### Regressions (1)" in text and "### Improvements (1)" in text
    assert "### New conditions (not in the baseline) (1)" in text
    assert "`abc123`" in text


def test_lower_is_better_metrics_regress_upwards():
    worse = document(
        rows("opus", 6.0, "pesq_wb", [2.0, 2.2, 2.4]),
        rows("opus", 6.0, "mel_distance", [0.11, 0.11, 0.11]),
        rows("mp3", 32.0, "pesq_wb", [3.5, 3.6, 3.7]),
    )
    better = document(
        rows("opus", 6.0, "pesq_wb", [2.0, 2.2, 2.4]),
        rows("opus", 6.0, "mel_distance", [0.09, 0.09, 0.09]),
        rows("mp3", 32.0, "pesq_wb", [3.5, 3.6, 3.7]),
    )
    assert statuses(compare_summaries(BASELINE, worse))[("opus", 6.0, "mel_distance")] == (
        "regression"
    )
    assert statuses(compare_summaries(BASELINE, better))[("opus", 6.0, "mel_distance")] == (
        "improvement"
    )


def test_missing_conditions_unscorable_values_and_new_failures_are_reported():
    new = document(
        rows("opus", 6.0, "pesq_wb", [np.nan, np.nan, np.nan], failure="pesq: silent"),
        rows("opus", 6.0, "mel_distance", [0.10, 0.10, np.nan], failure="codec: crashed"),
    )
    comparison = compare_summaries(BASELINE, new)
    assert statuses(comparison) == {
        ("opus", 6.0, "pesq_wb"): "regression",
        ("opus", 6.0, "mel_distance"): "regression",
        ("mp3", 32.0, "pesq_wb"): "missing",
    }
    reasons = set(comparison["reason"])
    assert "scored in the baseline, NaN now" in reasons
    assert "failed items 0 -> 1" in reasons


def test_tolerance_file_overrides_defaults(tmp_path):
    new = document(
        rows("opus", 6.0, "pesq_wb", [1.9, 2.1, 2.3]),
        rows("opus", 6.0, "mel_distance", [0.10, 0.10, 0.10]),
        rows("mp3", 32.0, "pesq_wb", [3.5, 3.6, 3.7]),
    )
    toml = tmp_path / "tolerance.toml"
    toml.write_text("[pesq_wb]\nabsolute = 0.2\n")
    tolerances = load_tolerances(toml)
    assert tolerances["pesq_wb"] == Tolerance(absolute=0.2)
    assert tolerances["mel_distance"] == Tolerance(relative=0.02), "others keep defaults"
    assert set(compare_summaries(BASELINE, new, tolerances)["status"]) == {"unchanged"}
    as_json = tmp_path / "tolerance.json"
    as_json.write_text(json.dumps({"pesq_wb": {"relative": 0.5}}))
    assert load_tolerances(as_json)["pesq_wb"] == Tolerance(relative=0.5)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[pesq_wb]\nabsolut = 0.2\n", "expected {absolute = X, relative = Y}"),
        ("[pesq_wb]\nabsolute = -1\n", "finite values >= 0"),
        ("not toml [", "expected a TOML or JSON file"),
    ],
)
def test_bad_tolerance_files_are_named(tmp_path, text, message):
    path = tmp_path / "tolerance.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("{", r"\{")):
        load_tolerances(path)


def test_junit_xml_fails_regressions_and_skips_new_or_missing():
    new = document(rows("opus", 6.0, "pesq_wb", [1.0, 1.0, 1.0]))
    suite = ElementTree.fromstring(junit_xml(compare_summaries(BASELINE, new)))
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    assert suite.get("skipped") == "2"
    failure = suite.find("testcase[@classname='opus.6kbps'][@name='pesq_wb']/failure")
    assert failure is not None and "worse by" in failure.get("message")


def test_load_summary_rejects_what_is_not_a_summary(tmp_path):
    with pytest.raises(ValueError, match="expected a run directory with config.json"):
        load_summary(tmp_path)
    with pytest.raises(ValueError, match="expected a run directory or a summary.json"):
        load_summary(tmp_path / "nothing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_summary(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "something"}')
    with pytest.raises(ValueError, match="expected a 'codec-bench summary' document"):
        load_summary(tmp_path / "other.json")
    assert main(["compare", str(tmp_path / "other.json"), str(tmp_path)]) == EXIT_USAGE


@pytest.mark.slow
def test_injected_degradation_is_caught_and_an_unchanged_run_passes(tmp_path, monkeypatch):
    """End to end through the CLI: a codec wrapper adding noise at 20 dB SNR must fail the
    gate against a committed-style baseline; a rerun of the clean codec must pass."""

    def run(name: str) -> str:
        run_dir = tmp_path / name
        arguments = [
            "run",
            "--codec",
            "opus",
            "--bitrates",
            "12",
            "--data",
            "embedded",
            "--limit",
            "3",
            "--max-seconds",
            "2",
            "--metrics",
            "mel_distance,si_sdr,pesq_wb,stoi,kbps_actual",
            "--workers",
            "1",  # inline, so the monkeypatched registry applies
            "--no-cache",
            "--no-report",
            "--quiet",
            "--run-dir",
            str(run_dir),
        ]
        assert main(arguments) == EXIT_OK
        return str(run_dir)

    baseline = tmp_path / "baseline.json"
    assert main(["compare", str(baseline), run("clean"), "--update-baseline"]) == EXIT_OK
    junit = tmp_path / "junit.xml"
    assert main(["compare", str(baseline), run("rerun"), "--junit", str(junit)]) == EXIT_OK
    assert ElementTree.parse(junit).getroot().get("failures") == "0"

    monkeypatch.setitem(CODECS._targets, "opus", with_added_noise(OpusCodec, snr_db=20))
    markdown = tmp_path / "comment.md"
    noisy = run("noisy")
    code = main(
        ["compare", str(baseline), noisy, "--junit", str(junit), "--markdown", str(markdown)]
    )
    assert code == EXIT_REGRESSION
    comparison = compare_summaries(load_summary(baseline), load_summary(noisy))
    regressed = set(comparison.loc[comparison["status"] == "regression", "metric"])
    assert {"si_sdr", "pesq_wb", "mel_distance"} <= regressed
    assert "kbps_actual" not in regressed, "the bitstream did not change"
    assert "❌ regressions found" in markdown.read_text()
    assert int(ElementTree.parse(junit).getroot().get("failures")) == len(
        comparison[comparison["status"] == "regression"]
    )

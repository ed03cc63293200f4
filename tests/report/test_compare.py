"""Regression gating: `bench compare` statuses, tolerances, reports and exit codes."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from bench.codecs.classic.opus import OpusCodec
from helpers import DIRECTIONS, frame, make_record, rows, with_added_noise

from bench.cli import EXIT_NOT_COMPARABLE, EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, main
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
from bench.store import RunStore

# The items `rows` writes (item0, item1, ...), with the input hashes of their files.
ITEMS = [{"id": f"item{index}", "input_hash": f"hash{index}"} for index in range(3)]


def document(*groups: list[dict], run_id: str = "run", items: list[dict] = ITEMS) -> dict:
    stats = summary_stats(frame(*groups), DIRECTIONS)
    return {
        "format": SUMMARY_FORMAT,
        "version": SUMMARY_VERSION,
        "run_id": run_id,
        "git": {"commit": "abc123", "dirty": False},
        "versions": {"pesq": "0.0.4"},
        "settings": {"max_seconds": None},
        "items": items,
        "conditions": json.loads(stats.to_json(orient="records")),
    }


def written(tmp_path, name: str, summary: dict) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(summary))
    return str(path)


def compare(tmp_path, baseline: dict, new: dict, *options: str) -> int:
    """``bench compare`` on the two summaries, written as files."""
    return main(
        [
            "compare",
            written(tmp_path, "baseline", baseline),
            written(tmp_path, "new", new),
            *options,
        ]
    )


BASELINE = document(
    rows("opus", 6.0, "pesq_wb", [2.0, 2.2, 2.4]),
    rows("opus", 6.0, "mel_distance", [0.10, 0.10, 0.10]),
    rows("mp3", 32.0, "pesq_wb", [3.5, 3.6, 3.7]),
    run_id="base",
)


def statuses(comparison) -> dict[tuple, str]:
    return {
        (row.label, row.bitrate, row.metric): row.status
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


def test_junit_xml_fails_regressions_and_missing_conditions_and_skips_new_ones():
    new = document(
        rows("opus", 6.0, "pesq_wb", [1.0, 1.0, 1.0]), rows("mp3", 64.0, "pesq_wb", [4.0])
    )
    suite = ElementTree.fromstring(junit_xml(compare_summaries(BASELINE, new)))
    assert suite.get("tests") == "4" and suite.get("failures") == "3"
    assert suite.get("skipped") == "1"
    failure = suite.find("testcase[@classname='opus.6kbps'][@name='pesq_wb']/failure")
    assert failure is not None and "worse by" in failure.get("message")
    assert failure.get("type") == "regression"
    missing = suite.find("testcase[@classname='mp3.32kbps'][@name='pesq_wb']/failure")
    assert missing is not None and missing.get("type") == "missing"
    assert suite.find("testcase[@classname='mp3.64kbps'][@name='pesq_wb']/skipped") is not None


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


def test_an_empty_or_unfinished_new_run_fails_the_gate(tmp_path, capsys):
    """It passed with "no regressions" and exit 0 ("3 missing")."""
    empty = document(rows("opus", 6.0, "pesq_wb", [2.0]))
    empty["conditions"] = []
    junit = tmp_path / "junit.xml"
    assert compare(tmp_path, BASELINE, empty, "--junit", str(junit)) == EXIT_REGRESSION
    output = capsys.readouterr().out
    assert "❌ conditions missing" in output and "3 missing" in output
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("failures") == "3" and suite.get("skipped") == "0"
    assert len(suite.findall("testcase/failure[@type='missing']")) == 3

    lost_metric = document(
        rows("opus", 6.0, "pesq_wb", [2.0, 2.2, 2.4]), rows("mp3", 32.0, "pesq_wb", [3.5, 3.6, 3.7])
    )
    assert compare(tmp_path, BASELINE, lost_metric) == EXIT_REGRESSION
    assert "1 missing" in capsys.readouterr().out


def test_a_condition_over_fewer_items_regresses_even_where_nothing_was_scored():
    """It was "unchanged" (all NaN before and now) or an "improvement" (NaN before)."""
    failed = [np.nan, np.nan, np.nan]
    baseline = document(
        rows("opus", 6.0, "pesq_wb", failed, failure="pesq: silent"),
        rows("mp3", 32.0, "pesq_wb", failed, failure="pesq: silent"),
    )
    new = document(
        rows("opus", 6.0, "pesq_wb", failed[:2], failure="pesq: silent"),
        rows("mp3", 32.0, "pesq_wb", [3.5]),
    )
    comparison = compare_summaries(baseline, new)
    assert set(comparison["status"]) == {"regression"}
    assert set(comparison["reason"]) == {
        "scored over 2 items, the baseline over 3",
        "scored over 1 items, the baseline over 3",
    }


def test_the_baseline_decides_which_direction_is_better():
    """A new run that says lower PESQ is better turned a 1-point drop into an improvement."""
    new = document(
        rows("opus", 6.0, "pesq_wb", [1.0, 1.2, 1.4]),
        rows("opus", 6.0, "mel_distance", [0.10, 0.10, 0.10]),
        rows("mp3", 32.0, "pesq_wb", [3.5, 3.6, 3.7]),
    )
    for condition in new["conditions"]:
        condition["higher_is_better"] = not condition["higher_is_better"]
    comparison = compare_summaries(BASELINE, new)
    assert set(comparison["status"]) == {"regression"}
    assert set(comparison["reason"]) == {
        "the metric's better direction differs from the baseline's"
    }
    assert comparison["higher_is_better"].tolist() == [True, False, True], "the baseline's"


def swapped_items() -> list[dict]:
    return [{"id": f"other{index}", "input_hash": f"other{index}"} for index in range(3)]


@pytest.mark.parametrize(
    "items, settings, named",
    [
        (
            swapped_items(),
            None,
            [
                "3 item(s) of the baseline not in the new run: item0, item1",
                "3 item(s) of the new run not in the baseline: other0",
            ],
        ),
        (
            [*ITEMS[:2], {"id": "item2", "input_hash": "edited"}],
            None,
            ["1 item(s) whose input audio differs (input hash): item2"],
        ),
        (ITEMS, {"max_seconds": 2.0}, ["cropped differently: --max-seconds None in the baseline"]),
    ],
)
def test_runs_over_other_items_are_not_comparable(tmp_path, capsys, items, settings, named):
    """Runs over other items with the same count were compared without a word, and their
    better values counted as improvements (exit 0)."""
    new = document(
        rows("opus", 6.0, "pesq_wb", [3.0, 3.2, 3.4]),
        rows("opus", 6.0, "mel_distance", [0.05, 0.05, 0.05]),
        rows("mp3", 32.0, "pesq_wb", [4.0, 4.1, 4.2]),
        items=items,
    )
    if settings is not None:
        new["settings"] = settings
    junit = tmp_path / "junit.xml"
    markdown = tmp_path / "comment.md"
    code = compare(tmp_path, BASELINE, new, "--junit", str(junit), "--markdown", str(markdown))
    assert code == EXIT_NOT_COMPARABLE
    output = capsys.readouterr().out
    assert "⛔ not comparable" in output and "Improvements" not in output
    for text in named:
        assert text in output
    assert markdown.read_text() == output.removesuffix("\n")
    failure = ElementTree.parse(junit).getroot().find("testcase/failure")
    assert failure.get("type") == "not comparable" and named[0] in failure.get("message")


def test_a_version_1_baseline_is_refused_with_how_to_regenerate_it(tmp_path, capsys):
    old = {key: value for key, value in BASELINE.items() if key != "items"}
    old["version"] = 1
    path = written(tmp_path, "old", old)
    assert main(["compare", path, written(tmp_path, "new", BASELINE)]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert "records no item ids and input hashes" in error
    assert f"bench compare {path} RUN_DIR --update-baseline" in error
    # The command it names replaces the old baseline, which it does not need to read.
    run_dir = run_directory(tmp_path / "run")
    assert main(["compare", path, run_dir, "--update-baseline"]) == EXIT_OK
    assert load_summary(path)["items"] == ITEMS
    assert main(["compare", path, run_dir]) == EXIT_OK


def broken(field: str, value: object, condition: int = 0) -> dict:
    summary = json.loads(json.dumps(BASELINE))
    summary["conditions"][condition][field] = value
    return summary


def without(field: str) -> dict:
    summary = json.loads(json.dumps(BASELINE))
    del summary["conditions"][1][field]
    return summary


def duplicated() -> dict:
    summary = json.loads(json.dumps(BASELINE))
    summary["conditions"].append({**summary["conditions"][0], "bitrate": 6})
    return summary


@pytest.mark.parametrize(
    "summary, message",
    [
        (
            broken("n", "four"),
            r"condition 0 \('opus' at 6.0 kbps, NFE None, metric 'pesq_wb'\): "
            r"expected 'n' to be a whole number >= 0 \(items scored\), got 'four'",
        ),
        (broken("mean", "0.5"), "condition 0 (.*): expected 'mean' to be a finite number or null"),
        (broken("mean", float("inf")), "expected 'mean' to be a finite number or null, got inf"),
        (broken("mean", float("nan")), "expected 'mean' to be a finite number or null, got nan"),
        (broken("failed", -1), "expected 'failed' to be a whole number >= 0"),
        (broken("n", 2.5), "expected 'n' to be a whole number"),
        (broken("bitrate", "6"), "expected 'bitrate' to be a finite number > 0, got '6'"),
        (broken("higher_is_better", "yes"), "expected 'higher_is_better' to be true or false"),
        (broken("nfe", 0), "expected 'nfe' to be null or an NFE, got 0"),
        (broken("n", 0), "expected a mean exactly when items were scored"),
        (without("metric"), "condition 1 (.*): expected a field 'metric', got none"),
        (duplicated(), r"conditions repeat: \('opus', 6.0, None, 'pesq_wb'\)"),
        ({**BASELINE, "items": [ITEMS[0], ITEMS[0]]}, "item ids repeat: item0"),
        ({**BASELINE, "items": "item0"}, "expected 'items' to be a list of"),
        ({**BASELINE, "conditions": {}}, "expected 'conditions' to be a list"),
    ],
)
def test_malformed_summaries_are_refused_naming_file_condition_and_field(
    tmp_path, capsys, summary, message
):
    """`n: "four"` crashed with a traceback (exit 1); "0.5" was judged as a number and
    Infinity as an improvement."""
    path = written(tmp_path, "broken", summary)
    for arguments in (
        [path, written(tmp_path, "good", BASELINE)],
        [written(tmp_path, "good", BASELINE), path],
    ):
        assert main(["compare", *arguments]) == EXIT_USAGE
        error = capsys.readouterr().err
        assert error.startswith(f"bench: error: {path}: ")
        assert re.search(message, error), error


def test_an_empty_baseline_is_a_clear_error_and_never_written(tmp_path, capsys):
    """An empty run compared with itself crashed with KeyError: 'status' (exit 1)."""
    empty = {**BASELINE, "conditions": []}
    path = written(tmp_path, "empty", empty)
    assert main(["compare", path, path]) == EXIT_USAGE
    assert "expected a baseline with at least one condition, got none" in capsys.readouterr().err
    baseline = tmp_path / "baseline.json"
    assert main(["compare", str(baseline), path, "--update-baseline"]) == EXIT_USAGE
    assert not baseline.exists()


def run_directory(path, items: list[dict] = ITEMS) -> str:
    """A finished run directory as the harness leaves it: config and result rows."""
    store = RunStore(path)
    store.create(
        {
            "run_id": path.name,
            "settings": {"codecs": ["opus"], "max_seconds": None},
            "metrics": {"pesq_wb": DIRECTIONS["pesq_wb"]},
            "dataset": {"items": [{**item, "path": "x.wav", "tags": []} for item in items]},
        }
    )
    scored = rows("opus", 6.0, "pesq_wb", [2.0, 2.2, 2.4])
    store.append(make_record(**row, metric_family=row["metric"]) for row in scored)
    return str(path)


def test_a_run_directory_summary_records_its_items_and_their_hashes(tmp_path):
    run_dir = run_directory(tmp_path / "run")
    summary = load_summary(run_dir)
    assert summary["version"] == 2 and summary["items"] == ITEMS
    edited = [{**ITEMS[0], "input_hash": "edited"}, *ITEMS[1:]]
    other = run_directory(tmp_path / "other", edited)
    assert main(["compare", run_dir, run_dir]) == EXIT_OK
    assert main(["compare", run_dir, other]) == EXIT_NOT_COMPARABLE


def test_a_metric_aggregated_another_way_is_not_comparable(tmp_path, capsys):
    """WER became corpus WER (total edits over total words): a baseline of per-utterance
    means would report the new definition as the codec's improvement."""
    new = json.loads(json.dumps(BASELINE))
    for condition in new["conditions"]:
        if condition["metric"] == "pesq_wb":
            condition["aggregate"] = "total edits / total reference_words"
    assert compare(tmp_path, BASELINE, new) == EXIT_NOT_COMPARABLE
    assert "pesq_wb is aggregated differently" in capsys.readouterr().out

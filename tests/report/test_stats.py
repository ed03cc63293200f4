"""Bootstrap intervals, per-condition summaries and paired comparisons (bench.report.stats)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DIRECTIONS, frame, rows

from bench.report.stats import (
    ConditionKey,
    bootstrap_mean_ci,
    paired_comparison,
    run_tags,
    summary_stats,
)


def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_items():
    rng = np.random.default_rng(1)
    small = rng.normal(3.0, 1.0, 10)
    large = rng.normal(3.0, 1.0, 400)
    low_small, high_small = bootstrap_mean_ci(small)
    low_large, high_large = bootstrap_mean_ci(large)
    assert low_small < small.mean() < high_small
    assert low_large < 3.0 < high_large
    assert high_large - low_large < (high_small - low_small) / 3
    # Normal theory: half-width about 1.96 / sqrt(400) = 0.098.
    assert (high_large - low_large) / 2 == pytest.approx(0.098, rel=0.2)
    assert bootstrap_mean_ci(small) == (low_small, high_small), "fixed seed: same interval"


def test_bootstrap_interval_edge_cases():
    assert all(np.isnan(bootstrap_mean_ci(np.array([1.0]))))
    assert all(np.isnan(bootstrap_mean_ci(np.array([np.nan, 2.0]))))
    assert bootstrap_mean_ci(np.array([2.5, 2.5, 2.5])) == (2.5, 2.5)


def test_summary_averages_seeds_per_item_and_counts_failed_items():
    data = frame(
        rows("opus", 6.0, "pesq_wb", [2.0, 3.0, np.nan, 4.0], seed=0, failure="pesq: silent"),
        rows("opus", 6.0, "pesq_wb", [4.0, 3.0, np.nan, 4.0], seed=1, failure="pesq: silent"),
        rows("opus", 6.0, "mel_distance", [0.1, 0.2, 0.3, 0.4]),
    )
    summary = summary_stats(data, DIRECTIONS).set_index("metric")
    pesq = summary.loc["pesq_wb"]
    # Items, not rows: item0 = 3.0, item1 = 3.0, item3 = 4.0; item2 failed under both seeds.
    assert pesq["n"] == 3 and pesq["failed"] == 1
    assert pesq["mean"] == pytest.approx(10 / 3)
    assert pesq["ci_low"] <= pesq["mean"] <= pesq["ci_high"]
    assert bool(pesq["higher_is_better"]) and pesq["unit"] == "MOS-LQO"
    assert not summary.loc["mel_distance", "higher_is_better"]
    assert pesq["kbps_actual"] == pytest.approx(6.06)
    assert pesq["rtf_decode"] == pytest.approx(0.1) and pesq["rtf_encode"] == pytest.approx(0.05)


def test_summary_keeps_codec_order_and_sorts_bitrates():
    data = frame(
        rows("opus", 12.0, "pesq_wb", [3.0, 3.5]),
        rows("opus", 6.0, "pesq_wb", [2.0, 2.5]),
        rows("mp3", 32.0, "pesq_wb", [3.8, 3.9]),
    )
    summary = summary_stats(data, DIRECTIONS)
    assert list(zip(summary["codec"], summary["bitrate"], strict=True)) == [
        ("opus", 6.0),
        ("opus", 12.0),
        ("mp3", 32.0),
    ]


def test_tags_that_split_the_items():
    data = frame(
        rows("opus", 6.0, "pesq_wb", [3.0, 3.5], tags=("speech",)),
        [
            {**row, "item": "music0", "tags": ["music"]}
            for row in rows("opus", 6.0, "pesq_wb", [2.0])
        ],
    )
    assert run_tags(data) == ["music", "speech"]
    assert run_tags(data[data["item"] != "music0"]) == [], "a tag on every item splits nothing"


def paired_frame(shift: float, items: int = 12):
    rng = np.random.default_rng(0)
    baseline = rng.normal(3.0, 0.5, items)
    candidate = baseline + shift + rng.normal(0, 0.05, items)
    return frame(
        rows("opus", 6.0, "pesq_wb", baseline),
        rows("opus", 12.0, "pesq_wb", candidate),
        rows("opus", 6.0, "mel_distance", baseline / 10),
        rows("opus", 12.0, "mel_distance", candidate / 10),
    )


@pytest.mark.parametrize("method", ["wilcoxon", "bootstrap"])
def test_paired_comparison_detects_a_consistent_shift(method):
    result = paired_comparison(
        paired_frame(0.4),
        ConditionKey("opus", 6),
        ConditionKey("opus", 12),
        DIRECTIONS,
        method=method,
    ).set_index("metric")
    pesq, mel = result.loc["pesq_wb"], result.loc["mel_distance"]
    assert pesq["pairs"] == 12
    assert pesq["mean_difference"] == pytest.approx(0.4, abs=0.05)
    assert pesq["ci_low"] < 0.4 < pesq["ci_high"] and pesq["ci_low"] > 0
    assert pesq["p_value"] < 0.01
    assert pesq["verdict"] == "candidate better"
    # A larger mel distance is worse, whatever the sign says.
    assert mel["verdict"] == "candidate worse"
    named = {"wilcoxon": "Wilcoxon signed-rank", "bootstrap": "paired bootstrap"}[method]
    assert named in pesq["test"]
    assert pesq["baseline"] == "opus 6 kbps" and pesq["candidate"] == "opus 12 kbps"


def test_paired_comparison_finds_no_difference_in_noise():
    rng = np.random.default_rng(3)
    values = rng.normal(3.0, 0.5, 12)
    data = frame(
        rows("opus", 6.0, "pesq_wb", values),
        rows("opus", 12.0, "pesq_wb", values + rng.normal(0, 0.02, 12)),
    )
    result = paired_comparison(data, ConditionKey("opus", 6), ConditionKey("opus", 12), DIRECTIONS)
    assert result.loc[0, "p_value"] > 0.05
    assert result.loc[0, "verdict"] == "no significant difference"
    assert "Wilcoxon signed-rank" in result.loc[0, "test"]


def test_paired_comparison_uses_only_items_both_scored():
    data = frame(
        rows("opus", 6.0, "pesq_wb", [3.0, 3.1, 3.2, np.nan], failure="x"),
        rows("opus", 12.0, "pesq_wb", [3.5, np.nan, 3.6, 3.7], failure="x"),
    )
    result = paired_comparison(data, ConditionKey("opus", 6), ConditionKey("opus", 12), DIRECTIONS)
    assert result.loc[0, "pairs"] == 2


def test_paired_comparison_bad_input():
    data = paired_frame(0.1)
    with pytest.raises(ValueError, match="expected one of"):
        paired_comparison(
            data, ConditionKey("opus", 6), ConditionKey("opus", 12), DIRECTIONS, method="t"
        )
    with pytest.raises(ValueError, match="no results for mp3 32 kbps"):
        paired_comparison(data, ConditionKey("opus", 6), ConditionKey("mp3", 32), DIRECTIONS)
    with pytest.raises(ValueError, match="'wer' was not scored"):
        paired_comparison(
            data,
            ConditionKey("opus", 6),
            ConditionKey("opus", 12),
            DIRECTIONS,
            metrics=["wer"],
        )


def test_intervals_do_not_depend_on_row_order_or_last_bit_noise():
    """Two runs with equal values must print equal intervals, although workers finish in
    another order and metric backends differ in the last bit (seen with ESTOI)."""
    # ESTOI of opus at 12 kbps on four CI-suite items, from two runs of the same commit.
    values = [0.9232423065912703, 0.9554039726980795, 0.9056701988597786, 0.7414891888021686]
    noisy = [0.9232423065912704, *values[1:]]
    first = frame(rows("opus", 12.0, "pesq_wb", values))
    second = frame(rows("opus", 12.0, "pesq_wb", noisy)).iloc[::-1]
    one, two = summary_stats(first, DIRECTIONS), summary_stats(second, DIRECTIONS)
    assert (one.loc[0, "ci_low"], one.loc[0, "ci_high"]) == (
        two.loc[0, "ci_low"],
        two.loc[0, "ci_high"],
    )

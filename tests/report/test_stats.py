"""Bootstrap intervals, per-condition summaries and paired comparisons (bench.report.stats)."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest
from helpers import DIRECTIONS, frame, rows

from bench.report.stats import (
    ConditionKey,
    bootstrap_mean_ci,
    bootstrap_ratio_ci,
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


# Ratio metrics: WER and CER are pooled over items (a corpus WER), not averaged.

WER_DIRECTIONS = {
    **DIRECTIONS,
    "wer": {
        "higher_is_better": False,
        "unit": "",
        "aggregation": {"numerator": "edits", "denominator": "reference_words"},
    },
}
# Utterances of very different lengths: a 2-word command beside long paragraphs.
TRUTHS = [
    "turn left",
    "the quick brown fox jumps over the lazy dog " * 6,
    "stop",
    "she sells sea shells by the sea shore and the shells she sells are surely sea shells",
    "call me tomorrow at noon please",
]
HYPOTHESES = [
    "turn light",
    "the quick brown fox jumps over the lazy dog " * 5 + "the quick brown box",
    "shop",
    "she sells sea shells by the sea shore and the shells she sells are surely sea shells",
    "call me tomorrow noon",
]


def _asr_rows(codec: str, truths: list[str], hypotheses: list[str], seed: int = 0) -> list[dict]:
    """WER rows as the metric writes them: the value and the item's edit counts."""
    values = [jiwer.wer(t, h) for t, h in zip(truths, hypotheses, strict=True)]
    result = rows(codec, 6.0, "wer", values)
    for row, truth, hypothesis in zip(result, truths, hypotheses, strict=True):
        words = jiwer.process_words(truth, hypothesis)
        row["seed"] = seed
        row["metric_counts"] = {
            "edits": words.substitutions + words.deletions + words.insertions,
            "reference_words": words.substitutions + words.deletions + words.hits,
        }
    return result


def test_corpus_wer_pools_edits_over_utterances_as_jiwer_does():
    summary = summary_stats(frame(_asr_rows("opus", TRUTHS, HYPOTHESES)), WER_DIRECTIONS)
    wer = summary.set_index("metric").loc["wer"]
    # jiwer's own corpus-level WER over the lists: total edits / total reference words.
    corpus = jiwer.wer(TRUTHS, HYPOTHESES)
    per_utterance = np.mean([jiwer.wer(t, h) for t, h in zip(TRUTHS, HYPOTHESES, strict=True)])
    assert wer["mean"] == pytest.approx(corpus)
    assert corpus == pytest.approx(10 / 80) and per_utterance == pytest.approx(0.389, abs=1e-3)
    assert wer["aggregate"] == "total edits / total reference_words over items"
    assert wer["n"] == 5 and wer["failed"] == 0
    assert wer["ci_low"] < corpus < wer["ci_high"]


def test_the_corpus_wer_interval_resamples_utterances_and_recomputes_the_ratio():
    rng = np.random.default_rng(3)
    words = rng.integers(2, 60, 40)
    edits = rng.binomial(words, 0.2)
    low, high = bootstrap_ratio_ci(edits, words)
    # A plain percentile bootstrap of the same statistic, written out: items drawn with
    # their counts, the ratio recomputed. BCa differs from it by a little skew correction.
    draws = rng.integers(0, 40, (20_000, 40))
    ratios = edits[draws].sum(axis=1) / words[draws].sum(axis=1)
    reference_low, reference_high = np.percentile(ratios, [2.5, 97.5])
    assert low == pytest.approx(reference_low, abs=0.01)
    assert high == pytest.approx(reference_high, abs=0.01)
    assert low < edits.sum() / words.sum() < high
    assert all(np.isnan(bootstrap_ratio_ci(edits[:1], words[:1])))
    assert bootstrap_ratio_ci(np.array([1, 3]), np.array([2, 6])) == (0.5, 0.5)


def test_corpus_wer_keeps_failed_items_out_and_averages_seeds_per_item():
    seeds = [
        _asr_rows("opus", TRUTHS, HYPOTHESES, seed=0),
        _asr_rows("opus", TRUTHS, [*HYPOTHESES[:4], "call me tomorrow at noon please"], seed=1),
    ]
    failed = {**seeds[1][0], "item": "item9", "value": np.nan, "metric_counts": None}
    failed["failure"] = "no words recognised in the reference audio"
    summary = summary_stats(frame(*seeds, [failed]), WER_DIRECTIONS).set_index("metric")
    # item4 has 2 edits under seed 0 and none under seed 1: 1 edit on average.
    assert summary.loc["wer", "mean"] == pytest.approx(9 / 80)
    assert (summary.loc["wer", "n"], summary.loc["wer", "failed"]) == (5, 1)


def test_a_scored_ratio_row_without_its_counts_is_refused_by_name():
    data = _asr_rows("opus", TRUTHS, HYPOTHESES)
    data[2]["metric_counts"] = None
    with pytest.raises(ValueError, match="'wer' is pooled as edits / reference_words.*'item2'"):
        summary_stats(frame(data), WER_DIRECTIONS)


def test_a_metric_without_a_declared_ratio_is_still_a_mean_of_items():
    # A run recorded before ratio metrics existed: its config declares no aggregation.
    data = frame(_asr_rows("opus", TRUTHS, HYPOTHESES))
    directions = {**DIRECTIONS, "wer": {"higher_is_better": False, "unit": ""}}
    wer = summary_stats(data, directions).set_index("metric").loc["wer"]
    assert wer["mean"] == pytest.approx(data["value"].mean())
    assert wer["aggregate"] == "mean over items"

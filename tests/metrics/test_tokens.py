"""Token statistics (bench.metrics.tokens): codebook usage, unigram entropy and perplexity
per level, and the entropy-coder rate, on hand-made codes whose values are known, and a
`bench run` of EnCodec's demo model whose condition values pool the items' codes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bench.codecs.base import Encoded

from bench.cli import EXIT_OK, main
from bench.data.item import Item
from bench.metrics import PooledHistogram, Ratio, Tolerance, get_metric, metric
from bench.metrics.base import aggregation_of
from bench.metrics.histograms import CodeHistograms, code_counts
from bench.metrics.tokens import NO_CODES, codebook_usage, kbps_entropy_bound, token_entropy
from bench.report.compare import run_summary
from bench.scoring import BoundMetric, ItemSignals, score_metric
from bench.store import RunStore

ITEM = Item(id="item", path=None)
SAMPLE_RATE = 16_000
# Three quarters and a quarter: 0.75 * log2(4 / 3) + 0.25 * log2(4) bits.
SKEWED_BITS = 0.75 * math.log2(4 / 3) + 0.25 * 2


def encoded(codes: list[list[int]], *, seconds: float = 1.0, codebook_size: int | None = 8):
    return Encoded(
        b"\0" * 16,
        round(seconds * SAMPLE_RATE),
        SAMPLE_RATE,
        1.0,
        codes=torch.tensor(codes),
        codebook_size=codebook_size,
    )


def scored(function, codes, **fields):
    return function(None, None, SAMPLE_RATE, ITEM, encoded=encoded(codes, **fields))


def test_uniform_codes_over_half_the_codebook():
    codes = [[0, 1, 2, 3] * 5]
    assert scored(codebook_usage, codes).value == {"L0": 0.5, "overall": 0.5}
    entropy = scored(token_entropy, codes).value
    assert entropy == {"L0": 2.0, "mean": 2.0, "perplexity": 4.0}


def test_one_repeated_code_has_no_entropy():
    codes = [[5] * 12]
    assert scored(codebook_usage, codes).value["L0"] == 1 / 8
    entropy = scored(token_entropy, codes).value
    assert entropy == {"L0": 0.0, "mean": 0.0, "perplexity": 1.0}
    assert scored(kbps_entropy_bound, codes).value == 0.0


def test_two_levels_with_their_own_statistics():
    codes = [[0, 1, 2, 3] * 4, [6, 6, 6, 7] * 4]
    usage = scored(codebook_usage, codes).value
    assert usage == {"L0": 4 / 8, "L1": 2 / 8, "overall": 6 / 16}
    entropy = scored(token_entropy, codes).value
    assert entropy["L0"] == pytest.approx(2.0)
    assert entropy["L1"] == pytest.approx(SKEWED_BITS)
    assert entropy["mean"] == pytest.approx((2.0 + SKEWED_BITS) / 2)
    assert entropy["perplexity"] == pytest.approx(2 ** ((2.0 + SKEWED_BITS) / 2))


def test_entropy_bound_is_bits_per_frame_times_the_frame_rate():
    # 16 frames over 0.32 s: 50 frames per second, as an EnCodec-like 50 Hz tokeniser.
    codes = [[0, 1, 2, 3] * 4, [6, 6, 6, 7] * 4]
    score = scored(kbps_entropy_bound, codes, seconds=0.32)
    assert score.value == pytest.approx((2.0 + SKEWED_BITS) * 50 / 1000)
    # The counts the report pools: every level's bins, the samples and the constants.
    assert score.counts == {
        "L0:0": 4,
        "L0:1": 4,
        "L0:2": 4,
        "L0:3": 4,
        "L1:6": 12,
        "L1:7": 4,
        "samples": 5120,
        "sample_rate": SAMPLE_RATE,
        "codebook_size": 8,
    }


def score_through_harness(name: str, bitstream: Encoded | None):
    """The outcome the harness records for metric ``name`` on a short tone's pair."""
    tone = 0.3 * torch.sin(torch.arange(SAMPLE_RATE) / 10.0)[None].to(torch.float32)
    signals = ItemSignals(tone, tone.clone(), SAMPLE_RATE)
    return score_metric(BoundMetric(get_metric(name)), ITEM, signals, encoded=bitstream)


@pytest.mark.parametrize("name", ["codebook_usage", "token_entropy", "kbps_entropy_bound"])
def test_a_codec_without_codes_gives_nan_with_the_reason(name):
    no_codes = Encoded(b"\0" * 16, SAMPLE_RATE, SAMPLE_RATE, 1.0)
    outcome = score_through_harness(name, no_codes)
    assert outcome.failure == NO_CODES
    assert all(math.isnan(value) for value in outcome.values.values())
    assert outcome.counts is None


def test_usage_needs_the_codebook_size_and_entropy_does_not():
    unsized = encoded([[0, 1, 2, 3]], codebook_size=None)
    outcome = score_through_harness("codebook_usage", unsized)
    assert "codebook size" in outcome.failure and math.isnan(outcome.values["codebook_usage"])
    entropy = score_through_harness("token_entropy", unsized)
    assert entropy.failure is None and entropy.values["token_entropy.L0"] == 2.0
    assert "codebook_size" not in entropy.counts


def test_each_row_carries_its_own_level_and_summary_rows_no_bins():
    counts = scored(token_entropy, [[0, 1], [2, 2]]).counts
    aggregation = get_metric("token_entropy").aggregation
    context = {"samples": SAMPLE_RATE, "sample_rate": SAMPLE_RATE, "codebook_size": 8}
    rows = aggregation.row_counts(["L0", "L1", "perplexity", None], counts)
    assert rows["L0"] == {"L0:0": 1, "L0:1": 1, **context}
    assert rows["L1"] == {"L1:2": 2, **context}
    assert rows["perplexity"] == context
    assert rows[None] == counts
    assert aggregation.pools_levels("mean") and not aggregation.pools_levels("L1")


def test_pooled_histograms_sum_items_and_check_constants():
    first = code_counts(torch.tensor([[0, 1]]), samples=10, sample_rate=100, codebook_size=8)
    second = code_counts(torch.tensor([[1, 2, 2]]), samples=20, sample_rate=100, codebook_size=8)
    histograms = CodeHistograms.of_items([first, second])
    pooled = histograms.pooled()
    assert sorted(pooled.levels[0].tolist()) == [1.0, 2.0, 2.0] and pooled.samples == 30
    resampled = histograms.pooled(np.array([[2.0, 0.0], [0.0, 1.0]]))
    assert resampled.levels[0].sum(axis=-1).tolist() == [4.0, 3.0]
    with pytest.raises(ValueError, match="disagree on codebook_size"):
        CodeHistograms.of_items([first, {**second, "codebook_size": 16}])


def test_the_aggregation_is_recorded_as_metadata_and_rebuilt():
    spec = get_metric("codebook_usage")
    assert spec.needs_codes and not spec.scores_files
    assert spec.metadata()["aggregation"] == {"statistic": "usage"}
    assert aggregation_of({"statistic": "usage"}) == PooledHistogram("usage")
    assert aggregation_of({"numerator": "edits", "denominator": "words"}) == Ratio("edits", "words")
    assert aggregation_of(None) is None
    with pytest.raises(ValueError, match="expected a statistic among usage, entropy"):
        PooledHistogram("mean")


def test_a_pooled_histogram_metric_must_read_codes():
    with pytest.raises(ValueError, match="needs_codes=True"):
        metric(
            higher_is_better=True,
            needs_reference=False,
            needs_transcript=False,
            sample_rate=None,
            backend="tests",
            backend_version="1",
            tolerance=Tolerance(absolute=1.0),
            aggregation=PooledHistogram("entropy"),
        )(lambda reference, degraded, sample_rate, item: 0.0)


TOKEN_METRICS = "codebook_usage,token_entropy,kbps_entropy_bound"


def bench_run(run_dir, cache) -> list[dict]:
    arguments = ["run", "--codec", "encodec:1.5", "--codec", "opus:6", "--data", "embedded"]
    arguments += ["--limit", "2", "--max-seconds", "1", "--metrics", TOKEN_METRICS]
    arguments += ["--workers", "1", "--no-report", "--quiet", "--cache", str(cache)]
    # Opus declares no codebooks: the metrics on codes are not run on it.
    assert main([*arguments, "--run-dir", str(run_dir)]) == EXIT_OK
    return list(RunStore(run_dir).rows())


def test_a_run_pools_the_codes_of_a_condition_and_caches_the_counts(tmp_path):
    rows = bench_run(tmp_path / "run", tmp_path / "cache")
    assert not [row for row in rows if row["codec"] == "opus"]
    encodec = {(row["metric"], row["item"]): row for row in rows if row["codec"] == "encodec"}
    items = sorted({item for _, item in encodec})
    assert len(items) == 2
    levels = [
        {key for key in encodec["codebook_usage.L0", item]["metric_counts"] if key[0] == "L"}
        for item in items
    ]
    assert all(key.startswith("L0:") for key in set.union(*levels))

    summary = {
        (condition["label"], condition["metric"]): condition
        for condition in run_summary(tmp_path / "run")["conditions"]
    }
    usage = summary["encodec", "codebook_usage.L0"]
    # Pooled: the codes used in either item, not the mean of the items' shares.
    assert usage["mean"] == len(set.union(*levels)) / 1024
    item_shares = [encodec["codebook_usage.L0", item]["value"] for item in items]
    assert usage["mean"] > max(item_shares)
    assert usage["aggregate"].startswith("share of the codebook used in any item")
    assert usage["ci_low"] <= usage["mean"] <= usage["ci_high"] and usage["n"] == 2
    entropy = summary["encodec", "token_entropy.mean"]
    assert entropy["mean"] == pytest.approx(
        (
            summary["encodec", "token_entropy.L0"]["mean"]
            + summary["encodec", "token_entropy.L1"]["mean"]
        )
        / 2
    )
    assert summary["encodec", "token_entropy.perplexity"]["mean"] == pytest.approx(
        2 ** entropy["mean"]
    )
    bound = summary["encodec", "kbps_entropy_bound"]
    # Two levels of 10-bit codes: below the 1.5 kbps of packed codes.
    assert 0 < bound["mean"] < 1.5 < bound["kbps_actual"]

    again = bench_run(tmp_path / "again", tmp_path / "cache")
    restored = {(row["metric"], row["item"]): row for row in again if row["codec"] == "encodec"}
    for key, row in encodec.items():
        assert restored[key]["metric_counts"] == row["metric_counts"], key
        assert restored[key]["value"] == row["value"]

"""Token statistics in reports: a condition's codebook usage, entropy and entropy bound pool
the items' code histograms (bench.report.stats), and the token table sets the rates side by
side (bench.report.tokens)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from bench.codecs.base import Encoded
from helpers import frame

from bench.data.item import Item
from bench.metrics import get_metric
from bench.report.stats import summary_stats
from bench.report.tokens import (
    TOKEN_COLUMNS,
    token_table,
    token_table_html,
    write_token_tables,
)

FAMILIES = ("codebook_usage", "token_entropy", "kbps_entropy_bound")
DIRECTIONS = {
    name: {
        "higher_is_better": get_metric(name).higher_is_better,
        "unit": get_metric(name).unit,
        "aggregation": get_metric(name).metadata()["aggregation"],
    }
    for name in FAMILIES
}
SAMPLE_RATE = 100


def token_rows(
    items: dict[str, list[list[int]]], *, label: str = "toy", seed: int = 0, bitrate: float = 1.5
) -> list[dict]:
    """The rows the harness writes for the token metrics on each item's codes (one second
    of audio per item, codebooks of 8): each metric's values with the counts that
    aggregation puts on each value's row."""
    rows = []
    for item, codes in items.items():
        encoded = Encoded(b"\0", SAMPLE_RATE, SAMPLE_RATE, bitrate, torch.tensor(codes), 8)
        for name in FAMILIES:
            spec = get_metric(name)
            score = spec.function(None, None, SAMPLE_RATE, Item(item, None), encoded=encoded)
            values = score.value if isinstance(score.value, dict) else {None: score.value}
            row_counts = spec.aggregation.row_counts(list(values), score.counts)
            for key, value in values.items():
                rows.append(
                    {
                        "label": label,
                        "codec": "toy",
                        "bitrate": bitrate,
                        "nfe": None,
                        "seed": seed,
                        "item": item,
                        "tags": ["speech"],
                        "metric": name if key is None else f"{name}.{key}",
                        "value": value,
                        "failure": None,
                        "metric_counts": row_counts[key],
                        "kbps_actual": 8 * bitrate,
                        "encode_seconds": 0.1,
                        "decode_seconds": 0.1,
                        "audio_seconds": 1.0,
                    }
                )
    return rows


def summary_of(*groups: list[dict]) -> pd.DataFrame:
    return summary_stats(frame(*groups), DIRECTIONS).set_index("metric")


# Item a uses codes {0, 1}, item b codes {2, 3}, each uniformly, 10 frames of one level.
DISJOINT = {"a": [[0, 1] * 5], "b": [[2, 3] * 5]}


def test_usage_pools_the_codes_of_the_items_instead_of_averaging():
    rows = token_rows(DISJOINT)
    summary = summary_of(rows)
    usage = summary.loc["codebook_usage.L0"]
    item_values = [row["value"] for row in rows if row["metric"] == "codebook_usage.L0"]
    assert item_values == [0.25, 0.25]  # each item uses 2 of 8 codes
    assert usage["mean"] == 0.5  # together they use 4 of 8
    assert summary.loc["codebook_usage.overall", "mean"] == 0.5
    assert usage["aggregate"].startswith("share of the codebook used in any item")
    assert usage["n"] == 2 and usage["failed"] == 0


def test_entropy_of_the_pooled_histogram_is_not_the_mean_of_the_items():
    summary = summary_of(token_rows(DISJOINT))
    # Each item: 1 bit over two equally likely codes; pooled: 2 bits over four.
    assert summary.loc["token_entropy.L0", "mean"] == pytest.approx(2.0)
    assert summary.loc["token_entropy.mean", "mean"] == pytest.approx(2.0)
    assert summary.loc["token_entropy.perplexity", "mean"] == pytest.approx(4.0)
    # 10 frames per second of each item, 2 bits each: 20 bits per second pooled.
    assert summary.loc["kbps_entropy_bound", "mean"] == pytest.approx(0.020)


def test_unequal_items_pool_by_their_codes():
    # Item a: 30 frames of code 0; item b: 10 frames of code 1, each in 1 s of audio. Each
    # item's entropy is 0; the pooled histogram is 3:1, 0.811 bits, for 40 codes in 2 s.
    summary = summary_of(token_rows({"a": [[0] * 30], "b": [[1] * 10]}))
    skewed = 0.75 * math.log2(4 / 3) + 0.25 * 2
    assert summary.loc["token_entropy.L0", "mean"] == pytest.approx(skewed)
    assert summary.loc["kbps_entropy_bound", "mean"] == pytest.approx(skewed * 40 / 2 / 1000)


def test_summary_values_pool_every_level_row():
    items = {"a": [[0, 1] * 4, [5] * 8], "b": [[2, 3] * 4, [5, 6] * 4]}
    summary = summary_of(token_rows(items))
    # L0 uses {0, 1, 2, 3}, L1 uses {5, 6}: 6 of 16 codes.
    assert summary.loc["codebook_usage.L1", "mean"] == 2 / 8
    assert summary.loc["codebook_usage.overall", "mean"] == 6 / 16
    # L1 pooled: code 5 twelve times, code 6 four times.
    level1 = 0.75 * math.log2(4 / 3) + 0.25 * 2
    assert summary.loc["token_entropy.L1", "mean"] == pytest.approx(level1)
    assert summary.loc["token_entropy.mean", "mean"] == pytest.approx((2 + level1) / 2)
    assert summary.loc["kbps_entropy_bound", "mean"] == pytest.approx((2 + level1) * 16 / 2e3)


def test_seeds_of_an_item_are_averaged_before_pooling():
    # A second seed of item a repeats its codes: the pooled statistics do not change.
    once = summary_of(token_rows(DISJOINT))
    twice = summary_of(token_rows(DISJOINT), token_rows({"a": DISJOINT["a"]}, seed=1))
    pd.testing.assert_series_equal(once["mean"], twice["mean"])


def test_the_interval_resamples_items_and_needs_two():
    items = {f"i{index}": [[index % 5, (index + 1) % 5, 7] * 3] for index in range(8)}
    usage = summary_of(token_rows(items)).loc["codebook_usage.L0"]
    assert usage["mean"] == 6 / 8
    # A resample that misses items uses fewer codes: the interval reaches below the value.
    assert usage["ci_low"] < usage["mean"] and usage["ci_high"] == usage["mean"]
    single = summary_of(token_rows({"a": DISJOINT["a"]})).loc["codebook_usage.L0"]
    assert single["mean"] == 0.25 and np.isnan(single["ci_low"]) and np.isnan(single["ci_high"])


def test_a_scored_row_without_its_histogram_is_refused():
    rows = token_rows(DISJOINT)
    rows[0] = {**rows[0], "metric_counts": None}
    with pytest.raises(ValueError, match="pooled as code histograms"):
        summary_of(rows)


def test_failed_items_are_left_out_of_the_pool():
    rows = token_rows(DISJOINT) + [
        {**row, "item": "c", "value": np.nan, "failure": "codec: broken", "metric_counts": None}
        for row in token_rows({"c": [[4, 5, 6, 7]]})
    ]
    usage = summary_of(rows).loc["codebook_usage.L0"]
    assert usage["mean"] == 0.5 and usage["n"] == 2 and usage["failed"] == 1


PLAIN = {"name": "encodec", "checkpoint_hash": "abc", "entropy_coding": False, "config": "t"}
CODED = {**PLAIN, "checkpoint_hash": "abc+lm12", "entropy_coding": True}


def table_summary() -> pd.DataFrame:
    rows = token_rows(DISJOINT, label="plain") + token_rows(DISJOINT, label="coded")
    rows += token_rows(DISJOINT, label="plain", bitrate=3.0)
    summary = summary_stats(frame(rows), DIRECTIONS)
    coded = summary["label"] == "coded"
    summary.loc[coded, "kbps_actual"] = 9.5  # the LM's real bytes
    return summary


def test_token_table_sets_the_rates_side_by_side():
    table = token_table(table_summary(), {"plain": PLAIN, "coded": CODED})
    assert list(table.columns) == TOKEN_COLUMNS
    rows = table.set_index(["label", "bitrate"])
    plain = rows.loc[("plain", 1.5)]
    assert plain["kbps_nominal"] == 1.5 and plain["kbps_actual"] == 12.0
    assert plain["kbps_entropy_bound"] == pytest.approx(0.020)
    # The entropy-coded label of the same model at the same bitrate gives the LM rate.
    assert plain["kbps_lm"] == 9.5 and not plain["entropy_coded"]
    assert rows.loc[("coded", 1.5), "kbps_lm"] == 9.5 and rows.loc[("coded", 1.5), "entropy_coded"]
    assert np.isnan(rows.loc[("plain", 3.0), "kbps_lm"])  # no coded twin at 3 kbps
    assert plain["usage"] == 0.5 and plain["entropy_mean"] == pytest.approx(2.0)
    assert plain["perplexity"] == pytest.approx(4.0) and plain["usage_by_level"] == (0.5,)

    # Without the run's codec descriptions the LM rate is unknown.
    unknown = token_table(table_summary())
    assert unknown["kbps_lm"].isna().all() and unknown["entropy_coded"].isna().all()
    # Another checkpoint is another model: no LM twin.
    other = token_table(table_summary(), {"plain": PLAIN, "coded": {**CODED, "config": "x"}})
    assert np.isnan(other.set_index(["label", "bitrate"]).loc[("plain", 1.5), "kbps_lm"])


def test_token_tables_are_written_and_skip_codecs_without_codes(tmp_path):
    summary = table_summary()
    no_codes = summary[summary["label"] == "plain"].assign(
        label="opus", codec="opus", mean=np.nan, ci_low=np.nan, ci_high=np.nan, n=0, failed=2
    )
    table = token_table(pd.concat([summary, no_codes]), {"plain": PLAIN, "coded": CODED})
    assert "opus" not in set(table["label"])
    paths = write_token_tables(table, tmp_path / "tables")
    assert [path.name for path in paths] == ["tokens.md", "tokens.csv", "tokens.tex"]
    markdown = paths[0].read_text()
    assert "kbps entropy bound" in markdown and "LM-coded" in markdown
    assert "0.500" in markdown
    csv = pd.read_csv(paths[1], dtype=str)
    assert csv.loc[0, "usage_by_level"] == "0.5" and list(csv.columns) == TOKEN_COLUMNS
    assert r"\toprule" in paths[2].read_text()
    fragment = token_table_html(table)
    assert fragment.startswith('<table class="dataframe tokens">') and "<td>plain</td>" in fragment
    assert token_table_html(token_table(summary.iloc[0:0])) == ""

"""The worst items of each condition (bench.report.worst) on hand-made rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.report.worst import headline_metrics, worst_items

DIRECTIONS = {
    "pesq_wb": {"higher_is_better": True},
    "mel_distance": {"higher_is_better": False},
    "dnsmos": {"higher_is_better": True},
}


def rows(values: dict[tuple[str, float], dict[str, dict[str, float]]], seeds=(0,)) -> pd.DataFrame:
    """Result rows: {(label, kbps): {metric: {item: value}}}, the same value for each seed."""
    records = []
    for (label, bitrate), metrics in values.items():
        for metric, items in metrics.items():
            for item, value in items.items():
                for seed in seeds:
                    records.append(
                        {
                            "label": label,
                            "codec": label,
                            "bitrate": bitrate,
                            "nfe": np.nan,
                            "seed": seed,
                            "item": item,
                            "metric": metric,
                            "value": value,
                        }
                    )
    return pd.DataFrame(records)


def test_the_worst_item_is_worst_on_every_headline_metric_in_its_direction():
    frame = rows(
        {
            ("opus", 6.0): {
                "pesq_wb": {"a": 3.0, "b": 1.5, "c": 2.0, "d": 4.0},
                # Lower is better: b is worst here too, then c.
                "mel_distance": {"a": 0.2, "b": 0.9, "c": 0.5, "d": 0.1},
                # No-reference: never a headline metric, however bad.
                "dnsmos": {"a": 1.0, "b": 4.0, "c": 4.0, "d": 4.0},
            }
        }
    )
    assert headline_metrics(frame) == ["pesq_wb", "mel_distance"]
    worst = worst_items(frame, DIRECTIONS, per_condition=3)
    assert list(worst["item"]) == ["b", "c", "a"]
    assert list(worst["rank"]) == [1, 2, 3]
    assert worst["badness"].iloc[0] == pytest.approx(1.0), "worst of 4 on both metrics"
    assert worst["badness"].iloc[2] == pytest.approx(0.5)
    assert list(worst.columns[-2:]) == ["pesq_wb", "mel_distance"]


def test_each_condition_ranks_its_own_items_and_keeps_the_run_order():
    frame = rows(
        {
            ("opus", 12.0): {"pesq_wb": {"a": 1.0, "b": 4.0}},
            ("encodec", 1.5): {"pesq_wb": {"a": 4.0, "b": 1.0}},
        }
    )
    worst = worst_items(frame, DIRECTIONS, per_condition=1)
    assert list(zip(worst["label"], worst["item"], strict=True)) == [
        ("opus", "a"),
        ("encodec", "b"),
    ]


def test_seeds_are_averaged_and_unscored_items_are_left_out():
    frame = rows({("flowmac", 3.0): {"pesq_wb": {"a": 2.0, "b": 3.0, "c": np.nan}}}, seeds=(0, 1))
    # Seed 1 of item a scores far better: its mean over seeds (3.5) beats b's 3.0.
    frame.loc[(frame["item"] == "a") & (frame["seed"] == 1), "value"] = 5.0
    worst = worst_items(frame, DIRECTIONS)
    assert list(worst["item"]) == ["b", "a"]


def test_no_full_reference_metric_means_no_list():
    frame = rows({("opus", 6.0): {"dnsmos": {"a": 1.0, "b": 2.0}}})
    assert headline_metrics(frame) == []
    assert worst_items(frame, DIRECTIONS).empty

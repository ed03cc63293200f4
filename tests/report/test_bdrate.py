"""BD-rate (bench.report.bdrate): closed forms, hand-computed integrals, NaN reasons, the
run table on actual kbps with its bootstrap interval, and the written tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.interpolate import PchipInterpolator

from bench.report.bdrate import (
    BD_RATE_COLUMNS,
    bd_rate,
    bd_rate_html,
    bd_rate_table,
    default_anchor,
    write_bd_rate_tables,
)
from bench.report.stats import RESAMPLES

RATES = [1.5, 3.0, 6.0, 12.0]
# Arbitrary and unevenly spaced, so PCHIP's slopes differ from piece to piece.
QUALITIES = [1.2, 2.1, 3.6, 3.9]
DISTANCES = [0.9, 0.6, 0.5, 0.2]  # a lower-is-better metric, falling as rate rises
DIRECTIONS = {
    "pesq_wb": {"higher_is_better": True, "unit": "MOS-LQO", "aggregation": None},
    "mel_distance": {"higher_is_better": False, "unit": "", "aggregation": None},
}


@pytest.mark.parametrize("factor", [0.5, 0.9, 1.0, 1.37, 3.0])
def test_a_constant_rate_factor_is_the_bd_rate(factor):
    rates_b = [factor * rate for rate in RATES]
    result = bd_rate(RATES, QUALITIES, rates_b, QUALITIES)
    assert result.valid and result.reason == ""
    assert result.percent == pytest.approx((factor - 1) * 100, abs=1e-9)
    assert (result.overlap_low, result.overlap_high) == (1.2, 3.9)


@pytest.mark.parametrize("factor", [0.5, 1.37, 3.0])
def test_a_lower_is_better_metric_is_negated_before_interpolation(factor):
    rates_b = [factor * rate for rate in RATES]
    result = bd_rate(RATES, DISTANCES, rates_b, DISTANCES, higher_is_better=False)
    assert result.percent == pytest.approx((factor - 1) * 100, abs=1e-9)
    # The range is reported in the metric's own units.
    assert (result.overlap_low, result.overlap_high) == (0.2, 0.9)
    # Read as higher-is-better, more bits would buy a worse score: not a usable curve.
    wrong = bd_rate(RATES, DISTANCES, rates_b, DISTANCES, higher_is_better=True)
    assert math.isnan(wrong.percent) and "not monotone" in wrong.reason


def test_swapping_the_anchor_inverts_the_rate_ratio():
    rates_b, qualities_b = [2.0, 3.5, 9.0], [1.0, 2.8, 3.5]
    forward = bd_rate(RATES, QUALITIES, rates_b, qualities_b).percent
    backward = bd_rate(rates_b, qualities_b, RATES, QUALITIES).percent
    assert forward != pytest.approx(0.0)
    assert (1 + forward / 100) * (1 + backward / 100) == pytest.approx(1.0, abs=1e-12)


def test_two_point_curves_by_hand():
    # Through two points PCHIP is the line in (quality, ln rate):
    #   A: (q 1, 10 kbps), (q 3, 40 kbps): ln r = ln 10 + (q - 1) ln 2
    #   B: (q 0, 10 kbps), (q 2, 20 kbps): ln r = ln 10 + (q / 2) ln 2
    # B - A = ln 2 (1 - q / 2); over the overlap [1, 2] its mean is ln 2 (1 - 1.5 / 2)
    # = ln(2) / 4, so BD-rate = 2 ** 0.25 - 1 = 18.92...%.
    result = bd_rate([10.0, 40.0], [1.0, 3.0], [10.0, 20.0], [0.0, 2.0])
    assert result.percent == pytest.approx((2**0.25 - 1) * 100, abs=1e-9)
    assert (result.overlap_low, result.overlap_high) == (1.0, 2.0)


def test_a_three_point_curve_by_hand_is_pchip_not_linear():
    # A: q = 0, 1, 2 with ln r = 0, 1, 3 (secants 1 and 2, spacing 1). Fritsch-Carlson
    # slopes: interior the weighted harmonic mean 1 / ((3/1 + 3/2) / 6) = 4/3; the ends the
    # three-point formula (3 * 1 - 2) / 2 = 0.5 and (3 * 2 - 1) / 2 = 2.5. A cubic Hermite
    # piece integrates to h (y0 + y1) / 2 + h^2 (d0 - d1) / 12:
    #   [0, 1]: 1/2 + (1/2 - 4/3) / 12 = 1/2 - 5/72;  [1, 2]: 2 + (4/3 - 5/2) / 12 = 2 - 7/72
    # so the integral is 5/2 - 1/6 = 7/3 (the polyline would give 5/2).
    # B: (q 0, ln r 0), (q 2, ln r 2), a line integrating to 2 over [0, 2].
    # Mean difference (2 - 7/3) / 2 = -1/6, so BD-rate = exp(-1/6) - 1.
    anchor_rates = np.exp([0.0, 1.0, 3.0])
    result = bd_rate(anchor_rates, [0.0, 1.0, 2.0], np.exp([0.0, 2.0]), [0.0, 2.0])
    assert result.percent == pytest.approx(math.expm1(-1 / 6) * 100, abs=1e-9)
    assert result.percent != pytest.approx(math.expm1(-1 / 4) * 100, abs=1e-3)


@pytest.mark.parametrize(
    ("rates_b", "qualities_b", "reason"),
    [
        ([20.0, 40.0], [5.0, 6.0], "do not overlap"),
        ([20.0, 40.0], [3.9, 6.0], "single point"),
        ([20.0], [3.0], "1 point(s)"),
        ([], [], "0 point(s)"),
        ([0.0, 40.0], [2.0, 3.0], "rate <= 0"),
        ([-1.0, 40.0], [2.0, 3.0], "rate <= 0"),
        ([2.0, 40.0], [np.nan, 3.0], "non-finite"),
        ([2.0, np.inf], [2.0, 3.0], "non-finite"),
        ([2.0, 4.0, 8.0], [2.0, 3.0, 3.0], "repeats a quality"),
        ([2.0, 4.0, 8.0], [2.0, 3.5, 3.0], "not monotone"),
    ],
)
def test_unusable_curves_give_nan_with_a_reason(rates_b, qualities_b, reason):
    result = bd_rate(RATES, QUALITIES, rates_b, qualities_b)
    assert math.isnan(result.percent) and not result.valid
    assert reason in result.reason


def test_the_anchor_is_named_in_its_reason_and_bad_input_is_refused():
    assert "anchor curve" in bd_rate([1.0], [2.0], RATES, QUALITIES).reason
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        bd_rate(RATES, QUALITIES[:3], RATES, QUALITIES)
    with pytest.raises(ValueError, match="at least 2"):
        bd_rate(RATES, QUALITIES, RATES, QUALITIES, min_points=1)


def run_frame() -> pd.DataFrame:
    """Result rows of 5 items: opus at 3 bitrates; my_codec spending exactly twice opus's
    actual kbps on every item for the same per-item scores, while its nominal bitrates
    claim half of opus's; flow (an NFE axis) equal to my_codec at NFE 16, worse at NFE 4."""
    records = []
    levels = [(6.0, 4.0, 1.5, 0.30), (12.0, 8.5, 2.5, 0.20), (24.0, 17.0, 3.5, 0.10)]
    for nominal, rate, pesq, mel in levels:
        for index in range(5):
            # Items differ in rate and scores, so resampling them moves every mean.
            item_rate, item_pesq, item_mel = rate * (1 + 0.1 * index), pesq + 0.2 * index, mel
            item_mel -= 0.01 * index
            conditions = [
                ("opus", nominal, np.nan, item_rate, item_pesq, item_mel),
                ("my_codec", nominal / 2, np.nan, 2 * item_rate, item_pesq, item_mel),
                ("flow", nominal, 16, 2 * item_rate, item_pesq, item_mel),
                ("flow", nominal, 4, 2 * item_rate, item_pesq - 1, item_mel + 1),
            ]
            for label, bitrate, nfe, kbps, pesq_value, mel_value in conditions:
                scores = [("pesq_wb", pesq_value), ("mel_distance", mel_value)]
                for metric, value in [*scores, ("kbps_actual", kbps)]:
                    records.append(
                        {
                            "label": label,
                            "codec": label,
                            "bitrate": bitrate,
                            "nfe": nfe,
                            "seed": 0,
                            "item": f"item{index}",
                            "metric": metric,
                            "value": value,
                            "kbps_actual": kbps,
                        }
                    )
    return pd.DataFrame(records)


def test_the_table_uses_actual_kbps_and_resamples_items_jointly():
    table = bd_rate_table(run_frame(), DIRECTIONS)
    assert list(table.columns) == BD_RATE_COLUMNS
    # Coding metrics get no rows; opus is the default anchor though not the first label.
    assert list(zip(table["metric"], table["codec"], strict=True)) == [
        ("pesq_wb", "my_codec"),
        ("pesq_wb", "flow"),
        ("mel_distance", "my_codec"),
        ("mel_distance", "flow"),
    ]
    assert set(table["anchor"]) == {"opus"}
    assert list(table["higher_is_better"]) == [True, True, False, False]
    # Nominal bitrates would say -50% for my_codec; actual kbps say +100%. flow at its
    # highest NFE is my_codec; at NFE 4 its curve would not even overlap opus's.
    assert table["bd_rate_percent"].to_numpy() == pytest.approx([100.0] * 4, abs=1e-9)
    # Every draw resamples the same items for both curves, on which my_codec spends twice
    # the bits for equal scores: every draw says +100. Independent draws would spread.
    assert table["ci_low"].to_numpy() == pytest.approx([100.0] * 4, abs=1e-9)
    assert table["ci_high"].to_numpy() == pytest.approx([100.0] * 4, abs=1e-9)
    assert (table["valid_draws"] == RESAMPLES).all()
    assert (table["points"] == 3).all() and (table["anchor_points"] == 3).all()
    assert (table["reason"] == "").all()
    pesq = table.iloc[0]
    assert (pesq["overlap_low"], pesq["overlap_high"]) == pytest.approx((1.9, 3.9))
    mel = table.iloc[2]
    assert (mel["overlap_low"], mel["overlap_high"]) == pytest.approx((0.08, 0.28))


def test_the_bootstrap_interval_covers_a_noisy_bd_rate():
    frame = run_frame()
    rng = np.random.default_rng(3)
    noisy = (frame["label"] == "my_codec") & (frame["metric"] == "pesq_wb")
    frame.loc[noisy, "value"] += rng.normal(0, 0.05, noisy.sum())
    row = bd_rate_table(frame, DIRECTIONS).iloc[0]
    assert (row["metric"], row["codec"]) == ("pesq_wb", "my_codec")
    assert row["ci_low"] < row["bd_rate_percent"] < row["ci_high"]
    assert row["ci_low"] < 100 < row["ci_high"]
    assert 0 < row["valid_draws"] <= RESAMPLES


def test_the_anchor_is_chosen_or_refused():
    assert default_anchor(["dac", "opus", "encodec"]) == "opus"
    assert default_anchor(["dac", "encodec"]) == "dac"
    with pytest.raises(ValueError, match="at least one label"):
        default_anchor([])
    table = bd_rate_table(run_frame(), DIRECTIONS, anchor="my_codec")
    assert set(table["codec"]) == {"opus", "flow"}
    assert table.loc[table["codec"] == "opus", "bd_rate_percent"].to_numpy() == pytest.approx(
        [-50.0, -50.0], abs=1e-9
    )
    with pytest.raises(ValueError, match=r"'opus', 'my_codec', 'flow'.*'hificodex'"):
        bd_rate_table(run_frame(), DIRECTIONS, anchor="hificodex")


def test_a_codec_without_usable_points_gets_a_reason():
    frame = run_frame()
    frame.loc[(frame["label"] == "flow") & (frame["bitrate"] != 24.0), "value"] = np.nan
    table = bd_rate_table(frame, DIRECTIONS)
    flow = table[table["codec"] == "flow"]
    assert flow["bd_rate_percent"].isna().all() and (flow["valid_draws"] == 0).all()
    assert flow["reason"].str.contains("codec curve has a non-finite").all()
    unknown = bd_rate_table(frame, {"pesq_wb": DIRECTIONS["pesq_wb"]})
    mel = unknown[unknown["metric"] == "mel_distance"]
    assert mel["bd_rate_percent"].isna().all() and mel["higher_is_better"].isna().all()
    assert mel["reason"].str.contains("no direction for metric 'mel_distance'").all()


def test_written_tables_show_reasons_escape_latex_and_round_trip(tmp_path):
    frame = run_frame()
    frame.loc[(frame["label"] == "flow") & (frame["metric"] == "pesq_wb"), "value"] += 10
    table = bd_rate_table(frame, DIRECTIONS)
    paths = write_bd_rate_tables(table, tmp_path)
    assert [path.name for path in paths] == ["bd_rate.md", "bd_rate.csv", "bd_rate.tex"]
    markdown = paths[0].read_text()
    assert "pesq_wb ↑" in markdown and "mel_distance ↓" in markdown
    assert "+100.0 [+100.0, +100.0]" in markdown
    assert "nan (the quality ranges do not overlap)" in markdown
    latex = paths[2].read_text()
    assert r"my\_codec" in latex and r"pesq\_wb $\uparrow$" in latex and r"\%" in latex
    assert "my_codec" not in latex
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert latex.count(rule) == 1
    read = pd.read_csv(paths[1]).fillna({"reason": ""})
    pd.testing.assert_frame_equal(read, table, check_dtype=False)
    fragment = bd_rate_html(table)
    assert fragment.startswith("<table") and "bd-rate" in fragment and "↓" in fragment


def test_an_empty_run_gives_an_empty_table():
    assert list(bd_rate_table(pd.DataFrame(), DIRECTIONS).columns) == BD_RATE_COLUMNS


@pytest.mark.parametrize("points", [2, 3, 4, 7])
def test_the_interpolant_is_scipys_pchip(points):
    # The reference: scipy's PchipInterpolator, integrated by scipy, on random monotone
    # curves of uneven spacing (some with secants so unequal that an end slope is zeroed).
    rng = np.random.default_rng(points)
    for _ in range(50):
        qualities_a = np.cumsum(rng.uniform(0.05, 2.0, points))
        qualities_b = qualities_a[0] + np.cumsum(rng.uniform(0.05, 2.0, points))
        rates_a = np.exp(np.cumsum(rng.exponential(1.0, points)))
        rates_b = np.exp(np.cumsum(rng.exponential(1.0, points)))
        result = bd_rate(rates_a, qualities_a, rates_b, qualities_b)
        low = max(qualities_a[0], qualities_b[0])
        high = min(qualities_a[-1], qualities_b[-1])
        if high <= low:
            assert not result.valid
            continue
        integrals = [
            PchipInterpolator(qualities, np.log(rates)).integrate(low, high)
            for qualities, rates in ((qualities_a, rates_a), (qualities_b, rates_b))
        ]
        expected = math.expm1((integrals[1] - integrals[0]) / (high - low)) * 100
        assert result.percent == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert (result.overlap_low, result.overlap_high) == (low, high)

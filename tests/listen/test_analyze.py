"""MUSHRA analysis on synthetic ratings with planted outcomes: two listeners who fail
BS.1534-3 post-screening and one codec that clearly wins."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from bench.listen.analyze import (
    analyze,
    condition_summary,
    correct_p_values,
    metric_correlations,
    pairwise_tests,
    post_screen,
    read_ratings,
)

LISTENERS = [f"L{index}" for index in range(8)]
TRIALS = [f"item{index}" for index in range(6)]
# Planted means; the hidden reference and the anchors are drawn separately below.
CODEC_MEANS = {"codec_a": 85.0, "codec_b": 50.0, "codec_c": 40.0, "anchor35": 20.0}
BAD_REFERENCE_LISTENER = "L1"  # rates the hidden reference around 60 in 5 of 6 trials
BAD_ANCHOR_LISTENER = "L2"  # rates the mid anchor above 90 in 4 of 6 trials


def synthetic_ratings(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for listener in LISTENERS:
        for trial_index, trial in enumerate(TRIALS):
            scores = {"reference": rng.uniform(92, 100), "anchor70": rng.uniform(45, 75)}
            for condition, mean in CODEC_MEANS.items():
                scores[condition] = float(np.clip(rng.normal(mean, 6), 0, 100))
            if listener == BAD_REFERENCE_LISTENER and trial_index < 5:
                scores["reference"] = rng.uniform(55, 65)
            if listener == BAD_ANCHOR_LISTENER and trial_index < 4:
                scores["anchor70"] = rng.uniform(92, 99)
            rows += [
                {"listener": listener, "trial": trial, "condition": name, "score": round(score, 1)}
                for name, score in scores.items()
            ]
    return pd.DataFrame(rows)


@pytest.fixture
def ratings_csv(tmp_path: Path) -> Path:
    path = tmp_path / "ratings.csv"
    synthetic_ratings().to_csv(path, index=False)
    return path


def test_post_screening_excludes_the_planted_listeners(ratings_csv: Path) -> None:
    screening = post_screen(read_ratings(ratings_csv))
    listeners = screening.listeners.set_index("listener")
    assert set(listeners.index[listeners["excluded"]]) == {
        BAD_REFERENCE_LISTENER,
        BAD_ANCHOR_LISTENER,
    }
    assert listeners.loc[BAD_REFERENCE_LISTENER, "reference_below_fraction"] == pytest.approx(5 / 6)
    assert (
        "hidden reference 'reference' below 90" in listeners.loc[BAD_REFERENCE_LISTENER, "reason"]
    )
    assert listeners.loc[BAD_ANCHOR_LISTENER, "anchor_above_fraction"] == pytest.approx(4 / 6)
    assert "mid anchor 'anchor70' above 90" in listeners.loc[BAD_ANCHOR_LISTENER, "reason"]
    assert (listeners.loc[~listeners["excluded"], "reason"] == "kept").all()
    assert (listeners["trials"] == len(TRIALS)).all()
    assert set(screening.kept["listener"]) == set(LISTENERS) - {"L1", "L2"}


def test_one_trial_in_six_is_already_over_fifteen_percent() -> None:
    ratings = synthetic_ratings()
    first_reference = ratings.index[
        (ratings["listener"] == "L0") & (ratings["condition"] == "reference")
    ][0]
    ratings.loc[first_reference, "score"] = 80.0
    listeners = post_screen(ratings).listeners.set_index("listener")
    assert listeners.loc["L0", "excluded"]
    assert (
        not post_screen(ratings, max_fraction=0.2)
        .listeners.set_index("listener")
        .loc["L0", "excluded"]
    )


def test_missing_anchor_skips_its_criterion_and_says_so() -> None:
    ratings = synthetic_ratings()
    screening = post_screen(ratings[ratings["condition"] != "anchor70"])
    listeners = screening.listeners.set_index("listener")
    assert set(listeners.index[listeners["excluded"]]) == {BAD_REFERENCE_LISTENER}
    assert listeners["anchor_above_fraction"].isna().all()
    assert listeners["reason"].str.contains("mid-anchor criterion skipped").all()


def test_missing_hidden_reference_raises() -> None:
    ratings = synthetic_ratings()
    with pytest.raises(ValueError, match="hidden reference 'reference'.*got \\['anchor35'"):
        post_screen(ratings[ratings["condition"] != "reference"])


def test_analysis_recovers_the_winning_codec(ratings_csv: Path) -> None:
    kept = post_screen(read_ratings(ratings_csv)).kept
    summary = condition_summary(kept).set_index("condition")
    codecs = summary.loc[["codec_a", "codec_b", "codec_c"], "mean"]
    assert codecs.idxmax() == "codec_a"
    pairwise = pairwise_tests(kept, correction="holm")
    for loser in ("codec_b", "codec_c"):
        row = pairwise[(pairwise["condition_a"] == "codec_a") & (pairwise["condition_b"] == loser)]
        assert len(row) == 1
        assert row["pairs"].item() == 6 * len(TRIALS)
        assert row["mean_difference"].item() > 25
        assert row["significant"].item()
        assert row["p_corrected"].item() >= row["p_value"].item()
    assert len(pairwise) == math.comb(6, 2)
    assert (pairwise["correction"] == "holm").all()


def test_confidence_interval_is_the_t_interval() -> None:
    sample = np.array([62.0, 70.0, 75.0, 58.0, 81.0, 66.0, 73.0])
    ratings = pd.DataFrame(
        {
            "listener": [f"L{index}" for index in range(sample.size)],
            "trial": "item0",
            "condition": "codec_a",
            "score": sample,
        }
    )
    row = condition_summary(ratings).iloc[0]
    low, high = scipy_stats.t.interval(
        0.95, sample.size - 1, loc=sample.mean(), scale=scipy_stats.sem(sample)
    )
    assert row["n"] == sample.size and row["listeners"] == sample.size
    assert row["mean"] == pytest.approx(sample.mean())
    assert row["std"] == pytest.approx(sample.std(ddof=1))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
    # Wider than the normal interval, as the t distribution with 6 df must be.
    normal_half_width = 1.959964 * scipy_stats.sem(sample)
    assert (row["ci_high"] - row["ci_low"]) / 2 > normal_half_width


def test_holm_bonferroni_and_bh_match_hand_computed_values() -> None:
    p_values = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    # Holm: sorted 0.005*4, 0.01*3, 0.03*2, 0.04*1 -> running max 0.02, 0.03, 0.06, 0.06.
    holm = correct_p_values(p_values, "holm")
    np.testing.assert_allclose(holm[:4], [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(holm[4])
    np.testing.assert_allclose(
        correct_p_values(p_values, "bonferroni")[:4], [0.04, 0.16, 0.12, 0.02]
    )
    # BH: p_(k) * m / k with a running minimum from the top: 0.02, 0.02, 0.04, 0.04.
    np.testing.assert_allclose(correct_p_values(p_values, "bh")[:4], [0.02, 0.04, 0.04, 0.02])
    with pytest.raises(ValueError, match="unknown correction 'tukey'.*'holm'"):
        correct_p_values(p_values, "tukey")
    with pytest.raises(ValueError, match="unknown correction 'none'"):
        pairwise_tests(synthetic_ratings(), correction="none")


def test_webmushra_result_file_parses_like_the_plain_format(tmp_path: Path) -> None:
    plain = synthetic_ratings()
    webmushra = pd.DataFrame(
        {
            "session_test_id": "codec_test",
            "age": "30",
            "session_uuid": plain["listener"],
            "trial_id": plain["trial"],
            "rating_stimulus": plain["condition"],
            "rating_score": plain["score"],
            "rating_time": "12345",
            "rating_comment": "",
        }
    )
    plain.to_csv(tmp_path / "plain.csv", index=False)
    webmushra.to_csv(tmp_path / "mushra.csv", index=False)
    from_webmushra = read_ratings(tmp_path / "mushra.csv")
    pd.testing.assert_frame_equal(from_webmushra, read_ratings(tmp_path / "plain.csv"))
    assert list(from_webmushra.columns) == ["listener", "trial", "condition", "score"]
    assert from_webmushra["score"].dtype == float
    assert len(from_webmushra) == len(plain)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "file is empty"),
        ("listener,trial,condition,score\n", "at least one rating row"),
        (
            "listener,trial,score\nL0,item0,50\n",
            r"expected the columns \['listener', 'trial', 'condition', 'score'\].*"
            r"got \['listener', 'trial', 'score'\]",
        ),
        ("listener,trial,condition,score\nL0,item0,codec_a,good\n", "numeric.*'good'"),
        ("listener,trial,condition,score\nL0,item0,codec_a,105\n", r"within 0\.\.100.*105"),
        ("listener,trial,condition,score\nL0,item0,codec_a,-1\n", r"within 0\.\.100.*-1"),
        ("listener,trial,condition,score\nL0,item0,codec_a,\n", "numeric.*''"),
        ("listener,trial,condition,score\n,item0,codec_a,50\n", "non-empty listener"),
        (
            "listener,trial,condition,score\nL0,item0,codec_a,50\nL0,item0,codec_a,60\n",
            r"one score per \(listener, trial, condition\).*'L0', 'item0', 'codec_a'",
        ),
    ],
)
def test_bad_input_raises_naming_expected_and_found(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_ratings(path)


def test_correlations_need_three_shared_conditions() -> None:
    means = pd.Series({"codec_a": 85.0, "codec_b": 50.0, "codec_c": 40.0})
    objective = pd.DataFrame({"pesq": [4.0, 2.5, np.nan]}, index=["codec_a", "codec_b", "codec_c"])
    row = metric_correlations(means, objective).iloc[0]
    assert row["conditions"] == 2
    assert all(
        np.isnan(row[column]) for column in ("pearson_r", "pearson_p", "spearman_rho", "spearman_p")
    )
    assert "only 2 condition(s)" in row["note"] and "at least 3" in row["note"]


def test_correlation_signs_follow_the_metric_direction() -> None:
    means = pd.Series({"codec_a": 85.0, "codec_b": 50.0, "codec_c": 40.0, "anchor35": 20.0})
    objective = pd.DataFrame(
        {
            "pesq": [4.1, 2.6, 2.4, 1.3],  # higher is better: tracks the means
            "mel_distance": [0.6, 1.4, 1.5, 2.8],  # lower is better: opposes them
            "constant": [1.0, 1.0, 1.0, 1.0],
        },
        index=["codec_a", "codec_b", "codec_c", "anchor35"],
    )
    correlations = metric_correlations(means, objective).set_index("metric")
    assert correlations.loc["pesq", "pearson_r"] > 0.95
    assert correlations.loc["pesq", "spearman_rho"] == pytest.approx(1.0)
    assert correlations.loc["mel_distance", "pearson_r"] < -0.9
    assert correlations.loc["mel_distance", "spearman_rho"] == pytest.approx(-1.0)
    assert (correlations.loc[["pesq", "mel_distance"], "conditions"] == 4).all()
    assert np.isnan(correlations.loc["constant", "pearson_r"])
    assert "constant" in correlations.loc["constant", "note"]


def test_analyze_writes_every_file(ratings_csv: Path, tmp_path: Path) -> None:
    objective = pd.DataFrame(
        {"pesq": [4.1, 2.6, 2.4], "mel_distance": [0.6, 1.4, 1.5]},
        index=["codec_a", "codec_b", "codec_c"],
    )
    result = analyze(ratings_csv, tmp_path / "out", objective=objective)
    names = {"screening", "summary", "summary_md", "pairwise", "correlations", "plot"}
    assert set(result.paths) == names
    for path in result.paths.values():
        assert path.parent == tmp_path / "out" and path.stat().st_size > 0
    assert result.paths["plot"].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "codec_a" in result.paths["summary_md"].read_text()
    summary = pd.read_csv(result.paths["summary"])
    assert summary["condition"].iloc[0] == "reference"
    assert len(pd.read_csv(result.paths["screening"])) == len(LISTENERS)
    assert result.correlations is not None
    assert result.correlations.set_index("metric").loc["pesq", "pearson_r"] > 0

    without_objective = analyze(ratings_csv, tmp_path / "plain")
    assert without_objective.correlations is None
    assert not (tmp_path / "plain" / "correlations.csv").exists()


PACKAGE_TRIALS = {trial: {"reference", "anchor70", *CODEC_MEANS} for trial in TRIALS}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"listener": "L0", "trial": "item9", "condition": "codec_a", "score": 0.0},
            r"ratings\.csv: expected ratings for the package's trials 'item0', .*; "
            r"got 1 rating\(s\) for trial\(s\) it does not have: 'item9'",
        ),
        (
            {"listener": "L0", "trial": "item3", "condition": "codec_z", "score": 0.0},
            r"expected the conditions 'anchor35', .* in trial 'item3'; "
            r"got ratings for condition\(s\) it does not have: 'codec_z'",
        ),
    ],
)
def test_ratings_for_what_the_package_does_not_have_are_refused(
    tmp_path: Path, extra: dict, message: str
) -> None:
    """One stray rating would count in a condition's mean (or add a condition) as if it
    had been played; it is refused, naming the trial or condition."""
    ratings = pd.concat([synthetic_ratings(), pd.DataFrame([extra])], ignore_index=True)
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    with pytest.raises(ValueError, match=message):
        analyze(tmp_path / "ratings.csv", tmp_path / "out", trials=PACKAGE_TRIALS)
    assert not (tmp_path / "out" / "summary.csv").exists()


@pytest.mark.parametrize("trials", [PACKAGE_TRIALS, None], ids=["package", "ratings"])
def test_a_listener_missing_conditions_of_a_trial_is_refused(tmp_path: Path, trials) -> None:
    ratings = synthetic_ratings()
    gap = (
        (ratings["listener"] == "L4")
        & (ratings["trial"] == "item2")
        & ratings["condition"].isin(["codec_b", "anchor35"])
    )
    ratings[~gap].to_csv(tmp_path / "ratings.csv", index=False)
    with pytest.raises(
        ValueError,
        match="expected listener 'L4' to rate every condition of trial 'item2'; "
        "missing 'anchor35', 'codec_b'",
    ):
        analyze(tmp_path / "ratings.csv", tmp_path / "out", trials=trials)


def test_ratings_that_fit_the_package_are_analysed(ratings_csv: Path, tmp_path: Path) -> None:
    checked = analyze(ratings_csv, tmp_path / "checked", trials=PACKAGE_TRIALS).summary
    pd.testing.assert_frame_equal(checked, analyze(ratings_csv, tmp_path / "plain").summary)

"""Analysis of MUSHRA listening-test ratings (ITU-R BS.1534-3).

Ratings come from webMUSHRA's ``mushra.csv`` result file or from a plain CSV with the
columns ``listener, trial, condition, score``. The analysis follows BS.1534-3:

* post-screening (§4.1.2): a listener who rates the hidden reference below 90 in more than
  15 % of the trials, or the mid-range anchor above 90 in more than 15 % of the trials, is
  excluded from the aggregated results;
* per-condition means with 95 % confidence intervals from the t distribution (§9.2);
* paired two-sided Wilcoxon signed-rank tests between every two conditions, over the
  (listener, trial) pairs both were rated in, with a multiple-comparison correction;
* Pearson and Spearman correlations between the MUSHRA means and objective metrics.

:func:`analyze` runs all of it and writes CSV, Markdown and a box plot to one folder.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

RATING_COLUMNS = ("listener", "trial", "condition", "score")
# webMUSHRA (service/write.php) writes one row per rated stimulus; participant form fields
# sit between session_test_id and session_uuid and vary per experiment, so only these
# four columns are read.
WEBMUSHRA_COLUMNS = {
    "session_uuid": "listener",
    "trial_id": "trial",
    "rating_stimulus": "condition",
    "rating_score": "score",
}
SCORE_RANGE = (0.0, 100.0)
CONFIDENCE = 0.95
ALPHA = 0.05
CORRECTIONS = ("holm", "bonferroni", "bh")
MIN_CONDITIONS_FOR_CORRELATION = 3


@dataclass(frozen=True)
class ScreeningResult:
    """Post-screening outcome: the ratings kept and one row per listener saying why."""

    kept: pd.DataFrame
    listeners: pd.DataFrame


@dataclass(frozen=True)
class AnalysisResult:
    """Everything :func:`analyze` computed, and the files it wrote (by short name)."""

    ratings: pd.DataFrame
    screening: ScreeningResult
    summary: pd.DataFrame
    pairwise: pd.DataFrame
    correlations: pd.DataFrame | None
    paths: dict[str, Path]


def read_ratings(path: str | Path) -> pd.DataFrame:
    """Read ratings as columns listener, trial, condition (str) and score (float).

    The format is detected from the header: webMUSHRA's ``mushra.csv`` (``session_uuid``,
    ``trial_id``, ``rating_stimulus``, ``rating_score``) or a plain CSV with the columns
    ``listener, trial, condition, score``. Other columns are ignored.
    """
    path = Path(path)
    try:
        # Identifiers stay strings in both formats, so "1" and "01" are not merged and both
        # formats give identical frames.
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as error:
        raise ValueError(
            f"{path}: the file is empty; expected a CSV header with {list(RATING_COLUMNS)} "
            f"or webMUSHRA's {list(WEBMUSHRA_COLUMNS)}"
        ) from error
    header = set(raw.columns)
    if set(WEBMUSHRA_COLUMNS) <= header:
        ratings = raw[list(WEBMUSHRA_COLUMNS)].rename(columns=WEBMUSHRA_COLUMNS)
    elif set(RATING_COLUMNS) <= header:
        ratings = raw[list(RATING_COLUMNS)].copy()
    else:
        raise ValueError(
            f"{path}: expected the columns {list(RATING_COLUMNS)} (plain) or "
            f"{list(WEBMUSHRA_COLUMNS)} (webMUSHRA mushra.csv); got {list(raw.columns)}"
        )
    if ratings.empty:
        raise ValueError(f"{path}: expected at least one rating row; got only a header")
    return _validated(ratings, source=str(path))


def _validated(ratings: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check identifiers and scores, and convert scores to float."""
    for column in RATING_COLUMNS[:3]:
        blank = ratings[column].str.strip() == ""
        if blank.any():
            raise ValueError(
                f"{source}: expected a non-empty {column} in every row; "
                f"row {int(blank.to_numpy().argmax()) + 1} has none"
            )
    scores = pd.to_numeric(ratings["score"], errors="coerce")
    not_numeric = scores.isna()
    if not_numeric.any():
        row = int(not_numeric.to_numpy().argmax())
        raise ValueError(
            f"{source}: expected numeric scores; row {row + 1} has {ratings['score'].iloc[row]!r}"
        )
    low, high = SCORE_RANGE
    out_of_range = (scores < low) | (scores > high)
    if out_of_range.any():
        row = int(out_of_range.to_numpy().argmax())
        raise ValueError(
            f"{source}: expected scores within {low:g}..{high:g}; row {row + 1} has "
            f"{scores.iloc[row]:g}"
        )
    ratings = ratings.assign(score=scores.astype(float))
    duplicated = ratings.duplicated(["listener", "trial", "condition"], keep=False)
    if duplicated.any():
        first = ratings[duplicated].iloc[0]
        raise ValueError(
            f"{source}: expected one score per (listener, trial, condition); "
            f"{int(duplicated.sum())} rows repeat one, e.g. "
            f"({first['listener']!r}, {first['trial']!r}, {first['condition']!r})"
        )
    return ratings.reset_index(drop=True)


def _named(values: Collection[str], limit: int = 5) -> str:
    """Up to ``limit`` values, quoted, and how many more there are."""
    ordered = sorted(values)
    shown = ", ".join(repr(value) for value in ordered[:limit])
    return shown + (f" and {len(ordered) - limit} more" if len(ordered) > limit else "")


def check_trials(
    ratings: pd.DataFrame, trials: Mapping[str, Collection[str]] | None = None, source: str = ""
) -> None:
    """Refuse ratings that do not fit the test: unknown trials or conditions, gaps.

    ``trials`` maps each trial of the test (an exported package) to its conditions; a
    rating for any other trial or condition would count in the means as if it had been
    played. Without it, a trial's conditions are those any listener rated in it. Either
    way every listener who rated a trial must have rated each of its conditions: MUSHRA
    pages submit all of them together, so a gap means a damaged or merged results file.
    """
    prefix = f"{source}: " if source else ""
    if trials is not None:
        unknown = set(ratings["trial"]) - set(trials)
        if unknown:
            rows = int(ratings["trial"].isin(unknown).sum())
            raise ValueError(
                f"{prefix}expected ratings for the package's trials {_named(trials)}; got "
                f"{rows} rating(s) for trial(s) it does not have: {_named(unknown)}"
            )
        expected = {trial: set(conditions) for trial, conditions in trials.items()}
        for trial, group in ratings.groupby("trial"):
            unknown = set(group["condition"]) - expected[trial]
            if unknown:
                raise ValueError(
                    f"{prefix}expected the conditions {_named(expected[trial], 20)} in trial "
                    f"{trial!r}; got ratings for condition(s) it does not have: {_named(unknown)}"
                )
    else:
        expected = ratings.groupby("trial")["condition"].agg(set).to_dict()
    for (listener, trial), group in ratings.groupby(["listener", "trial"]):
        missing = expected[trial] - set(group["condition"])
        if missing:
            raise ValueError(
                f"{prefix}expected listener {listener!r} to rate every condition of trial "
                f"{trial!r}; missing {_named(missing, 20)}"
            )


def post_screen(
    ratings: pd.DataFrame,
    hidden_reference: str = "reference",
    mid_anchor: str = "anchor70",
    reference_threshold: float = 90,
    anchor_threshold: float = 90,
    max_fraction: float = 0.15,
) -> ScreeningResult:
    """BS.1534-3 §4.1.2 post-screening of listeners.

    A listener is excluded who rates the hidden reference below ``reference_threshold`` in
    more than ``max_fraction`` of the trials, or the mid-range anchor above
    ``anchor_threshold`` in more than ``max_fraction`` of the trials. Fractions are taken
    over the trials in which the listener rated that condition. Without the mid anchor in
    the ratings the second criterion is skipped, and each listener's reason says so.
    """
    conditions = set(ratings["condition"])
    if hidden_reference not in conditions:
        raise ValueError(
            f"expected the hidden reference {hidden_reference!r} among the conditions; "
            f"got {sorted(conditions)}"
        )
    anchor_present = mid_anchor in conditions
    trials = ratings.groupby("listener")["trial"].nunique().rename("trials")
    reference_scores = ratings[ratings["condition"] == hidden_reference]
    reference_below = (
        (reference_scores["score"] < reference_threshold)
        .groupby(reference_scores["listener"])
        .mean()
        .rename("reference_below_fraction")
    )
    if anchor_present:
        anchor_scores = ratings[ratings["condition"] == mid_anchor]
        anchor_above = (
            (anchor_scores["score"] > anchor_threshold)
            .groupby(anchor_scores["listener"])
            .mean()
            .rename("anchor_above_fraction")
        )
    else:
        anchor_above = pd.Series(np.nan, index=trials.index, name="anchor_above_fraction")
    listeners = pd.concat([trials, reference_below, anchor_above], axis=1)
    listeners.index.name = "listener"

    reasons = []
    for row in listeners.itertuples():
        reason = []
        if row.reference_below_fraction > max_fraction:
            reason.append(
                f"hidden reference {hidden_reference!r} below {reference_threshold:g} in "
                f"{row.reference_below_fraction:.0%} of trials (> {max_fraction:.0%})"
            )
        if row.anchor_above_fraction > max_fraction:
            reason.append(
                f"mid anchor {mid_anchor!r} above {anchor_threshold:g} in "
                f"{row.anchor_above_fraction:.0%} of trials (> {max_fraction:.0%})"
            )
        if not anchor_present:
            reason.append(f"mid-anchor criterion skipped: {mid_anchor!r} not in the ratings")
        reasons.append(reason)
    # A listener who never rated the hidden reference (NaN fraction) compares False here and
    # is kept: the standard gives no rule for that case.
    listeners["excluded"] = (listeners["reference_below_fraction"] > max_fraction) | (
        listeners["anchor_above_fraction"] > max_fraction
    )
    listeners["reason"] = ["; ".join(reason) if reason else "kept" for reason in reasons]
    listeners = listeners.reset_index()
    excluded = set(listeners.loc[listeners["excluded"], "listener"])
    kept = ratings[~ratings["listener"].isin(excluded)].reset_index(drop=True)
    return ScreeningResult(kept=kept, listeners=listeners)


def condition_summary(ratings: pd.DataFrame) -> pd.DataFrame:
    """Per condition: ratings, listeners, mean, std and a 95 % t-interval, best first."""
    grouped = ratings.groupby("condition")["score"]
    summary = pd.DataFrame(
        {
            "n": grouped.count(),
            "listeners": ratings.groupby("condition")["listener"].nunique(),
            "mean": grouped.mean(),
            "std": grouped.std(ddof=1),
        }
    )
    standard_error = summary["std"] / np.sqrt(summary["n"])
    # A single rating has no spread: df = 0 and a NaN standard error give a NaN interval.
    ci_low, ci_high = scipy_stats.t.interval(
        CONFIDENCE, df=summary["n"] - 1, loc=summary["mean"], scale=standard_error
    )
    summary["ci_low"] = ci_low
    summary["ci_high"] = ci_high
    return summary.sort_values("mean", ascending=False).reset_index()


def correct_p_values(p_values: np.ndarray, correction: str = "holm") -> np.ndarray:
    """Family-wise (Holm, Bonferroni) or false-discovery-rate (BH) corrected p-values.

    NaN entries (tests that could not run) are left NaN and not counted in the family.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; expected one of {CORRECTIONS}")
    p_values = np.asarray(p_values, dtype=float)
    corrected = np.full_like(p_values, np.nan)
    tested = ~np.isnan(p_values)
    family = p_values[tested]
    if family.size == 0:
        return corrected
    if correction == "bh":
        corrected[tested] = scipy_stats.false_discovery_control(family, method="bh")
    elif correction == "bonferroni":
        corrected[tested] = np.minimum(family * family.size, 1.0)
    else:
        # Holm's step-down: the k-th smallest p (k from 0) is scaled by (m - k), and the
        # running maximum keeps the adjusted values in the order of the raw ones.
        order = np.argsort(family)
        scaled = family[order] * (family.size - np.arange(family.size))
        adjusted = np.empty_like(family)
        adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
        corrected[tested] = adjusted
    return corrected


def pairwise_tests(ratings: pd.DataFrame, correction: str = "holm") -> pd.DataFrame:
    """Paired two-sided Wilcoxon signed-rank test for every two conditions.

    Pairs are the (listener, trial) cells both conditions were rated in. ``mean_difference``
    is condition_a minus condition_b; conditions are ordered by mean, best first, so a
    positive difference means the better-rated one leads. p-values are corrected over all
    pairs that could be tested.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; expected one of {CORRECTIONS}")
    table = ratings.pivot(index=["listener", "trial"], columns="condition", values="score")
    conditions = list(table.mean().sort_values(ascending=False).index)
    rows = []
    for condition_a, condition_b in itertools.combinations(conditions, 2):
        paired = table[[condition_a, condition_b]].dropna()
        differences = paired[condition_a] - paired[condition_b]
        row = {
            "condition_a": condition_a,
            "condition_b": condition_b,
            "pairs": len(paired),
            "mean_difference": differences.mean() if len(paired) else np.nan,
            "statistic": np.nan,
            "p_value": np.nan,
            "note": "",
        }
        if paired.empty:
            row["note"] = "no (listener, trial) rated both conditions"
        elif (differences == 0).all():
            # The signed-rank test drops zero differences, leaving nothing to rank.
            row["note"] = "all paired differences are zero"
        else:
            result = scipy_stats.wilcoxon(
                paired[condition_a], paired[condition_b], alternative="two-sided"
            )
            row["statistic"] = float(result.statistic)
            row["p_value"] = float(result.pvalue)
        rows.append(row)
    tested_columns = ["condition_a", "condition_b", "pairs", "mean_difference", "statistic"]
    tests = pd.DataFrame(rows, columns=[*tested_columns, "p_value", "note"])
    tests["p_corrected"] = correct_p_values(tests["p_value"].to_numpy(), correction)
    tests["correction"] = correction
    tests["significant"] = tests["p_corrected"] < ALPHA
    return tests[[*tested_columns, "p_value", "p_corrected", "correction", "significant", "note"]]


def metric_correlations(condition_means: pd.Series, objective: pd.DataFrame) -> pd.DataFrame:
    """Pearson and Spearman correlation of MUSHRA means with each objective metric.

    Both inputs are indexed by condition; only conditions present in both (with a value)
    count. With fewer than three, or with constant values, the coefficients are NaN and
    ``note`` says why.
    """
    rows = []
    for metric in objective.columns:
        values = objective[metric].dropna()
        shared = condition_means.index.intersection(values.index)
        row = {
            "metric": metric,
            "conditions": len(shared),
            "pearson_r": np.nan,
            "pearson_p": np.nan,
            "spearman_rho": np.nan,
            "spearman_p": np.nan,
            "note": "",
        }
        listening = condition_means.loc[shared].to_numpy(dtype=float)
        measured = values.loc[shared].to_numpy(dtype=float)
        if len(shared) < MIN_CONDITIONS_FOR_CORRELATION:
            row["note"] = (
                f"only {len(shared)} condition(s) in both the ratings and the metric; "
                f"need at least {MIN_CONDITIONS_FOR_CORRELATION}"
            )
        elif np.ptp(listening) == 0 or np.ptp(measured) == 0:
            row["note"] = "constant values: correlation undefined"
        else:
            pearson = scipy_stats.pearsonr(listening, measured)
            spearman = scipy_stats.spearmanr(listening, measured)
            row.update(
                pearson_r=float(pearson.statistic),
                pearson_p=float(pearson.pvalue),
                spearman_rho=float(spearman.statistic),
                spearman_p=float(spearman.pvalue),
            )
        rows.append(row)
    return pd.DataFrame(rows)


def plot_ratings(ratings: pd.DataFrame, path: str | Path) -> Path:
    """Box plot of scores by condition, best mean first, means marked; saved as PNG."""
    path = Path(path)
    order = ratings.groupby("condition")["score"].mean().sort_values(ascending=False).index
    scores = [ratings.loc[ratings["condition"] == condition, "score"] for condition in order]
    figure = Figure(figsize=(max(4.0, 1.0 + 0.9 * len(order)), 4.5), layout="constrained")
    axes = figure.add_subplot()
    axes.boxplot(scores, tick_labels=list(order), showmeans=True)
    axes.set_ylim(*SCORE_RANGE)
    axes.set_xlabel("condition")
    axes.set_ylabel("MUSHRA score")
    axes.set_title(
        f"MUSHRA ratings ({ratings['listener'].nunique()} listeners; triangles mark means)"
    )
    axes.tick_params(axis="x", labelrotation=30)
    axes.grid(axis="y", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=120)
    return path


def analyze(
    ratings_path: str | Path,
    out_dir: str | Path,
    objective: pd.DataFrame | None = None,
    correction: str = "holm",
    exclude_trials: tuple[str, ...] = (),
    trials: Mapping[str, Collection[str]] | None = None,
) -> AnalysisResult:
    """Read, check, post-screen, summarise, test, correlate (with ``objective``) and plot.

    ``exclude_trials`` are pages whose ratings do not count, such as a training page;
    ``trials`` are the test's trials and their conditions (see :func:`check_trials`).

    Writes ``screening.csv``, ``summary.csv``, ``summary.md``, ``pairwise.csv``,
    ``correlations.csv`` (only with ``objective``) and ``ratings.png`` to ``out_dir``.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; expected one of {CORRECTIONS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ratings = read_ratings(ratings_path)
    ratings = ratings[~ratings["trial"].isin(exclude_trials)].reset_index(drop=True)
    check_trials(ratings, trials, source=str(ratings_path))
    screening = post_screen(ratings)
    if screening.kept.empty:
        raise ValueError(
            "post-screening excluded every listener: "
            + "; ".join(f"{row.listener}: {row.reason}" for row in screening.listeners.itertuples())
        )
    summary = condition_summary(screening.kept)
    if objective is not None:
        # The run's objective means beside the listening means, condition by condition.
        summary = summary.join(objective.add_prefix("metric: "), on="condition")
    pairwise = pairwise_tests(screening.kept, correction=correction)
    paths = {
        "screening": out_dir / "screening.csv",
        "summary": out_dir / "summary.csv",
        "summary_md": out_dir / "summary.md",
        "pairwise": out_dir / "pairwise.csv",
    }
    screening.listeners.to_csv(paths["screening"], index=False)
    summary.to_csv(paths["summary"], index=False)
    paths["summary_md"].write_text(summary.to_markdown(index=False, floatfmt=".2f") + "\n")
    pairwise.to_csv(paths["pairwise"], index=False)
    correlations = None
    if objective is not None:
        correlations = metric_correlations(summary.set_index("condition")["mean"], objective)
        paths["correlations"] = out_dir / "correlations.csv"
        correlations.to_csv(paths["correlations"], index=False)
    paths["plot"] = plot_ratings(screening.kept, out_dir / "ratings.png")
    return AnalysisResult(
        ratings=ratings,
        screening=screening,
        summary=summary,
        pairwise=pairwise,
        correlations=correlations,
        paths=paths,
    )

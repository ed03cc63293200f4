"""Statistics behind every reported number: per-condition means with 95% bootstrap
confidence intervals, and paired comparisons between two conditions on the same items.

Items, not rows, are the unit of resampling: values of one item under several seeds are
averaged first, so seeds narrow an item's noise without pretending to be more items.
Intervals are BCa bootstrap intervals (Efron 1987) from ``scipy.stats.bootstrap``; the
paired test is the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) or a paired
bootstrap of the mean difference. Resampling uses a fixed seed, so a report rebuilt from
the same rows prints the same intervals.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy
from scipy import stats as scipy_stats

from bench.store import CONFIG_FILE, RunStore

CONFIDENCE = 0.95
RESAMPLES = 2000
BOOTSTRAP_SEED = 0
ROUND_DECIMALS = 10
CONDITION_COLUMNS = ["codec", "bitrate", "nfe"]
# Coding metrics are shown as the table's own kbps and RTF columns, not as quality metrics.
CODING_METRICS = ("kbps_actual", "rtf_encode", "rtf_decode")
SUMMARY_COLUMNS = [
    *CONDITION_COLUMNS,
    "metric",
    "higher_is_better",
    "unit",
    "mean",
    "ci_low",
    "ci_high",
    "n",
    "failed",
    "kbps_actual",
    "rtf_encode",
    "rtf_decode",
]
PAIRED_METHODS = ("wilcoxon", "bootstrap")


def results_frame(run_dir: str | os.PathLike) -> pd.DataFrame:
    """All result rows of a run as a DataFrame; failed values are NaN."""
    store = RunStore(run_dir)
    frame = pd.DataFrame(list(store.rows()))
    # Tables list codecs in the order the run named them, not the order tasks finished.
    frame.attrs["codecs"] = list(store.read_config().get("settings", {}).get("codecs", []))
    if frame.empty:
        return frame
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    # A condition without an NFE axis has nfe None; NaN keeps the column numeric.
    frame["nfe"] = pd.to_numeric(frame["nfe"], errors="coerce")
    for column in ("kbps_actual", "encode_seconds", "decode_seconds", "audio_seconds"):
        if column not in frame:
            frame[column] = np.nan  # every task failed before its codec ran
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def metric_directions(run_dir: str | os.PathLike) -> dict[str, dict]:
    """``{metric family: {"higher_is_better", "unit"}}`` as recorded in the run's config.

    Read from the run, not the registry, so a report rebuilt where a plug-in metric is
    not installed still knows which way is better.
    """
    config = json.loads((Path(run_dir) / CONFIG_FILE).read_text())
    return {
        name: {"higher_is_better": meta["higher_is_better"], "unit": meta.get("unit", "")}
        for name, meta in config.get("metrics", {}).items()
    }


def bootstrap_mean_ci(
    values: np.ndarray, *, confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """The BCa bootstrap interval of the mean of ``values`` (NaN, NaN below two values)."""
    values = np.asarray(values, dtype=float)
    # Metric backends are not bit-reproducible in the last digit (threaded sums), and with
    # few items BCa's bias correction counts resample means tied with the observed mean:
    # a 1e-16 change can flip those ties and move the interval by 0.004. Rounding far
    # below any reported precision makes equal-in-value runs give equal intervals.
    values = np.round(values[np.isfinite(values)], ROUND_DECIMALS)
    if values.size < 2:
        return np.nan, np.nan
    if np.ptp(values) == 0:
        # Every resample has the same mean; BCa's acceleration is undefined here.
        return float(values[0]), float(values[0])
    interval = _bootstrap(values, confidence, seed).confidence_interval
    if not (np.isfinite(interval.low) and np.isfinite(interval.high)):
        # BCa is undefined when nearly every resample has the same mean (values equal but
        # for rounding); the percentile interval is then the honest answer.
        interval = _bootstrap(values, confidence, seed, "percentile").confidence_interval
    return float(interval.low), float(interval.high)


def _bootstrap(values: np.ndarray, confidence: float, seed: int, method: str = "BCa"):
    with warnings.catch_warnings():
        # Few distinct values make BCa warn; the interval it returns is still the estimate.
        warnings.simplefilter("ignore")
        return scipy_stats.bootstrap(
            (values,),
            np.mean,
            confidence_level=confidence,
            n_resamples=RESAMPLES,
            method=method,
            rng=np.random.default_rng(seed),
        )


def item_means(frame: pd.DataFrame) -> pd.DataFrame:
    """One value per (condition, metric, item): the mean over seeds of its scored values.

    Sorted by item id within each group: rows arrive in the order workers finished, and
    the bootstrap's seeded resampling must see the items in one fixed order for two runs
    with equal values to print equal intervals.
    """
    means = (
        frame.groupby([*CONDITION_COLUMNS, "metric", "item"], dropna=False, sort=False)["value"]
        .mean()
        .reset_index()
    )
    return means.sort_values("item", kind="stable").reset_index(drop=True)


def summary_stats(frame: pd.DataFrame, directions: dict[str, dict]) -> pd.DataFrame:
    """One row per (condition, metric): mean, 95% CI, items scored and failed, kbps, RTF.

    ``frame`` is :func:`results_frame`; ``directions`` is :func:`metric_directions`, whose
    order (the run's) orders the metrics. Codecs keep the order of ``frame.attrs["codecs"]``
    (the run's, set by :func:`results_frame`) or of first appearance; then bitrate and
    NFE ascend.
    """
    if frame.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    coding = _coding_summary(frame)
    per_item = item_means(frame)
    records = []
    for (codec, bitrate, nfe, metric), group in per_item.groupby(
        [*CONDITION_COLUMNS, "metric"], dropna=False, sort=False
    ):
        values = group["value"].to_numpy(dtype=float)
        scored = values[np.isfinite(values)]
        low, high = bootstrap_mean_ci(scored)
        family = metric.split(".", 1)[0]
        direction = directions.get(family, {"higher_is_better": True, "unit": ""})
        records.append(
            {
                "codec": codec,
                "bitrate": bitrate,
                "nfe": nfe,
                "metric": metric,
                "higher_is_better": bool(direction["higher_is_better"]),
                "unit": direction.get("unit", ""),
                "mean": float(scored.mean()) if scored.size else np.nan,
                "ci_low": low,
                "ci_high": high,
                "n": int(scored.size),
                # An item fails when no seed of it could be scored.
                "failed": int(values.size - scored.size),
            }
        )
    summary = pd.DataFrame(records).merge(coding, on=CONDITION_COLUMNS, how="left")
    return _ordered(summary, frame, list(directions))[SUMMARY_COLUMNS]


def _coding_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean actual kbps and RTFs of each condition, from the fields on every row."""
    tasks = frame.drop_duplicates([*CONDITION_COLUMNS, "seed", "item"])
    tasks = tasks.assign(
        rtf_encode=tasks["encode_seconds"] / tasks["audio_seconds"],
        rtf_decode=tasks["decode_seconds"] / tasks["audio_seconds"],
    )
    return (
        tasks.groupby(CONDITION_COLUMNS, dropna=False, sort=False)[
            ["kbps_actual", "rtf_encode", "rtf_decode"]
        ]
        .mean()
        .reset_index()
    )


def _ordered(summary: pd.DataFrame, frame: pd.DataFrame, families: list[str]) -> pd.DataFrame:
    codecs = list(dict.fromkeys([*frame.attrs.get("codecs", []), *frame["codec"].unique()]))
    codec_order = {codec: position for position, codec in enumerate(codecs)}
    family_order = {name: position for position, name in enumerate(families)}
    metric_order = {
        name: (family_order.get(name.split(".", 1)[0], len(family_order)), position)
        for position, name in enumerate(frame["metric"].unique())
    }
    return summary.sort_values(
        ["codec", "bitrate", "nfe", "metric"],
        key=lambda column: (
            column.map(codec_order)
            if column.name == "codec"
            else column.map(metric_order)
            if column.name == "metric"
            else column
        ),
        na_position="first",
    ).reset_index(drop=True)


def filter_by_tag(frame: pd.DataFrame, tag: str) -> pd.DataFrame:
    """The rows of items carrying ``tag`` (speech, music, noisy, ...)."""
    return frame[frame["tags"].map(lambda tags: tag in tags)]


def run_tags(frame: pd.DataFrame) -> list[str]:
    """Tags worth a table of their own: present on some items but not on all of them."""
    items = frame.drop_duplicates("item")
    counts = pd.Series([tag for tags in items["tags"] for tag in tags]).value_counts()
    return sorted(tag for tag, count in counts.items() if count < len(items))


@dataclass(frozen=True)
class ConditionKey:
    """A condition of a run: codec, nominal kbps and NFE (``None`` for one-shot codecs)."""

    codec: str
    bitrate: float
    nfe: int | None = None

    def label(self) -> str:
        nfe = f" NFE {self.nfe}" if self.nfe is not None else ""
        return f"{self.codec} {self.bitrate:g} kbps{nfe}"

    def rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        selected = (frame["codec"] == self.codec) & np.isclose(frame["bitrate"], self.bitrate)
        selected &= frame["nfe"].isna() if self.nfe is None else frame["nfe"] == self.nfe
        return frame[selected]


def paired_comparison(
    frame: pd.DataFrame,
    baseline: ConditionKey,
    candidate: ConditionKey,
    directions: dict[str, dict],
    *,
    method: str = "wilcoxon",
    alpha: float = 0.05,
    metrics: list[str] | None = None,
) -> pd.DataFrame:
    """Compare ``candidate`` against ``baseline`` on the items both scored, per metric.

    Returns one row per metric: the number of pairs, both means, the mean difference
    (candidate minus baseline) with its 95% bootstrap CI, the test named with its
    version, its statistic and p-value, and a verdict in the metric's better direction.
    ``method`` is ``"wilcoxon"`` (signed-rank, two-sided; zero differences dropped as in
    Wilcoxon's original test) or ``"bootstrap"`` (two-sided p from the bootstrap
    distribution of the mean difference).
    """
    if method not in PAIRED_METHODS:
        raise ValueError(f"paired test: expected one of {PAIRED_METHODS}, got {method!r}")
    per_item = item_means(frame)
    sides = []
    for key in (baseline, candidate):
        rows = key.rows(per_item)
        if rows.empty:
            raise ValueError(f"no results for {key.label()} in this run")
        sides.append(rows.set_index(["metric", "item"])["value"])
    paired = pd.concat(sides, axis=1, keys=["baseline", "candidate"], join="inner").dropna()
    names = metrics or [name for name in dict.fromkeys(paired.index.get_level_values(0))]
    records = []
    for metric in names:
        if metric not in paired.index.get_level_values(0):
            raise ValueError(f"metric {metric!r} was not scored on items of both conditions")
        pairs = paired.loc[metric]
        differences = (pairs["candidate"] - pairs["baseline"]).to_numpy(dtype=float)
        higher_is_better = directions.get(metric.split(".", 1)[0], {}).get("higher_is_better", True)
        statistic, p_value, test = _paired_test(differences, method)
        low, high = bootstrap_mean_ci(differences)
        records.append(
            {
                "metric": metric,
                "higher_is_better": higher_is_better,
                "pairs": len(differences),
                "baseline": baseline.label(),
                "candidate": candidate.label(),
                "baseline_mean": float(pairs["baseline"].mean()),
                "candidate_mean": float(pairs["candidate"].mean()),
                "mean_difference": float(differences.mean()) if differences.size else np.nan,
                "ci_low": low,
                "ci_high": high,
                "test": test,
                "statistic": statistic,
                "p_value": p_value,
                "verdict": _verdict(differences, p_value, alpha, higher_is_better),
            }
        )
    return pd.DataFrame(records)


def _paired_test(differences: np.ndarray, method: str) -> tuple[float, float, str]:
    if method == "wilcoxon":
        name = f"Wilcoxon signed-rank, two-sided (scipy {scipy.__version__})"
        if np.count_nonzero(differences) < 1:
            return np.nan, np.nan, name
        result = scipy_stats.wilcoxon(differences, zero_method="wilcox")
        return float(result.statistic), float(result.pvalue), name
    name = f"paired bootstrap of the mean difference, BCa, {RESAMPLES} resamples"
    if differences.size < 2 or np.ptp(differences) == 0:
        return np.nan, np.nan, name
    distribution = _bootstrap(differences, CONFIDENCE, BOOTSTRAP_SEED).bootstrap_distribution
    tail = min(np.mean(distribution <= 0), np.mean(distribution >= 0))
    return float(differences.mean()), float(min(1.0, 2 * tail)), name


def _verdict(differences: np.ndarray, p_value: float, alpha: float, higher: bool) -> str:
    if not np.isfinite(p_value) or p_value >= alpha:
        return "no significant difference"
    improved = (differences.mean() > 0) == higher
    return "candidate better" if improved else "candidate worse"

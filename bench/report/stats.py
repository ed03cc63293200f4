"""Statistics behind every reported number: per-condition means with 95% bootstrap
confidence intervals, and paired comparisons between two conditions on the same items.

Items, not rows, are the unit of resampling: values of one item under several seeds are
averaged first, so seeds narrow an item's noise without pretending to be more items.
A ratio metric (one whose spec declares a :class:`bench.metrics.Ratio`, e.g. WER: edits
over reference words) is summarised by the ratio of its counts summed over items, as the
field reports a corpus WER, with the bootstrap resampling items and recomputing the ratio.
A metric on codes aggregated as a :class:`bench.metrics.PooledHistogram` (codebook usage,
token entropy) is summarised by its statistic of the code histograms summed over items (a
code used in any item counts as used), with the bootstrap resampling items and pooling
their histograms again.
Intervals are BCa bootstrap intervals (Efron 1987) from ``scipy.stats.bootstrap``; the
paired test is the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) or a paired
bootstrap of the mean difference. Resampling uses a fixed seed, so a report rebuilt from
the same rows prints the same intervals.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import scipy

from bench.metrics import CodingStats, PooledHistogram, Ratio, get_metric, metric_names
from bench.metrics.base import aggregation_of
from bench.metrics.histograms import STATISTICS, CodeHistograms
from bench.store import CONFIG_FILE, RunStore

CONFIDENCE = 0.95
RESAMPLES = 2000
BOOTSTRAP_SEED = 0
ROUND_DECIMALS = 10
# A condition is named by its label; its codec (a function of the label) rides along.
CONDITION_COLUMNS = ["label", "codec", "bitrate", "nfe"]
# The row fields from which coding metrics are computed: those of CodingStats, by name.
CODING_FIELDS = tuple(field.name for field in fields(CodingStats))
# The columns of a summary, then one per coding metric (see coding_metrics).
STATISTICS_COLUMNS = [
    *CONDITION_COLUMNS,
    "metric",
    "higher_is_better",
    "unit",
    "aggregate",
    "mean",
    "ci_low",
    "ci_high",
    "n",
    "failed",
]
PAIRED_METHODS = ("wilcoxon", "bootstrap")
# The "aggregate" of a summary row: what its "mean" column holds.
MEAN_AGGREGATE = "mean over items"
# How many numbers one batch of bootstrap resamples of pooled histograms may hold (each
# resample's weights over items and its pooled histogram): 32 MB of float64.
HISTOGRAM_BATCH_VALUES = 4_000_000


def coding_metrics() -> list[str]:
    """The registered coding metrics (actual kbps, RTFs). They are measured on every task
    from the fields its rows carry, so a summary holds them as columns of each condition
    (the table's own kbps and RTF columns), not as quality metrics."""
    return [name for name in metric_names() if get_metric(name).inputs == "coding"]


def results_frame(run_dir: str | os.PathLike) -> pd.DataFrame:
    """All result rows of a run as a DataFrame; failed values are NaN."""
    store = RunStore(run_dir)
    frame = pd.DataFrame(list(store.rows()))
    # Tables list labels in the order the run named them, not the order tasks finished.
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
    """``{metric family: {"higher_is_better", "unit", "aggregation"}}`` as recorded in the
    run's config; ``aggregation`` is a ratio metric's ``{"numerator", "denominator"}``
    (the names of its counts), a pooled-histogram metric's ``{"statistic"}``, else
    ``None`` (see :func:`bench.metrics.base.aggregation_of`).

    Read from the run, not the registry, so a report rebuilt where a plug-in metric is
    not installed still knows which way is better and how to pool it.
    """
    config = json.loads((Path(run_dir) / CONFIG_FILE).read_text())
    return {
        name: {
            "higher_is_better": meta["higher_is_better"],
            "unit": meta.get("unit", ""),
            "aggregation": meta.get("aggregation"),
        }
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
    return _interval((values,), np.mean, confidence, seed)


def ratio_of_sums(numerators: np.ndarray, denominators: np.ndarray, axis: int = -1) -> float:
    """``sum(numerators) / sum(denominators)``, e.g. a corpus WER from per-item counts."""
    return np.sum(numerators, axis=axis) / np.sum(denominators, axis=axis)


def bootstrap_ratio_ci(
    numerators: np.ndarray,
    denominators: np.ndarray,
    *,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """The BCa bootstrap interval of :func:`ratio_of_sums`, resampling items: an item's
    numerator and denominator are drawn together (NaN, NaN below two items)."""
    numerators = np.round(np.asarray(numerators, dtype=float), ROUND_DECIMALS)
    denominators = np.round(np.asarray(denominators, dtype=float), ROUND_DECIMALS)
    if numerators.size < 2:
        return np.nan, np.nan
    ratios = numerators / denominators
    if np.ptp(ratios) == 0:
        # Every item has the same ratio, so every resample pools to it.
        return float(ratios[0]), float(ratios[0])
    return _interval((numerators, denominators), ratio_of_sums, confidence, seed)


def bootstrap_histogram_ci(
    histograms: CodeHistograms,
    statistic,
    *,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """The BCa bootstrap intervals of ``statistic`` (a function of pooled histograms giving
    a vector of values, see :mod:`bench.metrics.histograms`) of the items' histograms
    summed, resampling items: a resample pools each item's histogram as many times as it
    was drawn. Returns ``(lows, highs)``, one per value (NaN below two items); the values
    share their resamples, as they share their items."""
    items = histograms.samples.shape[-1]
    size = np.atleast_1d(statistic(histograms.pooled())).shape[0]
    if items < 2:
        return np.full(size, np.nan), np.full(size, np.nan)

    def resampled(indices: np.ndarray, axis: int = -1) -> np.ndarray:
        indices = np.asarray(indices, dtype=int)
        drawn = indices.reshape(-1, indices.shape[-1])
        weights = np.zeros((drawn.shape[0], items))
        np.add.at(weights, (np.arange(drawn.shape[0])[:, None], drawn), 1.0)
        values = np.asarray(statistic(histograms.pooled(weights)), dtype=float)
        # Rounded as bootstrap_mean_ci rounds values: ties with the pooled value must not
        # flip with the last digit of a sum. Values first, resamples last, as scipy wants.
        values = np.round(values, ROUND_DECIMALS).reshape(size, *indices.shape[:-1])
        return values

    codes = sum(counts.shape[-1] for counts in histograms.levels.values())
    batch = max(1, HISTOGRAM_BATCH_VALUES // (items + codes + 1))

    def interval(method: str) -> list[np.ndarray]:
        found = _bootstrap((np.arange(items),), resampled, confidence, seed, method, batch)
        return [np.atleast_1d(bound).astype(float) for bound in found.confidence_interval]

    lows, highs = interval("BCa")
    # BCa is undefined where nearly every resample has the same value: the percentile
    # interval is then the honest answer (see _interval).
    undefined = ~(np.isfinite(lows) & np.isfinite(highs))
    if undefined.any():
        fallback_lows, fallback_highs = interval("percentile")
        lows[undefined], highs[undefined] = fallback_lows[undefined], fallback_highs[undefined]
    return lows, highs


def _interval(
    samples: tuple[np.ndarray, ...],
    statistic,
    confidence: float,
    seed: int,
    batch: int | None = None,
) -> tuple[float, float]:
    interval = _bootstrap(samples, statistic, confidence, seed, batch=batch).confidence_interval
    if not (np.isfinite(interval.low) and np.isfinite(interval.high)):
        # BCa is undefined when nearly every resample has the same statistic (values equal
        # but for rounding); the percentile interval is then the honest answer.
        interval = _bootstrap(samples, statistic, confidence, seed, "percentile", batch)
        interval = interval.confidence_interval
    return float(interval.low), float(interval.high)


def _scipy_stats():
    """``scipy.stats``, imported where a statistic is computed: it takes most of a second,
    which a report rebuilt from stored statistics need not spend."""
    from scipy import stats

    return stats


def _bootstrap(
    samples: tuple[np.ndarray, ...],
    statistic,
    confidence: float,
    seed: int,
    method: str = "BCa",
    batch: int | None = None,
):
    """``scipy.stats.bootstrap`` of ``statistic``; several samples are resampled as pairs;
    ``batch`` resamples at a time (``None``: all)."""
    with warnings.catch_warnings():
        # Few distinct values make BCa warn; the interval it returns is still the estimate.
        warnings.simplefilter("ignore")
        return _scipy_stats().bootstrap(
            samples,
            statistic,
            paired=len(samples) > 1,
            confidence_level=confidence,
            n_resamples=RESAMPLES,
            batch=batch,
            method=method,
            rng=np.random.default_rng(seed),
        )


def item_means(frame: pd.DataFrame, columns: tuple[str, ...] = ("value",)) -> pd.DataFrame:
    """One value per (condition, metric, item): the mean over seeds of its scored values
    (of each of ``columns``).

    Sorted by item id within each group: rows arrive in the order workers finished, and
    the bootstrap's seeded resampling must see the items in one fixed order for two runs
    with equal values to print equal intervals.
    """
    means = (
        frame.groupby([*CONDITION_COLUMNS, "metric", "item"], dropna=False, sort=False)[
            list(columns)
        ]
        .mean()
        .reset_index()
    )
    return means.sort_values("item", kind="stable").reset_index(drop=True)


def _with_ratio_counts(frame: pd.DataFrame, directions: dict[str, dict]) -> pd.DataFrame:
    """``frame`` plus ``numerator`` and ``denominator`` columns: a ratio metric's counts on
    its scored rows (see :func:`metric_directions`), NaN elsewhere.

    Raises ``ValueError`` for a scored row of a ratio metric without its counts.
    """
    numerators = pd.Series(np.nan, index=frame.index)
    denominators = pd.Series(np.nan, index=frame.index)
    counts = frame["metric_counts"] if "metric_counts" in frame else pd.Series(None, frame.index)
    families = frame["metric"].str.split(".", n=1).str[0]
    for family, direction in directions.items():
        ratio = aggregation_of(direction.get("aggregation"))
        scored = (families == family) & np.isfinite(frame["value"])
        if not isinstance(ratio, Ratio) or not scored.any():
            continue
        wanted = (ratio.numerator, ratio.denominator)
        for index, entry in counts[scored].items():
            if not isinstance(entry, dict) or any(name not in entry for name in wanted):
                row = frame.loc[index]
                raise ValueError(
                    f"metric {row['metric']!r} is pooled as {wanted[0]} / {wanted[1]}, but the "
                    f"scored row of item {row['item']!r} ({row['label']} {row['bitrate']:g} "
                    f"kbps) has counts {entry!r}"
                )
            numerators[index], denominators[index] = entry[wanted[0]], entry[wanted[1]]
    return frame.assign(numerator=numerators, denominator=denominators)


def _aggregate(group: pd.DataFrame, ratio: Ratio | None) -> tuple[str, float, float, float]:
    """``(aggregate, value, ci_low, ci_high)`` of one condition's per-item rows: the mean
    of the scored values, or for a ratio metric the ratio of their summed counts."""
    scored = group[np.isfinite(group["value"])]
    if scored.empty:
        return MEAN_AGGREGATE if ratio is None else ratio.describe(), np.nan, np.nan, np.nan
    if ratio is None:
        values = scored["value"].to_numpy(dtype=float)
        return MEAN_AGGREGATE, float(values.mean()), *bootstrap_mean_ci(values)
    numerators = scored["numerator"].to_numpy(dtype=float)
    denominators = scored["denominator"].to_numpy(dtype=float)
    value = float(ratio_of_sums(numerators, denominators))
    return ratio.describe(), value, *bootstrap_ratio_ci(numerators, denominators)


def _condition_key(label, codec, bitrate, nfe, metric) -> tuple:
    """A condition's metric as a dict key (a NaN NFE would never equal itself)."""
    return label, codec, float(bitrate), None if pd.isna(nfe) else int(nfe), metric


def _histogram_aggregates(frame: pd.DataFrame, directions: dict[str, dict]) -> dict[tuple, tuple]:
    """``{condition key: (aggregate, value, ci_low, ci_high)}`` of every metric aggregated
    as a :class:`PooledHistogram` (see :func:`_condition_key`).

    An item's histogram is the mean of its scored rows' counts over seeds. A level's value
    (``family.L3``) and a single-valued metric's pool their own rows' histograms; a summary
    value (``family.overall``) pools the histograms of the family's level rows, over the
    items whose summary row scored. Raises ``ValueError`` for a scored row without counts.
    """
    aggregates: dict[tuple, tuple] = {}
    families = frame["metric"].str.split(".", n=1).str[0]
    for family, direction in directions.items():
        aggregation = aggregation_of(direction.get("aggregation"))
        rows = frame[families == family]
        if not isinstance(aggregation, PooledHistogram) or rows.empty:
            continue
        for condition, group in rows.groupby(CONDITION_COLUMNS, dropna=False, sort=False):
            for metric, pooled in _pooled_family(family, group, aggregation).items():
                aggregates[_condition_key(*condition, metric)] = pooled
    return aggregates


def _pooled_family(
    family: str, group: pd.DataFrame, aggregation: PooledHistogram
) -> dict[str, tuple]:
    """Each metric of one family in one condition: ``(aggregate, value, low, high)``."""
    scored = group[np.isfinite(group["value"])]
    counts = scored["metric_counts"] if "metric_counts" in scored else pd.Series(None, scored.index)
    per_item: dict[str, dict[str, dict[str, float]]] = {}
    for (metric, item), entries in counts.groupby([scored["metric"], scored["item"]], sort=False):
        for index, entry in entries.items():
            if not isinstance(entry, dict):
                row = scored.loc[index]
                raise ValueError(
                    f"metric {metric!r} is pooled as code histograms, but the scored row of "
                    f"item {item!r} ({row['label']} {row['bitrate']:g} kbps) has counts "
                    f"{entry!r}"
                )
        per_item.setdefault(metric, {})[item] = _mean_counts(list(entries))
    keys = {metric: _sub_key(family, metric) for metric in group["metric"].unique()}
    # Each item's histogram of every level, parsed once for the family: its rows of the
    # levels (or a single-valued metric's row) with the samples and constants.
    every_item = sorted({item for items in per_item.values() for item in items})
    merged = {
        item: _merged([items.get(item, {}) for items in per_item.values()]) for item in every_item
    }
    family_histograms = CodeHistograms.of_items([merged[item] for item in every_item])
    # The metrics scored on every item share one bootstrap (a vector statistic); a metric
    # scored on fewer items pools those alone.
    shared = [
        metric for metric, key in keys.items() if sorted(per_item.get(metric, {})) == every_item
    ]
    pooled = {
        metric: (aggregation.describe(), *values)
        for metric, values in zip(
            shared,
            _pooled_statistics(family_histograms, aggregation, [keys[m] for m in shared]),
            strict=True,
        )
    }
    for metric, key in keys.items():
        if metric in pooled:
            continue
        items = sorted(per_item.get(metric, {}))
        if aggregation.pools_levels(key):
            histograms = CodeHistograms.of_items([merged[item] for item in items])
        else:
            histograms = CodeHistograms.of_items([per_item[metric][item] for item in items])
        (values,) = _pooled_statistics(histograms, aggregation, [key])
        pooled[metric] = (aggregation.describe(), *values)
    return pooled


def _sub_key(family: str, metric: str) -> str | None:
    """``"L3"`` of ``"family.L3"``; ``None`` for the single value ``"family"``."""
    return None if metric == family else metric[len(family) + 1 :]


def _mean_counts(entries: list[dict]) -> dict[str, float]:
    """The mean of an item's counts over its rows (its seeds)."""
    total: dict[str, float] = {}
    for entry in entries:
        for name, count in entry.items():
            total[name] = total.get(name, 0.0) + count
    return {name: count / len(entries) for name, count in total.items()}


def _merged(parts: list[dict[str, float]]) -> dict[str, float]:
    """One item's histogram from its rows of several levels: each row holds its own
    level's bins, and the same samples and constants."""
    merged: dict[str, float] = {}
    for part in parts:
        merged.update(part)
    return merged


def _pooled_statistics(
    histograms: CodeHistograms, aggregation: PooledHistogram, keys: list[str | None]
) -> list[tuple[float, float, float]]:
    """``(value, ci_low, ci_high)`` of each of the statistic's ``keys`` (``None``: its single
    value) of the items' ``histograms`` summed, with bootstrap intervals over items. A
    level's value reads that level's bins only, so it is the same from every level's
    histograms or from its own."""
    if not keys:
        return []
    if histograms.samples.size == 0:
        return [(np.nan, np.nan, np.nan)] * len(keys)
    function = STATISTICS[aggregation.statistic][0]

    def statistic(pooled: CodeHistograms) -> np.ndarray:
        values = function(pooled)
        return np.stack(
            [np.asarray(values if key is None else values[key], dtype=float) for key in keys]
        )

    found = statistic(histograms.pooled())
    lows, highs = bootstrap_histogram_ci(histograms, statistic)
    return [
        (float(v), float(low), float(high)) for v, low, high in zip(found, lows, highs, strict=True)
    ]


def summary_stats(frame: pd.DataFrame, directions: dict[str, dict]) -> pd.DataFrame:
    """One row per (condition, metric): mean, 95% CI, items scored and failed, kbps, RTF.

    ``frame`` is :func:`results_frame`; ``directions`` is :func:`metric_directions`, whose
    order (the run's) orders the metrics. Labels keep the order of ``frame.attrs["codecs"]``
    (the run's, set by :func:`results_frame`) or of first appearance; then bitrate and
    NFE ascend.
    """
    columns = [*STATISTICS_COLUMNS, *coding_metrics()]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    coding = _coding_summary(frame)
    counted = _with_ratio_counts(frame, directions)
    pooled_histograms = _histogram_aggregates(frame, directions)
    per_item = item_means(counted, ("value", "numerator", "denominator"))
    records = []
    for (label, codec, bitrate, nfe, metric), group in per_item.groupby(
        [*CONDITION_COLUMNS, "metric"], dropna=False, sort=False
    ):
        values = group["value"].to_numpy(dtype=float)
        scored = values[np.isfinite(values)]
        family = metric.split(".", 1)[0]
        direction = directions.get(family, {"higher_is_better": True, "unit": ""})
        key = _condition_key(label, codec, bitrate, nfe, metric)
        if key in pooled_histograms:
            aggregate, value, low, high = pooled_histograms[key]
        else:
            ratio = aggregation_of(direction.get("aggregation"))
            aggregate, value, low, high = _aggregate(group, ratio)
        records.append(
            {
                "label": label,
                "codec": codec,
                "bitrate": bitrate,
                "nfe": nfe,
                "metric": metric,
                "higher_is_better": bool(direction["higher_is_better"]),
                "unit": direction.get("unit", ""),
                "aggregate": aggregate,
                "mean": value,
                "ci_low": low,
                "ci_high": high,
                "n": int(scored.size),
                # An item fails when no seed of it could be scored.
                "failed": int(values.size - scored.size),
            }
        )
    summary = pd.DataFrame(records).merge(coding, on=CONDITION_COLUMNS, how="left")
    return _ordered(summary, frame, list(directions))[columns]


def _coding_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The mean of each coding metric over each condition's tasks, computed by the
    metric's own function from the fields on every row."""
    tasks = frame.drop_duplicates([*CONDITION_COLUMNS, "seed", "item"])
    # numpy floats, as the columns hold them: a division by zero gives inf, not an error.
    fields = [
        tasks[column].to_numpy(dtype=float) if column in tasks else np.full(len(tasks), np.nan)
        for column in CODING_FIELDS
    ]
    measured = [
        CodingStats(**dict(zip(CODING_FIELDS, task, strict=True)))
        for task in zip(*fields, strict=True)
    ]
    coding = coding_metrics()
    tasks = tasks.assign(
        **{name: [get_metric(name).function(stats) for stats in measured] for name in coding}
    )
    return tasks.groupby(CONDITION_COLUMNS, dropna=False, sort=False)[coding].mean().reset_index()


def _ordered(summary: pd.DataFrame, frame: pd.DataFrame, families: list[str]) -> pd.DataFrame:
    labels = list(dict.fromkeys([*frame.attrs.get("codecs", []), *frame["label"].unique()]))
    label_order = {label: position for position, label in enumerate(labels)}
    family_order = {name: position for position, name in enumerate(families)}
    metric_order = {
        name: (family_order.get(name.split(".", 1)[0], len(family_order)), position)
        for position, name in enumerate(frame["metric"].unique())
    }
    return summary.sort_values(
        ["label", "bitrate", "nfe", "metric"],
        key=lambda column: (
            column.map(label_order)
            if column.name == "label"
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
    """A condition of a run: label, nominal kbps and NFE (``None`` for one-shot codecs)."""

    label: str
    bitrate: float
    nfe: int | None = None

    def title(self) -> str:
        nfe = f" NFE {self.nfe}" if self.nfe is not None else ""
        return f"{self.label} {self.bitrate:g} kbps{nfe}"

    def rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        selected = (frame["label"] == self.label) & np.isclose(frame["bitrate"], self.bitrate)
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
            raise ValueError(f"no results for {key.title()} in this run")
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
                "baseline": baseline.title(),
                "candidate": candidate.title(),
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
        result = _scipy_stats().wilcoxon(differences, zero_method="wilcox")
        return float(result.statistic), float(result.pvalue), name
    name = f"paired bootstrap of the mean difference, BCa, {RESAMPLES} resamples"
    if differences.size < 2 or np.ptp(differences) == 0:
        return np.nan, np.nan, name
    distribution = _bootstrap(
        (differences,), np.mean, CONFIDENCE, BOOTSTRAP_SEED
    ).bootstrap_distribution
    tail = min(np.mean(distribution <= 0), np.mean(distribution >= 0))
    return float(differences.mean()), float(min(1.0, 2 * tail)), name


def _verdict(differences: np.ndarray, p_value: float, alpha: float, higher: bool) -> str:
    if not np.isfinite(p_value) or p_value >= alpha:
        return "no significant difference"
    improved = (differences.mean() > 0) == higher
    return "candidate better" if improved else "candidate worse"

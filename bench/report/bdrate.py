"""The Bjøntegaard delta rate (BD-rate): how many more bits, in percent, a codec spends than
an anchor codec for the same quality, averaged over the quality range both curves reach.

Method: G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves",
VCEG-M33 (2001), with the piecewise cubic Hermite interpolation (PCHIP) that replaced its
single cubic fit in current video-coding practice: the JCT-VC common-test-conditions Excel
sheet and the ``pchip`` method of the ``bjontegaard`` PyPI package (FAU-LMS), which takes
two or more points. Unverified here: the document numbers usually cited for the change
(JCTVC-L0242, VCEG-AL22), and whether the Excel sheet's end slopes equal scipy's.
log(rate) is interpolated as a function of quality by the monotone PCHIP of Fritsch and
Carlson (1980) with the slopes of ``scipy.interpolate.PchipInterpolator`` (weighted
harmonic means inside, Fritsch and Butland 1984; a shape-preserving three-point estimate
at the ends); both interpolants are integrated exactly over the overlap of the two quality
ranges, and BD-rate = exp(mean difference of log-rates) - 1, in percent. Negative means the
codec needs fewer bits than the anchor. The slopes and integrals are computed here in
closed form for all bootstrap draws at once (scipy builds one interpolant per call, 100
times slower); the tests check them against scipy's interpolant.

Rules of :func:`bd_rate`:

- Quality is oriented so that higher is better: a lower-is-better metric (mel distance,
  WER) is negated before interpolation; the rate axis is unaffected.
- A curve needs :data:`MIN_POINTS` (2) points. Through two points PCHIP is the straight
  line in (quality, log-rate), the log-linear rate model, integrated exactly; codec sweeps
  here often have only 3 bitrates, so the 4 points of the video CTCs would refuse most
  of them. The table reports each curve's points, so a 2-point curve is visible.
- Rates must be finite and positive, qualities finite.
- A curve must be strictly monotone: sorted by rate, quality must rise strictly. Where it
  does not (a repeated quality, or more bits giving a worse score), rate is not a
  function of quality and the BD-rate would depend on which points cross: NaN.
- The quality ranges must overlap in an interval, not in a single point or not at all.

An unusable case gives NaN with a reason, never an exception; inputs of unequal lengths
are a caller's error (``ValueError``).

The table of a run (:func:`bd_rate_table`), per quality metric and per label other than
the anchor:

- Rate is ACTUAL kbps, never the nominal bitrate: per condition, the mean over items of
  each item's ``kbps_actual`` (averaged over seeds). Quality is the mean over items of each
  item's ``value`` (averaged over seeds; failed items excluded, as in the summary). A ratio
  metric (WER) is therefore the mean of per-item ratios here, not the pooled ratio of
  counts that the summary table prints (simpler; each item weighs the same).
- NFE: a curve takes, at each (label, bitrate), the highest NFE that label ran there
  (conditions without an NFE axis are used as they are).
- The 95% interval is a percentile bootstrap over items: :data:`RESAMPLES` draws of the
  items with replacement from ``numpy.random.default_rng(BOOTSTRAP_SEED)``, the same drawn
  items for every condition of both curves (they were scored on the same items), the
  condition means (quality and rate) and the BD-rate recomputed per draw. Draws that give
  NaN (e.g. a curve that turns non-monotone) are dropped; ``valid_draws`` counts the rest.
  Each (metric, codec) pair starts from the seed, so its interval does not depend on what
  else is in the table.

API: :func:`bd_rate` (two curves), :func:`default_anchor`, :func:`bd_rate_table` (frame of
:func:`bench.report.stats.results_frame`, directions of
:func:`bench.report.stats.metric_directions`, anchor -> DataFrame of
:data:`BD_RATE_COLUMNS`), :func:`write_bd_rate_tables` (writes ``bd_rate.md``, ``.csv``,
``.tex``) and :func:`bd_rate_html` (an HTML ``<table>`` fragment; :data:`BD_RATE_NOTE`
says what its cells hold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report.stats import (
    BOOTSTRAP_SEED,
    CONFIDENCE,
    RESAMPLES,
    coding_metrics,
    item_means,
)
from bench.report.table import _LATEX_ARROWS, _STYLES, TABLE_FORMATS, _arrow

MIN_POINTS = 2
DEFAULT_ANCHOR = "opus"
BD_RATE_COLUMNS = [
    "metric",
    "higher_is_better",
    "codec",
    "anchor",
    "bd_rate_percent",
    "ci_low",
    "ci_high",
    "valid_draws",
    "overlap_low",
    "overlap_high",
    "points",
    "anchor_points",
    "reason",
]
BD_RATE_NOTE = (
    "BD-rate: extra bits the codec spends over the anchor at equal quality, in % of the "
    "anchor's actual kbps (negative = fewer bits), piecewise cubic (PCHIP) interpolation of "
    "log-rate over quality, averaged over the quality range both reach; "
    f"[{CONFIDENCE:.0%} percentile bootstrap CI over items, {RESAMPLES} draws]"
)


@dataclass(frozen=True)
class BDRate:
    """A BD-rate in percent, the quality range it averages over (in the metric's own
    units), and why it is NaN (``""`` when it is not; the range is then NaN too)."""

    percent: float
    overlap_low: float = np.nan
    overlap_high: float = np.nan
    reason: str = ""

    @property
    def valid(self) -> bool:
        return not self.reason


def bd_rate(
    rates_a: Sequence[float],
    qualities_a: Sequence[float],
    rates_b: Sequence[float],
    qualities_b: Sequence[float],
    *,
    higher_is_better: bool = True,
    min_points: int = MIN_POINTS,
) -> BDRate:
    """The BD-rate of curve B against the anchor curve A, in percent.

    ``rates_*`` are bitrates (kbps, any positive unit shared by both curves) and
    ``qualities_*`` the metric at those rates, one point per condition, in any order.
    ``higher_is_better`` is the metric's direction. See the module docstring for the rules
    that give NaN with a reason.
    """
    curves = []
    for name, rates, qualities in (
        ("anchor", rates_a, qualities_a),
        ("codec", rates_b, qualities_b),
    ):
        rates = np.asarray(rates, dtype=float)
        qualities = np.asarray(qualities, dtype=float)
        if rates.ndim != 1 or rates.shape != qualities.shape:
            raise ValueError(
                f"{name} curve: expected rates and qualities of equal 1-D shapes, "
                f"got {rates.shape} and {qualities.shape}"
            )
        curves += [rates[np.newaxis], qualities[np.newaxis]]
    return _bd_rates(*curves, higher_is_better=higher_is_better, min_points=min_points)[0]


def _bd_rates(
    rates_a: np.ndarray,
    qualities_a: np.ndarray,
    rates_b: np.ndarray,
    qualities_b: np.ndarray,
    *,
    higher_is_better: bool,
    min_points: int = MIN_POINTS,
) -> list[BDRate]:
    """:func:`bd_rate` of many pairs of curves at once (the bootstrap's draws): each
    argument is ``(draws, points)``, a curve's points in the same order in every draw."""
    if min_points < 2:
        raise ValueError(f"min_points: PCHIP needs at least 2 points, got {min_points}")
    draws = len(rates_a)
    for name, rates in (("anchor", rates_a), ("codec", rates_b)):
        if rates.shape[1] < min_points:
            reason = f"the {name} curve has {rates.shape[1]} point(s), BD-rate needs {min_points}"
            return [BDRate(np.nan, reason=reason)] * draws
    reasons = np.full(draws, "", dtype=object)

    def refuse(unusable: np.ndarray, reason: str) -> None:
        # The first rule a draw breaks names it.
        reasons[(reasons == "") & unusable] = reason

    curves = []
    # NaN and non-positive rates, and draws whose ranges do not overlap, are refused below;
    # their logs, comparisons and integrals must not warn.
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for name, rates, qualities in (
            ("anchor", rates_a, qualities_a),
            ("codec", rates_b, qualities_b),
        ):
            finite = np.isfinite(rates).all(axis=1) & np.isfinite(qualities).all(axis=1)
            refuse(~finite, f"the {name} curve has a non-finite rate or quality")
            refuse((rates <= 0).any(axis=1), f"the {name} curve has a rate <= 0")
            oriented = qualities if higher_is_better else -qualities
            order = np.argsort(oriented, axis=1, kind="stable")
            oriented = np.take_along_axis(oriented, order, axis=1)
            log_rates = np.log(np.take_along_axis(rates, order, axis=1))
            refuse(
                (np.diff(oriented, axis=1) == 0).any(axis=1),
                f"the {name} curve repeats a quality, so rate is not a function of it",
            )
            refuse(
                (np.diff(log_rates, axis=1) <= 0).any(axis=1),
                f"the {name} curve is not monotone: quality does not rise with rate",
            )
            curves.append((oriented, log_rates))
        (quality_a, log_rate_a), (quality_b, log_rate_b) = curves
        low = np.maximum(quality_a[:, 0], quality_b[:, 0])
        high = np.minimum(quality_a[:, -1], quality_b[:, -1])
        refuse(high < low, "the quality ranges do not overlap")
        refuse(high == low, "the quality ranges overlap in a single point")
        integral_a = _pchip_integral(quality_a, log_rate_a, low, high)
        integral_b = _pchip_integral(quality_b, log_rate_b, low, high)
        percents = np.expm1((integral_b - integral_a) / (high - low)) * 100
        refuse(~np.isfinite(percents), "the mean log-rate difference is not finite")
    # The range in the metric's own units: undo the negation of a lower-is-better metric.
    lows, highs = (low, high) if higher_is_better else (-high, -low)
    return [
        BDRate(float(percent), float(overlap_low), float(overlap_high))
        if not reason
        else BDRate(np.nan, reason=reason)
        for percent, overlap_low, overlap_high, reason in zip(
            percents, lows, highs, reasons, strict=True
        )
    ]


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The slopes ``dy/dx`` at the knots ``(draws, points)`` of the monotone piecewise cubic
    Hermite interpolant as ``scipy.interpolate.PchipInterpolator`` sets them: a weighted
    harmonic mean of the neighbouring secants inside (0 where they differ in sign), a
    three-point estimate kept shape-preserving at the ends; through two points, the line."""
    widths = np.diff(x, axis=1)
    secants = np.diff(y, axis=1) / widths
    if x.shape[1] == 2:
        return np.repeat(secants, 2, axis=1)
    left_width, right_width = widths[:, :-1], widths[:, 1:]
    left, right = secants[:, :-1], secants[:, 1:]
    left_weight, right_weight = 2 * right_width + left_width, right_width + 2 * left_width
    same_sign = np.sign(left) * np.sign(right) > 0
    inner = np.where(
        same_sign,
        (left_weight + right_weight) / (left_weight / left + right_weight / right),
        0.0,
    )
    first = _end_slope(widths[:, 0], widths[:, 1], secants[:, 0], secants[:, 1])
    last = _end_slope(widths[:, -1], widths[:, -2], secants[:, -1], secants[:, -2])
    return np.concatenate([first[:, np.newaxis], inner, last[:, np.newaxis]], axis=1)


def _end_slope(
    width: np.ndarray, next_width: np.ndarray, secant: np.ndarray, next_secant: np.ndarray
) -> np.ndarray:
    """The slope at an end knot: the three-point estimate, set to 0 where its sign differs
    from the end secant's and capped at 3 secants where the secants change sign."""
    slope = ((2 * width + next_width) * secant - width * next_secant) / (width + next_width)
    slope = np.where(np.sign(slope) != np.sign(secant), 0.0, slope)
    overshoots = (np.sign(secant) != np.sign(next_secant)) & (np.abs(slope) > 3 * np.abs(secant))
    return np.where(overshoots, 3 * secant, slope)


def _pchip_integral(x: np.ndarray, y: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The integral over ``[low, high]`` (each ``(draws,)``, inside the knots) of the PCHIP
    interpolant through the knots ``(x, y)``, each ``(draws, points)``, x ascending."""
    slopes = _pchip_slopes(x, y)
    return _antiderivative(x, y, slopes, high) - _antiderivative(x, y, slopes, low)


def _antiderivative(x: np.ndarray, y: np.ndarray, slopes: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The integral from the first knot to ``at`` of the cubic Hermite interpolant."""
    widths = np.diff(x, axis=1)
    # A piece of width h integrates to h (y0 + y1) / 2 + h^2 (d0 - d1) / 12.
    pieces = widths * (y[:, :-1] + y[:, 1:]) / 2 + widths**2 * (slopes[:, :-1] - slopes[:, 1:]) / 12
    before = np.concatenate([np.zeros((len(x), 1)), np.cumsum(pieces, axis=1)], axis=1)
    piece = np.clip((x[:, 1:-1] <= at[:, np.newaxis]).sum(axis=1), 0, x.shape[1] - 2)

    def knot(values: np.ndarray, offset: int = 0) -> np.ndarray:
        return np.take_along_axis(values, (piece + offset)[:, np.newaxis], axis=1)[:, 0]

    width = knot(widths)
    t = (at - knot(x)) / width
    # The integrals from 0 to t of the Hermite basis (h00, h10, h01, h11) of t in [0, 1].
    partial = (
        knot(y) * (t**4 / 2 - t**3 + t)
        + width * knot(slopes) * (t**4 / 4 - 2 * t**3 / 3 + t**2 / 2)
        + knot(y, 1) * (t**3 - t**4 / 2)
        + width * knot(slopes, 1) * (t**4 / 4 - t**3 / 3)
    )
    return knot(before) + width * partial


def default_anchor(labels: Sequence[str]) -> str:
    """``"opus"`` where it is among ``labels``, else the first label."""
    if not labels:
        raise ValueError("BD-rate anchor: expected at least one label, got none")
    return DEFAULT_ANCHOR if DEFAULT_ANCHOR in labels else labels[0]


def bd_rate_table(
    frame: pd.DataFrame, directions: dict[str, dict], anchor: str | None = None
) -> pd.DataFrame:
    """One row (:data:`BD_RATE_COLUMNS`) per quality metric and label other than the anchor.

    ``frame`` is :func:`bench.report.stats.results_frame`, ``directions``
    :func:`bench.report.stats.metric_directions`; ``anchor`` is a label of the run,
    :func:`default_anchor` when ``None``. Metrics follow the order of ``directions``, labels
    that of ``frame.attrs["codecs"]`` (then of first appearance). Coding metrics (actual
    kbps, RTFs) are not quality metrics and get no rows.

    Raises ``ValueError`` for an anchor that is not a label of the run.
    """
    if frame.empty:
        return pd.DataFrame(columns=BD_RATE_COLUMNS)
    labels = _labels(frame)
    anchor = default_anchor(labels) if anchor is None else anchor
    if anchor not in labels:
        raise ValueError(
            f"BD-rate anchor: expected one of the run's labels {labels}, got {anchor!r}"
        )
    quality = frame[~frame["metric"].isin(coding_metrics())]
    per_item = item_means(_highest_nfe(quality), ("value", "kbps_actual"))
    records = []
    for metric in _metrics(quality, directions):
        rows = per_item[per_item["metric"] == metric]
        direction = directions.get(metric.split(".", 1)[0])
        for label in labels:
            if label != anchor:
                records.append(_pair(rows, metric, direction, label, anchor))
    return pd.DataFrame(records, columns=BD_RATE_COLUMNS)


def _labels(frame: pd.DataFrame) -> list[str]:
    present = list(frame["label"].unique())
    named = [label for label in frame.attrs.get("codecs", []) if label in present]
    return list(dict.fromkeys([*named, *present]))


def _metrics(frame: pd.DataFrame, directions: dict[str, dict]) -> list[str]:
    families = list(directions)
    names = list(frame["metric"].unique())
    return sorted(
        names,
        key=lambda name: (
            families.index(name.split(".", 1)[0])
            if name.split(".", 1)[0] in families
            else len(families),
            names.index(name),
        ),
    )


def _highest_nfe(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of each (label, bitrate) at its highest NFE (all of them where NFE is NaN)."""
    highest = frame.groupby(["label", "bitrate"], sort=False)["nfe"].transform("max")
    return frame[(frame["nfe"] == highest) | (frame["nfe"].isna() & highest.isna())]


def _pair(rows: pd.DataFrame, metric: str, direction: dict | None, label: str, anchor: str) -> dict:
    """The BD-rate row of ``label`` against ``anchor`` from one metric's per-item rows."""
    items = sorted(rows.loc[rows["label"].isin([label, anchor]), "item"].unique())
    sides = [_matrices(rows[rows["label"] == name], items) for name in (anchor, label)]
    record = {
        "metric": metric,
        "higher_is_better": None if direction is None else bool(direction["higher_is_better"]),
        "codec": label,
        "anchor": anchor,
        "ci_low": np.nan,
        "ci_high": np.nan,
        "valid_draws": 0,
        "points": len(sides[1][0]),
        "anchor_points": len(sides[0][0]),
    }
    if direction is None:
        reason = f"the run records no direction for metric {metric!r}"
        return record | {
            "bd_rate_percent": np.nan,
            "overlap_low": np.nan,
            "overlap_high": np.nan,
            "reason": reason,
        }
    higher = record["higher_is_better"]
    point = _bd_rate_of_means(sides, np.ones((1, len(items))), higher)[0]
    record |= {
        "bd_rate_percent": point.percent,
        "overlap_low": point.overlap_low,
        "overlap_high": point.overlap_high,
        "reason": point.reason,
    }
    if point.valid and len(items) >= 2:
        draws = np.random.default_rng(BOOTSTRAP_SEED).integers(
            0, len(items), size=(RESAMPLES, len(items))
        )
        weights = np.zeros((RESAMPLES, len(items)))
        np.add.at(weights, (np.arange(RESAMPLES)[:, None], draws), 1.0)
        percents = np.array([r.percent for r in _bd_rate_of_means(sides, weights, higher)])
        valid = percents[np.isfinite(percents)]
        if valid.size:
            tail = (1 - CONFIDENCE) / 2 * 100
            low, high = np.percentile(valid, [tail, 100 - tail])
            record |= {"ci_low": float(low), "ci_high": float(high)}
        record["valid_draws"] = int(valid.size)
    return record


def _matrices(rows: pd.DataFrame, items: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(rates, qualities)``, each ``(conditions, items)``: one curve's per-item actual
    kbps and values, a row per bitrate (ascending), NaN where an item has none."""
    rates = rows.pivot(index="bitrate", columns="item", values="kbps_actual")
    qualities = rows.pivot(index="bitrate", columns="item", values="value")
    return (
        rates.reindex(columns=items).to_numpy(dtype=float),
        qualities.reindex(columns=items).to_numpy(dtype=float),
    )


def _bd_rate_of_means(sides, weights: np.ndarray, higher_is_better: bool) -> list[BDRate]:
    """The BD-rate of each row of ``weights`` ``(draws, items)``: how often each item is
    drawn, the condition means being weighted means over the items scored."""
    (rates_a, qualities_a), (rates_b, qualities_b) = sides
    return _bd_rates(
        *(
            _weighted_means(matrix, weights)
            for matrix in (rates_a, qualities_a, rates_b, qualities_b)
        ),
        higher_is_better=higher_is_better,
    )


def _weighted_means(matrix: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(draws, conditions)`` means of ``matrix`` ``(conditions, items)`` over its finite
    entries, weighted by ``weights`` ``(draws, items)``; NaN where no weight is scored."""
    scored = np.isfinite(matrix)
    totals = weights @ np.where(scored, matrix, 0.0).T
    counts = weights @ scored.T.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, totals / counts, np.nan)


def _display(table: pd.DataFrame, style: str) -> pd.DataFrame:
    """The table as strings: ``+12.3 [+5.1, +20.0]`` cells, NaN cells with their reason."""
    escape, _ = _STYLES[style]
    arrows = _LATEX_ARROWS if style == "latex" else {True: _arrow(True), False: _arrow(False)}
    cells = []
    for row in table.itertuples(index=False):
        # No arrow where the run records no direction (None; NaN once read back from CSV).
        known = isinstance(row.higher_is_better, bool | np.bool_)
        arrow = arrows[bool(row.higher_is_better)] if known else ""
        cells.append(
            {
                "metric": f"{escape(row.metric)} {arrow}".strip(),
                "codec": escape(row.codec),
                "anchor": escape(row.anchor),
                "BD-rate % [95% CI]": escape(_bd_rate_cell(row)),
                "quality range": (
                    "-"
                    if pd.isna(row.overlap_low)
                    else f"{row.overlap_low:.3g} to {row.overlap_high:.3g}"
                ),
                "points": f"{row.points} vs {row.anchor_points}",
            }
        )
    columns = ["metric", "codec", "anchor", "BD-rate % [95% CI]", "quality range", "points"]
    display = pd.DataFrame(cells, columns=columns)
    return display.rename(columns={name: escape(name) for name in columns})


def _bd_rate_cell(row) -> str:
    if pd.isna(row.bd_rate_percent):
        return f"nan ({row.reason})"
    text = f"{row.bd_rate_percent:+.1f}"
    if pd.notna(row.ci_low):
        text += f" [{row.ci_low:+.1f}, {row.ci_high:+.1f}]"
    if 0 < row.valid_draws < RESAMPLES:
        text += f" ({row.valid_draws} of {RESAMPLES} draws valid)"
    return text


def bd_rate_html(table: pd.DataFrame) -> str:
    """:func:`bd_rate_table` as an HTML ``<table class="bd-rate">`` fragment (escaped)."""
    return _display(table, "html").to_html(index=False, escape=False, classes="bd-rate", border=0)


def write_bd_rate_tables(table: pd.DataFrame, out_dir: Path, stem: str = "bd_rate") -> list[Path]:
    """Write :func:`bd_rate_table` as ``stem.md`` (with :data:`BD_RATE_NOTE`), ``stem.csv``
    (the numbers, one row per metric and codec) and ``stem.tex`` (booktabs) into
    ``out_dir``; returns the paths in that order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.{extension}" for extension in TABLE_FORMATS]
    markdown = _display(table, "markdown").to_markdown(index=False, disable_numparse=True)
    paths[0].write_text(f"{markdown}\n\n{BD_RATE_NOTE}\n", encoding="utf-8")
    table.to_csv(paths[1], index=False)
    latex = _display(table, "latex").style.hide(axis="index")
    paths[2].write_text(latex.to_latex(column_format="lllrrr", hrules=True), encoding="utf-8")
    return paths

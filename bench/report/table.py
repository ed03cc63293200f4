"""Summary tables: one row per condition (label x bitrate x NFE), every metric as mean [95% CI]
(a ratio metric such as WER as its ratio of sums over items, see ``bench.report.stats``).

Cells say how many items failed (NaN, excluded from the mean), so a mean over fewer items
is never mistaken for one over all of them. Headers carry the metric's direction
(``↑`` higher is better, ``↓`` lower is better), and the best mean of each column among
the conditions at the same nominal bitrate is marked: bold in Markdown and LaTeX, a
``_best`` column in CSV. LaTeX uses booktabs rules, as journals ask.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report.stats import (
    MEAN_AGGREGATE,
    STATISTICS_COLUMNS,
    filter_by_tag,
    metric_directions,
    results_frame,
    run_tags,
    summary_stats,
)

TABLE_FORMATS = ("md", "csv", "tex")
# Characters LaTeX treats as commands; Styler's own escaping would also escape our \textbf.
_LATEX_SPECIALS = {c: f"\\{c}" for c in "&%$#_{}"} | {"~": r"\textasciitilde{}"}
_LATEX_ARROWS = {True: r"$\uparrow$", False: r"$\downarrow$"}


def _arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def aggregation_note(summary: pd.DataFrame) -> str:
    """What the cells hold: a mean over items, or for a ratio metric its pooled ratio."""
    note = "mean [95% bootstrap CI over items]"
    if "aggregate" not in summary:
        return note
    pooled = summary[summary["aggregate"] != MEAN_AGGREGATE].drop_duplicates("metric")
    for metric, aggregate in zip(pooled["metric"], pooled["aggregate"], strict=True):
        note += f"; {metric}: {aggregate}"
    return note


def _decimals(means: pd.Series) -> int:
    """Decimals that give the column's typical (median) mean three significant digits.

    The median, not the largest: an identity anchor at 189 dB SI-SDR must not round the
    codecs' 5.3 dB to 5.
    """
    typical = means.abs().median()
    if not np.isfinite(typical) or typical == 0:
        return 3
    return int(min(4, max(0, 2 - math.floor(math.log10(typical)))))


def best_mask(summary: pd.DataFrame) -> pd.Series:
    """True where a row holds the best mean of its metric among conditions at its bitrate.

    Only groups of two or more scored conditions are marked: a lone condition is not
    "best" of anything.
    """
    oriented = summary["mean"].where(summary["higher_is_better"].astype(bool), -summary["mean"])
    groups = oriented.groupby([summary["metric"], summary["bitrate"]], sort=False)
    scored = groups.transform("count")
    return (oriented == groups.transform("max")) & (scored >= 2) & np.isfinite(oriented)


def _conditions(summary: pd.DataFrame) -> pd.DataFrame:
    """The condition columns, kbps and RTF of each row of the table."""
    conditions = summary.drop_duplicates(["label", "bitrate", "nfe"])[
        ["label", "bitrate", "nfe", "kbps_actual", "rtf_encode", "rtf_decode"]
    ]
    keys = [summary["label"], summary["bitrate"], summary["nfe"]]
    items = (summary["n"] + summary["failed"]).groupby(keys, dropna=False, sort=False).max()
    return conditions.assign(items=items.to_numpy().astype(int)).reset_index(drop=True)


def code_statistics(directions: dict[str, dict]) -> set[str]:
    """The metric families computed on codes and pooled over items (token statistics, see
    ``bench.metrics.PooledHistogram``): the token table shows them (``bench.report.tokens``),
    not the quality tables, curves and BD-rates."""
    return {
        family
        for family, direction in directions.items()
        if "statistic" in (direction.get("aggregation") or {})
    }


def metric_families(rows: pd.DataFrame) -> pd.Series:
    """The family of each row's metric: ``dnsmos`` for ``dnsmos.sig``."""
    return rows["metric"].str.split(".", n=1).str[0]


def quality_only(summary: pd.DataFrame, directions: dict[str, dict]) -> pd.DataFrame:
    """``summary`` without the rows of :func:`code_statistics`."""
    codes = code_statistics(directions)
    return summary[~metric_families(summary).isin(codes)].reset_index(drop=True)


def coding_columns(summary: pd.DataFrame) -> list[str]:
    """The coding metrics of a summary (actual kbps, RTFs): its columns after
    ``STATISTICS_COLUMNS`` (see :func:`bench.report.stats.summary_stats`). Read from the
    summary, not the registry, so that a report rebuilt from stored statistics need not
    import every metric's backend."""
    return [column for column in summary.columns if column not in STATISTICS_COLUMNS]


def quality_metrics(summary: pd.DataFrame) -> list[str]:
    """Metrics shown as table columns, in run order; coding metrics have columns of their own."""
    coding = coding_columns(summary)
    return [name for name in summary["metric"].unique() if name not in coding]


def display_table(summary: pd.DataFrame, *, style: str = "markdown") -> pd.DataFrame:
    """The table as strings: ``mean [low, high]`` cells with the best ones in bold.

    ``style`` is ``"markdown"`` (``**bold**``), ``"latex"`` (escaped, ``\\textbf{}``) or
    ``"html"`` (escaped, ``<strong>``).
    """
    escape, strong = _STYLES[style]
    conditions = _conditions(summary)
    marked = best_mask(summary)
    table = pd.DataFrame(
        {
            "codec": conditions["label"].map(escape),
            "kbps": conditions["bitrate"].map("{:g}".format),
            "NFE": conditions["nfe"].map(lambda nfe: "-" if pd.isna(nfe) else f"{nfe:g}"),
            "items": conditions["items"],
            "kbps actual": conditions["kbps_actual"].map(_plain(2)),
            "RTF enc": conditions["rtf_encode"].map(_plain_significant),
            "RTF dec": conditions["rtf_decode"].map(_plain_significant),
        }
    )
    for metric in quality_metrics(summary):
        rows = summary[summary["metric"] == metric]
        decimals = _decimals(rows["mean"])
        cells = {}
        for row, best in zip(rows.itertuples(index=False), marked[rows.index], strict=True):
            cell = _cell(row, decimals)
            cells[(row.label, row.bitrate, _nfe_key(row.nfe))] = strong(cell) if best else cell
        keys = zip(conditions["label"], conditions["bitrate"], conditions["nfe"], strict=True)
        higher_is_better = bool(rows["higher_is_better"].iloc[0])
        arrow = _LATEX_ARROWS[higher_is_better] if style == "latex" else _arrow(higher_is_better)
        table[f"{escape(metric)} {arrow}"] = [
            cells.get((label, bitrate, _nfe_key(nfe)), "") for label, bitrate, nfe in keys
        ]
    if conditions["nfe"].isna().all():
        table = table.drop(columns="NFE")
    return table


def _nfe_key(nfe: float) -> float | None:
    return None if pd.isna(nfe) else float(nfe)


def _plain(decimals: int):
    return lambda value: "nan" if pd.isna(value) else f"{value:.{decimals}f}"


def _plain_significant(value: float) -> str:
    return "nan" if pd.isna(value) else f"{value:.2g}"


def _cell(row, decimals: int) -> str:
    """A summary row's ``mean [low, high]`` (a row of ``itertuples``)."""
    if pd.isna(row.mean):
        text = "nan"
    elif pd.isna(row.ci_low):
        text = f"{row.mean:.{decimals}f}"
    else:
        text = f"{row.mean:.{decimals}f} [{row.ci_low:.{decimals}f}, {row.ci_high:.{decimals}f}]"
    return f"{text} ({row.failed} failed)" if row.failed else text


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIALS.get(character, character) for character in str(text))


# style -> (escape text, mark the best cell)
_STYLES = {
    "markdown": (str, lambda cell: f"**{cell}**"),
    "latex": (latex_escape, lambda cell: rf"\textbf{{{cell}}}"),
    "html": (html.escape, lambda cell: f"<strong>{cell}</strong>"),
}


def markdown_table(summary: pd.DataFrame) -> str:
    return display_table(summary).to_markdown(index=False, disable_numparse=True)


def html_table(summary: pd.DataFrame) -> str:
    """An HTML ``<table>`` fragment (cells escaped here, so pandas must not escape again)."""
    return display_table(summary, style="html").to_html(
        index=False, escape=False, classes="summary", border=0
    )


def latex_table(summary: pd.DataFrame, caption: str = "") -> str:
    """A booktabs ``tabular`` (``\\toprule``/``\\midrule``/``\\bottomrule``)."""
    table = display_table(summary, style="latex")
    alignment = "l" + "r" * (len(table.columns) - 1)
    styler = table.style.hide(axis="index")
    latex = styler.to_latex(column_format=alignment, hrules=True, caption=caption or None)
    return latex


def csv_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One numeric row per condition: per metric mean, CI bounds, items scored and failed."""
    # The "codec" column names each condition by its label, as the other tables do.
    conditions = _conditions(summary).rename(columns={"label": "codec", "bitrate": "kbps_nominal"})
    table = conditions[
        ["codec", "kbps_nominal", "nfe", "items", "kbps_actual", "rtf_encode", "rtf_decode"]
    ].copy()
    marked = best_mask(summary)
    for metric in quality_metrics(summary):
        rows = summary[summary["metric"] == metric].assign(best=marked)
        rows = rows.drop(columns="codec").rename(
            columns={"label": "codec", "bitrate": "kbps_nominal"}
        )
        rows = rows.set_index(["codec", "kbps_nominal", "nfe"])
        columns = rows[["mean", "ci_low", "ci_high", "n", "failed", "best"]]
        columns.columns = [f"{metric}_{name}" for name in columns.columns]
        table = table.join(columns, on=["codec", "kbps_nominal", "nfe"])
    return table


def write_tables(summary: pd.DataFrame, out_dir: Path, stem: str = "summary") -> list[Path]:
    """Write ``stem.md``, ``stem.csv`` and ``stem.tex`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.{extension}" for extension in TABLE_FORMATS]
    paths[0].write_text(markdown_table(summary) + "\n", encoding="utf-8")
    csv_table(summary).to_csv(paths[1], index=False)
    paths[2].write_text(latex_table(summary), encoding="utf-8")
    return paths


def tag_summaries(frame: pd.DataFrame, directions: dict[str, dict]) -> dict[str, pd.DataFrame]:
    """The summary over all items (key ``""``) and one per tag that splits the items.

    The per-tag summaries leave out the token statistics (:func:`code_statistics`): the
    report shows those pooled over all of a condition's items only, and their bootstraps
    are the costliest of a summary.
    """
    summaries = {"": summary_stats(frame, directions)}
    quality = frame[~metric_families(frame).isin(code_statistics(directions))]
    for tag in run_tags(frame):
        summaries[tag] = summary_stats(filter_by_tag(quality, tag), directions)
    return summaries


def format_summary(run_dir: str | os.PathLike, summary: pd.DataFrame | None = None) -> str:
    """The summary table of a run as Markdown, with the failure reasons underneath;
    ``summary`` is the run's :func:`summary_stats` where the caller has it already."""
    frame = results_frame(run_dir)
    if frame.empty:
        return "no results recorded yet"
    directions = metric_directions(run_dir)
    if summary is None:
        summary = summary_stats(frame, directions)
    quality = quality_only(summary, directions)
    # A run of token statistics alone prints them (the report gives them a table).
    summary = summary if quality.empty else quality
    lines = [markdown_table(summary)]
    failures = int(frame["failure"].notna().sum())
    if failures:
        reasons = frame.loc[frame["failure"].notna(), "failure"].value_counts()
        lines.append(f"\n{failures} value(s) failed (NaN, excluded from means):")
        lines += [f"  {count} x {reason}" for reason, count in reasons.head(10).items()]
    lines.append(f"\n{aggregation_note(summary)}; best per bitrate in bold")
    return "\n".join(lines)

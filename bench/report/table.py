"""The summary table printed after a run: codec x bitrate x NFE rows, metric means.

Means ignore failed items (NaN), and every cell says how many items failed, so a mean
over fewer items is never mistaken for a mean over all of them. Column headers carry the
metric's direction from the registry: ``↑`` higher is better, ``↓`` lower is better.
"""

from __future__ import annotations

import os

import pandas as pd

from bench.metrics import get_metric
from bench.registry import UnknownNameError
from bench.store import RunStore

CONDITION_COLUMNS = ["codec", "bitrate", "nfe"]


def results_frame(run_dir: str | os.PathLike) -> pd.DataFrame:
    """All result rows of a run as a DataFrame; failed values are NaN."""
    frame = pd.DataFrame(list(RunStore(run_dir).rows()))
    if frame.empty:
        return frame
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return frame


def _header(metric: str) -> str:
    try:
        spec = get_metric(metric.split(".", 1)[0])
    except UnknownNameError:
        return metric  # a metric from a plug-in that is not installed here
    return f"{metric} {'↑' if spec.higher_is_better else '↓'}"


def _cell(mean: float, failed: int) -> str:
    text = "nan" if pd.isna(mean) else f"{mean:.4g}"
    return f"{text} ({failed} failed)" if failed else text


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per condition, one column per metric: mean over items plus failures."""
    frame = frame.assign(
        failed=frame["failure"].notna(), nfe=frame["nfe"].astype("object").fillna("-")
    )
    grouped = frame.groupby([*CONDITION_COLUMNS, "metric"], sort=False)
    stats = grouped.agg(mean=("value", "mean"), failed=("failed", "sum")).reset_index()
    stats["cell"] = [
        _cell(mean, failed) for mean, failed in zip(stats["mean"], stats["failed"], strict=True)
    ]
    table = stats.pivot(index=CONDITION_COLUMNS, columns="metric", values="cell")
    items = frame.groupby(CONDITION_COLUMNS, sort=False)["item"].nunique().rename("items")
    table = table.join(items)
    table = table[["items", *sorted(column for column in table.columns if column != "items")]]
    table = table.rename(
        columns={column: _header(column) for column in table.columns if column != "items"}
    )
    order = {name: position for position, name in enumerate(frame["codec"].unique())}
    table = table.reset_index()
    table = table.sort_values(
        ["codec", "bitrate"],
        key=lambda column: column.map(order) if column.name == "codec" else column,
    )
    return table.rename(columns={"bitrate": "kbps"}).reset_index(drop=True)


def format_summary(run_dir: str | os.PathLike) -> str:
    """The summary table of a run as aligned text, with the failure total underneath."""
    frame = results_frame(run_dir)
    if frame.empty:
        return "no results recorded yet"
    table = summary_table(frame)
    failures = int(frame["failure"].notna().sum())
    lines = [table.to_string(index=False)]
    if failures:
        reasons = frame.loc[frame["failure"].notna(), "failure"].value_counts()
        lines.append(f"\n{failures} value(s) failed (NaN, excluded from means):")
        lines += [f"  {count} x {reason}" for reason, count in reasons.head(10).items()]
    return "\n".join(lines)

"""What a report's curves draw, without drawing: the summary columns each figure reads,
the metrics a figure can plot, and the file names of figures. Kept apart from
``bench.report.plots`` so that a report whose figures are unchanged is built without
importing matplotlib (see ``bench.report.render``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from bench.report.table import coding_columns

# Columns of the long-form summary that each figure reads (one row per label x bitrate x
# nfe x metric); ``nfe`` is NaN for one-shot codecs. Lines are named by the label.
CURVE_COLUMNS = (
    "label",
    "bitrate",
    "nfe",
    "metric",
    "higher_is_better",
    "unit",
    "mean",
    "ci_low",
    "ci_high",
)
RATE_QUALITY_COLUMNS = (*CURVE_COLUMNS, "kbps_actual")
QUALITY_VS_NFE_COLUMNS = (*CURVE_COLUMNS, "rtf_decode")


def rate_quality_metrics(summary: pd.DataFrame) -> list[str]:
    """The quality metrics a rate–quality figure can draw: those with a condition that has a
    mean and an actual bitrate."""
    require_columns(summary, RATE_QUALITY_COLUMNS, "rate_quality_metrics")
    return quality_metrics(summary.dropna(subset=["kbps_actual"]))


def quality_metrics_with_nfe(summary: pd.DataFrame) -> list[str]:
    """The quality metrics scored on an iterative decoder's conditions (with an NFE)."""
    require_columns(summary, QUALITY_VS_NFE_COLUMNS, "quality_metrics_with_nfe")
    return quality_metrics(summary.dropna(subset=["nfe"]))


def require_columns(summary: pd.DataFrame, columns: Sequence[str], caller: str) -> None:
    """Raise ``TypeError`` unless ``summary`` is a DataFrame, ``ValueError`` naming the
    ``columns`` it lacks."""
    if not isinstance(summary, pd.DataFrame):
        raise TypeError(
            f"{caller} expects the summary as a pandas DataFrame, got {type(summary).__name__}"
        )
    missing = [column for column in columns if column not in summary.columns]
    if missing:
        raise ValueError(
            f"{caller}: the summary lacks column(s) {missing}; expected a long-form summary "
            f"with columns {list(columns)}, got {list(summary.columns)}"
        )


def quality_metrics(summary: pd.DataFrame) -> list[str]:
    """Quality metrics, in order of appearance, with at least one finite mean to draw; the
    coding metrics (actual kbps, RTF) are the axes of the figures, not curves on them."""
    scored = summary.dropna(subset=["mean"])
    coding = coding_columns(summary)
    return [metric for metric in scored["metric"].unique() if metric not in coding]


def file_safe(name: str) -> str:
    """``name`` with every character that is not portable in a file name replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)

"""The papers' published numbers, as data, and their pairing with our measurements.

``reports/published/*.csv`` hold the headline tables of the reference papers (EnCodec,
SoundStorm, SampleRNN), transcribed from ``../shared/reference/models.md``: one row per
published number, with the paper and table it came from. A row's ``codec`` and ``metric``
name our registry's codec and metric only where the published system and quantity really
correspond (``notes`` says why, or why not); otherwise they are empty and the row is never
paired. Published figures are the papers' claims under the papers' conditions, never our
measurements, and reports must label them so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PUBLISHED_COLUMNS = [
    "paper",
    "table",
    "model",
    "codec",
    "bitrate_kbps",
    "nfe",
    "dataset",
    "metric",
    "published_metric",
    "value",
    "plus_minus",
    "notes",
]
NUMERIC_COLUMNS = ["bitrate_kbps", "nfe", "value", "plus_minus"]
# Every row is one published number from a named table, so these may never be empty.
REQUIRED_COLUMNS = ["paper", "table", "model", "published_metric", "value"]
BESIDE_COLUMNS = [
    "codec",
    "bitrate",
    "nfe",
    "metric",
    "ours_mean",
    "ours_ci_low",
    "ours_ci_high",
    "ours_n",
    "published_value",
    "published_plus_minus",
    "paper",
    "table",
    "dataset",
    "notes",
]
SUMMARY_COLUMNS = ["codec", "bitrate", "nfe", "metric", "mean", "ci_low", "ci_high", "n"]
# A published metric printed in percent (e.g. "WER (%)") is divided by 100 when set beside
# ours, because our metrics (wer) are fractions; the CSV keeps the value as printed.
PERCENT_MARK = "(%)"
# Next to the sources in a checkout; absent from an installed wheel, which ships no reports.
DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "reports" / "published"


def _empty_published() -> pd.DataFrame:
    frame = pd.DataFrame({column: pd.Series(dtype=object) for column in PUBLISHED_COLUMNS})
    frame[NUMERIC_COLUMNS] = frame[NUMERIC_COLUMNS].astype(float)
    return frame


def _read_table(path: Path) -> pd.DataFrame:
    """One published-table CSV, checked: exact columns, numbers where numbers belong."""
    # Read as text so that empty cells stay "" (not NaN) and numbers can be checked.
    table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    if list(table.columns) != PUBLISHED_COLUMNS:
        raise ValueError(
            f"{path}: expected columns {PUBLISHED_COLUMNS}, found {list(table.columns)}"
        )
    for column in REQUIRED_COLUMNS:
        empty = table.index[table[column].str.strip() == ""]
        if len(empty):
            raise ValueError(
                f"{path}: column {column!r} is empty on data row(s) {[i + 1 for i in empty]}"
            )
    for column in NUMERIC_COLUMNS:
        text = table[column].str.strip()
        numbers = pd.to_numeric(text, errors="coerce")
        not_numbers = text[(text != "") & numbers.isna()]
        if len(not_numbers):
            raise ValueError(
                f"{path}: column {column!r} needs numbers or empty cells, "
                f"found {not_numbers.tolist()}"
            )
        table[column] = numbers.astype(float)
    return table


def load_published(folder: Path | None = None) -> pd.DataFrame:
    """All published-table rows of ``folder`` (default: the repository's reports/published).

    Returns one row per published number with ``PUBLISHED_COLUMNS``; ``bitrate_kbps``
    (kbps), ``nfe``, ``value`` and ``plus_minus`` are floats, NaN where the paper gives
    none. Without the default folder (an installed wheel) the frame is empty. Raises
    ``ValueError`` naming the file when a CSV has other columns or a non-number in a
    numeric column, and ``FileNotFoundError`` for a ``folder`` given but missing.
    """
    if folder is None:
        folder = DEFAULT_FOLDER
        if not folder.is_dir():
            return _empty_published()
    elif not folder.is_dir():
        raise FileNotFoundError(f"no folder of published tables at {folder}")
    tables = [_read_table(path) for path in sorted(folder.glob("*.csv"))]
    if not tables:
        return _empty_published()
    return pd.concat(tables, ignore_index=True)


def _same_nfe(ours: pd.Series, published: pd.Series) -> np.ndarray:
    """A published row without an NFE fits any of ours; one with an NFE needs that NFE."""
    ours_numbers = pd.to_numeric(ours, errors="coerce").to_numpy(dtype=float)
    published_numbers = published.to_numpy(dtype=float)
    return np.isnan(published_numbers) | (ours_numbers == published_numbers)


def published_beside(
    summary: pd.DataFrame,
    published: pd.DataFrame | None = None,
    tolerance_kbps: float = 0.05,
) -> pd.DataFrame:
    """Our summary statistics next to the published numbers measured under matching conditions.

    ``summary`` is our long-form statistics frame with at least ``SUMMARY_COLUMNS``
    (``bitrate`` in nominal kbps, ``nfe`` NaN or None for one-shot decoding). A published
    row pairs with a summary row when codec and metric are equal, the bitrates differ by at
    most ``tolerance_kbps`` and, if the published row has an NFE, the NFEs are equal.
    Published rows without a codec, metric or bitrate never pair. Returns ``BESIDE_COLUMNS``,
    one row per pair (empty when nothing pairs); ``published_*`` columns are the papers'
    figures, not our measurements.
    """
    missing = [column for column in SUMMARY_COLUMNS if column not in summary.columns]
    if missing:
        raise ValueError(
            f"summary needs columns {SUMMARY_COLUMNS}, missing {missing} "
            f"(has {list(summary.columns)})"
        )
    if published is None:
        published = load_published()
    candidates = published[
        (published["codec"] != "") & (published["metric"] != "") & published["bitrate_kbps"].notna()
    ]
    ours = summary[SUMMARY_COLUMNS].rename(
        columns={
            "mean": "ours_mean",
            "ci_low": "ours_ci_low",
            "ci_high": "ours_ci_high",
            "n": "ours_n",
        }
    )
    pairs = ours.merge(
        candidates.rename(columns={"nfe": "published_nfe"}),
        on=["codec", "metric"],
        how="inner",
    )
    bitrate_close = (pairs["bitrate"].astype(float) - pairs["bitrate_kbps"]).abs() <= tolerance_kbps
    pairs = pairs[bitrate_close.to_numpy() & _same_nfe(pairs["nfe"], pairs["published_nfe"])]
    pairs = pairs.assign(published_value=pairs["value"], published_plus_minus=pairs["plus_minus"])
    in_percent = pairs["published_metric"].str.contains(PERCENT_MARK, regex=False)
    pairs.loc[in_percent, ["published_value", "published_plus_minus"]] /= 100
    pairs.loc[in_percent, "notes"] = (
        "published in percent, divided by 100 here; " + pairs.loc[in_percent, "notes"]
    )
    return pairs[BESIDE_COLUMNS].reset_index(drop=True)

"""Summary tables: CI cells, failure counts, direction arrows, best marks, three formats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import DIRECTIONS, frame, rows

from bench.report.stats import summary_stats
from bench.report.table import (
    best_mask,
    csv_table,
    latex_table,
    markdown_table,
    tag_summaries,
    write_tables,
)


@pytest.fixture
def summary() -> pd.DataFrame:
    data = frame(
        rows("opus", 6.0, "pesq_wb", [2.0, 2.2, 2.4]),
        rows("opus", 6.0, "mel_distance", [0.12, 0.13, 0.14]),
        rows("my_codec", 6.0, "pesq_wb", [3.0, 3.1, np.nan], failure="pesq: silent"),
        rows("my_codec", 6.0, "mel_distance", [0.20, 0.21, 0.22]),
        rows("opus", 12.0, "pesq_wb", [3.5, 3.6, 3.7]),
        rows("opus", 12.0, "mel_distance", [0.07, 0.08, 0.09]),
    )
    return summary_stats(data, DIRECTIONS)


def test_best_is_marked_per_bitrate_in_the_better_direction(summary):
    marked = summary[best_mask(summary)]
    best = set(zip(marked["codec"], marked["bitrate"], marked["metric"], strict=True))
    # At 6 kbps my_codec has the higher PESQ and opus the lower mel distance; 12 kbps has
    # one condition only, which is best of nothing.
    assert best == {("my_codec", 6.0, "pesq_wb"), ("opus", 6.0, "mel_distance")}


def test_markdown_cells_hold_mean_interval_failures_and_arrows(summary):
    text = markdown_table(summary)
    header = text.splitlines()[0]
    assert "pesq_wb ↑" in header and "mel_distance ↓" in header
    assert "kbps actual" in header and "RTF enc" in header and "RTF dec" in header
    assert "NFE" not in header, "no codec has an NFE axis"
    assert "**3.05 [3.00, 3.10] (1 failed)**" in text
    assert "**0.130 [0.120, 0.140]**" in text
    assert "3.60 [3.50, 3.70]" in text and "**3.60" not in text


def test_latex_is_booktabs_and_escaped(summary):
    latex = latex_table(summary)
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert latex.count(rule) == 1
    assert r"my\_codec" in latex and "my_codec" not in latex
    assert r"pesq\_wb $\uparrow$" in latex and r"mel\_distance $\downarrow$" in latex
    assert r"\textbf{3.05 [3.00, 3.10] (1 failed)}" in latex


def test_csv_has_one_numeric_row_per_condition(summary, tmp_path):
    paths = write_tables(summary, tmp_path, "summary")
    assert [path.name for path in paths] == ["summary.md", "summary.csv", "summary.tex"]
    table = pd.read_csv(paths[1])
    assert len(table) == 3
    row = table[table["codec"] == "my_codec"].iloc[0]
    assert row["kbps_nominal"] == 6.0 and row["items"] == 3
    assert row["pesq_wb_mean"] == pytest.approx(3.05)
    assert row["pesq_wb_n"] == 2 and row["pesq_wb_failed"] == 1 and row["pesq_wb_best"]
    assert row["kbps_actual"] == pytest.approx(6.06)
    assert csv_table(summary).shape == table.shape


def test_tables_split_by_tag():
    speech = rows("opus", 6.0, "pesq_wb", [3.0, 3.2], tags=("speech",))
    music = [
        {**row, "item": f"music{index}", "tags": ["music"]}
        for index, row in enumerate(rows("opus", 6.0, "pesq_wb", [1.0, 1.2]))
    ]
    summaries = tag_summaries(frame(speech, music), DIRECTIONS)
    assert set(summaries) == {"", "music", "speech"}
    assert summaries[""].loc[0, "mean"] == pytest.approx(2.1)
    assert summaries["music"].loc[0, "mean"] == pytest.approx(1.1)
    assert summaries["speech"].loc[0, "n"] == 2

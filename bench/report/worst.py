"""The worst items of each condition: where a codec fails, and what to listen to first.

For a full-reference metric the value of an item is itself its drop against the
reference: a perfect copy scores the metric's best value (PESQ 4.64, a mel distance of
0), so the items farthest from it are those the codec damaged most. No-reference metrics
(DNSMOS) are not used: their drop would need the reference's own score, which a run does
not measure.

An item's badness in a condition is the mean, over the headline metrics that scored it,
of its place among the condition's items scored by that metric, from 1 for the worst to
1/n for the best of n. Seeds are averaged first, as in every
table (:func:`bench.report.stats.item_means`). ``bench run`` keeps the decoded audio of
the :data:`WORST_KEPT` worst items of every condition in the run's listening folder, and
the report plays them beside their spectrograms.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report.stats import CONDITION_COLUMNS, ConditionKey, item_means

# Full-reference metrics in order of preference as the headline of the worst-item lists:
# perceptual quality first, then the spectral and intelligibility measures.
HEADLINE_PREFERENCE = (
    "visqol_audio",
    "pesq_wb",
    "visqol_speech",
    "mel_distance",
    "stoi",
    "si_sdr",
    "mel_distance_dac",
    "pesq_nb",
    "estoi",
)
HEADLINE_COUNT = 3
# Items listed per condition, and of those, the worst ones whose audio the run keeps.
WORST_LISTED = 3
WORST_KEPT = 2
WORST_COLUMNS = [*CONDITION_COLUMNS, "rank", "item", "badness"]


def headline_metrics(frame: pd.DataFrame) -> list[str]:
    """Up to :data:`HEADLINE_COUNT` metrics of :data:`HEADLINE_PREFERENCE` that scored an
    item in ``frame`` (the rows of :func:`bench.report.stats.results_frame`)."""
    if frame.empty:
        return []
    scored = set(frame.loc[np.isfinite(frame["value"]), "metric"])
    return [name for name in HEADLINE_PREFERENCE if name in scored][:HEADLINE_COUNT]


def worst_items(
    frame: pd.DataFrame, directions: dict[str, dict], per_condition: int = WORST_LISTED
) -> pd.DataFrame:
    """The ``per_condition`` worst items of every condition, worst first.

    Columns: the condition's, ``rank`` (1 = worst), ``item``, ``badness`` (see the module
    docstring; 1 = worst on every headline metric) and one per headline metric holding the
    item's value (NaN where it was not scored). ``directions`` is
    :func:`bench.report.stats.metric_directions`. Empty when no headline metric scored.
    """
    metrics = headline_metrics(frame)
    if not metrics or per_condition < 1:
        return pd.DataFrame(columns=[*WORST_COLUMNS, *metrics])
    per_item = item_means(frame[frame["metric"].isin(metrics)])
    values = per_item.pivot_table(
        index=[*CONDITION_COLUMNS, "item"], columns="metric", values="value", dropna=False
    ).reindex(columns=metrics)
    groups = values.groupby(level=list(range(len(CONDITION_COLUMNS))), dropna=False, sort=False)
    ranks = []
    for metric in metrics:
        higher_is_better = directions.get(metric, {}).get("higher_is_better", True)
        # Worst first: the lowest value of a higher-is-better metric ranks 1.
        ranked = groups[metric].rank(ascending=higher_is_better, method="average")
        scored = groups[metric].transform("count")
        ranks.append((scored - ranked + 1) / scored)
    badness = pd.concat(ranks, axis=1).mean(axis=1, skipna=True)
    table = values.assign(badness=badness).dropna(subset=["badness"]).reset_index()
    table = table.sort_values(
        [*CONDITION_COLUMNS, "badness", "item"],
        ascending=[True] * len(CONDITION_COLUMNS) + [False, True],
        kind="stable",
    )
    # Codecs in the order the run named them (as the summary table lists them), then
    # ascending bitrate and NFE.
    labels = list(dict.fromkeys([*frame.attrs.get("codecs", []), *frame["label"].unique()]))
    position = {label: index for index, label in enumerate(labels)}
    table = table.sort_values(
        ["label", "bitrate", "nfe"],
        key=lambda column: column.map(position) if column.name == "label" else column,
        kind="stable",
        na_position="first",
    )
    table["rank"] = table.groupby(CONDITION_COLUMNS, dropna=False, sort=False).cumcount() + 1
    table = table[table["rank"] <= per_condition]
    table = table[[*WORST_COLUMNS, *metrics]].reset_index(drop=True)
    table.columns.name = None  # the pivot's "metric" axis name
    return table


def condition_of(row: pd.Series) -> ConditionKey:
    """The condition of a row of :func:`worst_items`."""
    nfe = None if pd.isna(row["nfe"]) else int(row["nfe"])
    return ConditionKey(str(row["label"]), float(row["bitrate"]), nfe)

"""The token table: per condition of a codec with codes, its rates side by side (nominal,
actual, the entropy bound of its codes and the LM-coded rate) and its codebook statistics
(usage, entropy, perplexity), from a run's summary (:func:`bench.report.stats.summary_stats`).

API, for the HTML report and scripts:

- :func:`token_table` ``(summary, codecs=None) -> DataFrame``: one row per condition (label,
  bitrate, NFE) with a scored token metric; columns in :data:`TOKEN_COLUMNS`. ``codecs`` is
  the run's ``config.json["codecs"]`` (label -> the codec's recorded description), needed
  for the LM-coded column.
- :func:`run_token_table` ``(run_dir) -> DataFrame``: the same, read from a run directory.
- :func:`write_token_tables` ``(table, out_dir) -> [Path]``: ``tokens.md``, ``tokens.csv``
  and ``tokens.tex``.
- :func:`token_table_html` ``(table) -> str``: an HTML ``<table class="tokens">`` fragment
  (empty string for an empty table).

The values are the summary's: a condition's pooled statistic of its items' codes (see
:mod:`bench.metrics.tokens`), not a mean over items. ``kbps_lm`` is the rate of the
condition's codes range-coded under the codec's entropy-coding LM (EnCodec's
``entropy_coding=true``): a condition's own actual kbps if its label is entropy-coded; for a
plain label, the actual kbps of the entropy-coded label of the same model at the same
bitrate and NFE, where the run holds one (``--codec encodec:1.5 --codec
lm=encodec:1.5:entropy_coding=true``); NaN otherwise. Two labels are the same model when
their recorded descriptions agree but for ``entropy_coding`` and the LM's part of the
checkpoint hash (after ``+``), so the codes, and so the token statistics, are the same.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report.stats import metric_directions, results_frame, summary_stats
from bench.report.table import latex_escape
from bench.store import RunStore

TOKEN_FAMILIES = ("codebook_usage", "token_entropy", "kbps_entropy_bound")
TOKEN_COLUMNS = [
    "label",
    "codec",
    "bitrate",
    "nfe",
    "entropy_coded",
    "items",
    "kbps_nominal",
    "kbps_actual",
    "kbps_entropy_bound",
    "kbps_lm",
    "usage",
    "entropy_mean",
    "perplexity",
    "usage_by_level",
    "entropy_by_level",
]
# Column -> the summary metric it shows.
_METRICS = {
    "kbps_entropy_bound": "kbps_entropy_bound",
    "usage": "codebook_usage.overall",
    "entropy_mean": "token_entropy.mean",
    "perplexity": "token_entropy.perplexity",
}
_BY_LEVEL = {"usage_by_level": "codebook_usage", "entropy_by_level": "token_entropy"}
# Headers of the Markdown, LaTeX and HTML tables.
_HEADERS = {
    "label": "codec",
    "bitrate": "kbps",
    "nfe": "NFE",
    "entropy_coded": "LM-coded",
    "items": "items",
    "kbps_actual": "kbps actual",
    "kbps_entropy_bound": "kbps entropy bound",
    "kbps_lm": "kbps LM",
    "usage": "usage",
    "entropy_mean": "entropy (bits/level)",
    "perplexity": "perplexity",
    "usage_by_level": "usage by level",
    "entropy_by_level": "entropy by level (bits)",
}
TABLE_STEM = "tokens"


def token_table(summary: pd.DataFrame, codecs: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per condition with a scored token metric, columns :data:`TOKEN_COLUMNS`.

    ``kbps_nominal`` is the condition's bitrate; ``kbps_actual`` the summary's measured
    rate; ``usage_by_level`` and ``entropy_by_level`` are tuples ordered by level.
    ``entropy_coded`` is ``None`` and ``kbps_lm`` NaN where ``codecs`` is not given.
    """
    conditions = ["label", "codec", "bitrate", "nfe"]
    if summary.empty:
        return pd.DataFrame(columns=TOKEN_COLUMNS)
    families = summary["metric"].str.split(".", n=1).str[0]
    tokens = summary[families.isin(TOKEN_FAMILIES)]
    scored = tokens[tokens["n"] > 0]
    records = []
    for condition, group in scored.groupby(conditions, dropna=False, sort=False):
        means = dict(zip(group["metric"], group["mean"], strict=True))
        label, codec, bitrate, nfe = condition
        description = (codecs or {}).get(label)
        record = {
            "label": label,
            "codec": codec,
            "bitrate": bitrate,
            "nfe": nfe,
            "entropy_coded": None if codecs is None else _entropy_coded(description),
            "items": int((group["n"] + group["failed"]).max()),
            "kbps_nominal": bitrate,
            "kbps_actual": group["kbps_actual"].iloc[0] if "kbps_actual" in group else np.nan,
        }
        record.update({column: means.get(metric, np.nan) for column, metric in _METRICS.items()})
        record.update({column: _by_level(means, family) for column, family in _BY_LEVEL.items()})
        records.append(record)
    table = pd.DataFrame(records, columns=[c for c in TOKEN_COLUMNS if c != "kbps_lm"])
    return table.assign(kbps_lm=_lm_kbps(table, summary, codecs))[TOKEN_COLUMNS]


def run_token_table(run_dir: str | os.PathLike) -> pd.DataFrame:
    """:func:`token_table` of the run in ``run_dir``."""
    summary = summary_stats(results_frame(run_dir), metric_directions(run_dir))
    return token_table(summary, RunStore(run_dir).read_config().get("codecs", {}))


def _by_level(means: dict[str, float], family: str) -> tuple[float, ...]:
    """The family's per-level values ``family.L0``, ``family.L1``, ... in level order."""
    levels = {}
    for metric, mean in means.items():
        head, _, key = metric.partition(".")
        if head == family and key[:1] == "L" and key[1:].isdigit():
            levels[int(key[1:])] = float(mean)
    return tuple(levels[level] for level in sorted(levels))


def _entropy_coded(description: dict | None) -> bool | None:
    if description is None or "entropy_coding" not in description:
        return None if description is None else False
    return bool(description["entropy_coding"])


def _model_identity(description: dict) -> str:
    """What makes two labels' codes the same: the description without the entropy coding
    and without the LM's part of the checkpoint hash."""
    identity = {key: value for key, value in description.items() if key != "entropy_coding"}
    if isinstance(identity.get("checkpoint_hash"), str):
        identity["checkpoint_hash"] = identity["checkpoint_hash"].split("+", 1)[0]
    return repr(sorted(identity.items()))


def _lm_kbps(
    table: pd.DataFrame, summary: pd.DataFrame, codecs: dict[str, dict] | None
) -> list[float]:
    """Each row's LM-coded kbps (see the module docstring)."""
    if codecs is None or table.empty:
        return [np.nan] * len(table)
    coded = {
        label: _model_identity(description)
        for label, description in codecs.items()
        if _entropy_coded(description)
    }
    actual = {
        (label, float(bitrate), None if pd.isna(nfe) else float(nfe)): kbps
        for label, bitrate, nfe, kbps in summary.drop_duplicates(["label", "bitrate", "nfe"])[
            ["label", "bitrate", "nfe", "kbps_actual"]
        ].itertuples(index=False)
    }
    values = []
    for row in table.itertuples(index=False):
        nfe = None if pd.isna(row.nfe) else float(row.nfe)
        if row.label in coded:
            values.append(row.kbps_actual)
            continue
        identity = _model_identity(codecs[row.label]) if row.label in codecs else None
        twins = [label for label, other in coded.items() if other == identity]
        found = [
            actual[key] for twin in twins if (key := (twin, float(row.bitrate), nfe)) in actual
        ]
        values.append(found[0] if found else np.nan)
    return values


def _display(table: pd.DataFrame, escape) -> pd.DataFrame:
    """The table as strings for Markdown, LaTeX and HTML, with headers from :data:`_HEADERS`."""

    def number(decimals: int):
        return lambda value: "nan" if pd.isna(value) else f"{value:.{decimals}f}"

    def levels(values: tuple[float, ...]) -> str:
        return " / ".join(f"{value:.3g}" for value in values)

    shown = pd.DataFrame(
        {
            "label": table["label"].map(lambda text: escape(str(text))),
            "bitrate": table["bitrate"].map("{:g}".format),
            "nfe": table["nfe"].map(lambda nfe: "-" if pd.isna(nfe) else f"{nfe:g}"),
            "entropy_coded": table["entropy_coded"].map(
                lambda coded: "?" if coded is None else "yes" if coded else "no"
            ),
            "items": table["items"].map(str),
            "kbps_actual": table["kbps_actual"].map(number(2)),
            "kbps_entropy_bound": table["kbps_entropy_bound"].map(number(2)),
            "kbps_lm": table["kbps_lm"].map(number(2)),
            "usage": table["usage"].map(number(3)),
            "entropy_mean": table["entropy_mean"].map(number(2)),
            "perplexity": table["perplexity"].map(number(1)),
            "usage_by_level": table["usage_by_level"].map(levels),
            "entropy_by_level": table["entropy_by_level"].map(levels),
        }
    )
    if table["nfe"].isna().all():
        shown = shown.drop(columns="nfe")
    return shown.rename(columns=lambda column: escape(_HEADERS[column]))


def token_table_markdown(table: pd.DataFrame) -> str:
    return _display(table, str).to_markdown(index=False, disable_numparse=True)


def token_table_latex(table: pd.DataFrame) -> str:
    """A booktabs ``tabular`` of the table."""
    shown = _display(table, latex_escape)
    alignment = "l" + "r" * (len(shown.columns) - 1)
    return shown.style.hide(axis="index").to_latex(column_format=alignment, hrules=True)


def token_table_html(table: pd.DataFrame) -> str:
    """An HTML ``<table class="tokens">`` fragment, cells escaped; ``""`` for no rows."""
    if table.empty:
        return ""
    return _display(table, html.escape).to_html(
        index=False, escape=False, classes="tokens", border=0
    )


def token_table_csv(table: pd.DataFrame) -> pd.DataFrame:
    """The table with full-precision numbers; per-level values space-separated."""
    return table.assign(
        **{
            column: table[column].map(lambda values: " ".join(repr(value) for value in values))
            for column in _BY_LEVEL
        }
    )


def write_token_tables(table: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``tokens.md``, ``tokens.csv`` and ``tokens.tex`` into ``out_dir``; the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{TABLE_STEM}.{extension}" for extension in ("md", "csv", "tex")]
    paths[0].write_text(token_table_markdown(table) + "\n", encoding="utf-8")
    token_table_csv(table).to_csv(paths[1], index=False)
    paths[2].write_text(token_table_latex(table), encoding="utf-8")
    return paths

"""A study's tables in the papers' layout (EnCodec Table 2 and Table A.4: one row per variant,
a column per metric), with our means and 95 % intervals, the paired test of each variant
against the study's baseline, and the published figures beside ours, labelled as such.

Items are the unit, as in :mod:`bench.report.stats`: an item's value is the mean over the
study's seeds (the sweep's rows of ``VARIANT-sSEED`` are relabelled to ``VARIANT``), the
interval is the BCa bootstrap over items, and the paired test is Wilcoxon's signed-rank test
on the per-item differences against the baseline. With several seeds each variant also gets
its per-seed means and a t interval over seeds (n - 1 degrees of freedom), which says how
much of a difference a retraining alone can make.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from bench.ablate.run import EVALUATION_DIR, STUDY_FILE
from bench.ablate.study import Study
from bench.report.published import load_published
from bench.report.stats import (
    CONFIDENCE,
    ConditionKey,
    metric_directions,
    paired_comparison,
    results_frame,
    summary_stats,
)
from bench.report.table import latex_escape

TABLE_STEM = "ablation"


def study_frame(study: Study, evaluation_dir: str | Path) -> pd.DataFrame:
    """The evaluation's rows with ``label`` the variant and ``training_seed`` the seed."""
    frame = results_frame(evaluation_dir)
    labels = study.labels()
    unknown = sorted(set(frame["label"]) - set(labels))
    if unknown:
        raise ValueError(f"{evaluation_dir}: rows of conditions not in the study: {unknown}")
    frame["training_seed"] = frame["label"].map(lambda label: labels[label][1])
    frame["label"] = frame["label"].map(lambda label: labels[label][0])
    frame.attrs["codecs"] = list(study.variants)
    return frame


def _seed_interval(seed_means: np.ndarray) -> tuple[float, float]:
    if seed_means.size < 2:
        return np.nan, np.nan
    half = scipy_stats.t.ppf((1 + CONFIDENCE) / 2, seed_means.size - 1) * scipy_stats.sem(
        seed_means
    )
    return float(seed_means.mean() - half), float(seed_means.mean() + half)


def study_pairs(study: Study, evaluation_dir: str | Path) -> pd.DataFrame:
    """The paired tests of a study, one row per bitrate × pair × metric: every variant
    against the baseline, then the study's ``comparisons`` (:func:`paired_comparison`'s
    columns, with ``bitrate``, ``candidate_variant`` and ``reference_variant``)."""
    frame = study_frame(study, evaluation_dir)
    directions = metric_directions(evaluation_dir)
    pairs = [(variant, study.baseline) for variant in study.variants if variant != study.baseline]
    pairs += [pair for pair in study.comparisons if pair not in pairs]
    tables = [
        paired_comparison(
            frame, ConditionKey(reference, bitrate), ConditionKey(candidate, bitrate), directions
        ).assign(bitrate=bitrate, candidate_variant=candidate, reference_variant=reference)
        for bitrate in sorted(frame["bitrate"].unique())
        for candidate, reference in pairs
    ]
    return pd.concat(tables, ignore_index=True)


def study_statistics(study: Study, evaluation_dir: str | Path) -> pd.DataFrame:
    """One row per variant × bitrate × metric: mean and interval over items, per-seed means
    and their interval, the published figure, and the paired test against the baseline."""
    frame = study_frame(study, evaluation_dir)
    summary = summary_stats(frame, metric_directions(evaluation_dir))
    published = _published(study)
    per_seed = (
        frame.groupby(["label", "bitrate", "metric", "training_seed"])["value"].mean().reset_index()
    )
    against_baseline = study_pairs(study, evaluation_dir)
    against_baseline = against_baseline[against_baseline["reference_variant"] == study.baseline]
    rows = []
    for bitrate in sorted(summary["bitrate"].unique()):
        at_bitrate = against_baseline[np.isclose(against_baseline["bitrate"], bitrate)]
        comparisons = {
            variant: tests.set_index("metric")
            for variant, tests in at_bitrate.groupby("candidate_variant", sort=False)
        }
        for _, row in summary[np.isclose(summary["bitrate"], bitrate)].iterrows():
            variant, metric = row["label"], row["metric"]
            seeds = per_seed[
                (per_seed["label"] == variant)
                & np.isclose(per_seed["bitrate"], bitrate)
                & (per_seed["metric"] == metric)
            ]
            seed_means = seeds["value"].to_numpy(dtype=float)
            low, high = _seed_interval(seed_means)
            entry = {
                "study": study.name,
                "variant": variant,
                "bitrate": bitrate,
                "kbps_actual": row["kbps_actual"],
                "metric": metric,
                "higher_is_better": row["higher_is_better"],
                "mean": row["mean"],
                "ci_low": row["ci_low"],
                "ci_high": row["ci_high"],
                "items": row["n"],
                "failed": row["failed"],
                "seed_means": json.dumps(
                    dict(
                        zip(
                            seeds["training_seed"].astype(int).astype(str),
                            seed_means.round(6),
                            strict=True,
                        )
                    )
                ),
                "seed_ci_low": low,
                "seed_ci_high": high,
                "published": published.get((variant, metric), np.nan),
            }
            comparison = comparisons.get(variant)
            if comparison is not None and metric in comparison.index:
                test = comparison.loc[metric]
                entry.update(
                    difference=test["mean_difference"],
                    difference_ci_low=test["ci_low"],
                    difference_ci_high=test["ci_high"],
                    p_value=test["p_value"],
                    verdict=test["verdict"],
                    test=test["test"],
                )
            rows.append(entry)
    return pd.DataFrame(rows)


def _published(study: Study) -> dict[tuple[str, str], float]:
    """``{(variant, metric): published value}`` from the study's published table."""
    if not study.published_table or not study.published_models:
        return {}
    table = load_published()
    table = table[table["table"] == study.published_table]
    values = {}
    for variant, model in study.published_models.items():
        rows = table[(table["model"] == model) & table["metric"].notna()]
        if rows.empty:
            raise ValueError(
                f"study {study.name}: no published row of {study.published_table} for "
                f"{model!r} (variant {variant!r})"
            )
        for _, row in rows.iterrows():
            values[(variant, row["metric"])] = float(row["value"])
    return values


def _number(value: float, decimals: int) -> str:
    return "–" if pd.isna(value) else f"{value:.{decimals}f}"


def _with_interval(mean: float, low: float, high: float, decimals: int) -> str:
    if pd.isna(low):
        return _number(mean, decimals)
    return f"{mean:.{decimals}f} [{low:.{decimals}f}, {high:.{decimals}f}]"


DECIMALS = {"visqol_audio": 2, "visqol_speech": 2, "si_sdr": 2, "mel_distance": 3}


def display_tables(statistics: pd.DataFrame, baseline: str) -> dict[float, pd.DataFrame]:
    """Per bitrate, the paper's layout: a row per variant, per metric our mean [95 % CI over
    items], the published figure, and the paired difference against the baseline."""
    tables = {}
    for bitrate, group in statistics.groupby("bitrate", sort=True):
        rows = []
        for variant, cells in group.groupby("variant", sort=False):
            row = {"variant": f"{variant} (baseline)" if variant == baseline else variant}
            row["kbps actual"] = _number(cells["kbps_actual"].iloc[0], 2)
            for _, cell in cells.iterrows():
                metric = cell["metric"]
                decimals = DECIMALS.get(metric, 3)
                arrow = "↑" if cell["higher_is_better"] else "↓"
                row[f"{metric} {arrow}"] = _with_interval(
                    cell["mean"], cell["ci_low"], cell["ci_high"], decimals
                )
                if not pd.isna(cell["seed_ci_low"]):
                    row[f"{metric} over seeds"] = _with_interval(
                        cell["mean"], cell["seed_ci_low"], cell["seed_ci_high"], decimals
                    )
                if statistics["published"].notna().any():
                    row[f"{metric} published"] = _number(cell["published"], 2)
                if variant != baseline:
                    difference = _with_interval(
                        cell["difference"],
                        cell["difference_ci_low"],
                        cell["difference_ci_high"],
                        decimals,
                    )
                    row[f"{metric} Δ vs baseline"] = (
                        f"{difference}, p = {_number(cell['p_value'], 3)}"
                    )
                else:
                    row[f"{metric} Δ vs baseline"] = ""
            rows.append(row)
        tables[bitrate] = pd.DataFrame(rows)
    return tables


VERDICT_WORDS = {
    "candidate better": "significantly better",
    "candidate worse": "significantly worse",
    "no significant difference": "not significantly different",
}


def significance_text(pairs: pd.DataFrame) -> str:
    """In words: for each pair, on which metrics the candidate is significantly better or
    worse than its reference and on which not (Wilcoxon, two-sided, 5 %)."""
    lines = []
    for (bitrate, candidate, reference), tests in pairs.groupby(
        ["bitrate", "candidate_variant", "reference_variant"], sort=False
    ):
        said = []
        for verdict, words in VERDICT_WORDS.items():
            metrics = tests[tests["verdict"] == verdict]
            if metrics.empty:
                continue
            details = ", ".join(
                f"{row['metric']} (Δ {row['mean_difference']:+.3g}, p = {row['p_value']:.3g})"
                if not pd.isna(row["p_value"])
                else f"{row['metric']} (all differences zero)"
                for _, row in metrics.iterrows()
            )
            said.append(f"{words} on {details}")
        lines.append(
            f"- At {bitrate:g} kbps, **{candidate}** against {reference}: " + "; ".join(said) + "."
        )
    return "\n".join(lines)


def write_tables(
    study: Study, study_dir: str | Path, out_dir: str | Path | None = None
) -> list[Path]:
    """Write ``ablation.md``, ``.csv`` and ``.tex``, and every paired test in
    ``ablation_pairs.csv``, for the study run in ``study_dir`` (into ``out_dir``, default the
    study folder)."""
    study_dir = Path(study_dir)
    out_dir = Path(out_dir or study_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = json.loads((study_dir / STUDY_FILE).read_text(encoding="utf-8"))
    statistics = study_statistics(study, study_dir / EVALUATION_DIR)
    pairs = study_pairs(study, study_dir / EVALUATION_DIR)
    tables = display_tables(statistics, study.baseline)
    paths = [out_dir / f"{TABLE_STEM}.{extension}" for extension in ("md", "csv", "tex")] + [
        out_dir / f"{TABLE_STEM}_pairs.csv"
    ]
    paths[0].write_text(_markdown(study, record, statistics, pairs, tables), encoding="utf-8")
    statistics.to_csv(paths[1], index=False)
    paths[2].write_text(_latex(study, tables), encoding="utf-8")
    pairs.to_csv(paths[3], index=False)
    return paths


def _markdown(
    study: Study, record: dict, statistics: pd.DataFrame, pairs: pd.DataFrame, tables: dict
) -> str:
    items = int(statistics["items"].max()) if not statistics.empty else 0
    seeds = ", ".join(map(str, study.seeds))
    parts = [
        f"# Ablation study: {study.name}\n",
        f"{study.description}\n",
        f"Cells are our mean [95 % BCa bootstrap interval over {items} held-out items; each "
        f"item's value is the mean over the training seeds ({seeds})]. "
        "'over seeds' is a t interval over the per-seed means. 'Δ vs baseline' is the mean "
        "per-item difference against the baseline with its bootstrap interval and the "
        "two-sided Wilcoxon signed-rank p-value on the same items. "
        + (
            f"'published' columns are **published figures** from {_paper(study)}, "
            "not our measurements: other data, model size and training budget.\n"
            if study.published_table
            else "\n"
        ),
    ]
    for bitrate, table in tables.items():
        parts.append(f"## {bitrate:g} kbps\n")
        parts.append(table.to_markdown(index=False, disable_numparse=True) + "\n")
    parts.append("## Which differences are significant\n")
    parts.append(significance_text(pairs) + "\n")
    parts.append(_provenance(record))
    return "\n".join(parts)


def _paper(study: Study) -> str:
    return f"Défossez et al. 2022 (EnCodec), {study.published_table}"


def _provenance(record: dict) -> str:
    base = record["study"]["base"]
    last_run = record["runs"][-1]
    trained = record.get("trained", {})
    lines = [
        "## How it was made\n",
        f"- Study file: `{record['study']['source']}`; training data "
        f"`{record['study']['training_data']}`.",
        f"- Budget per variant and seed: {last_run['steps']} steps of batch "
        f"{base.get('batch_size')} × {base.get('segment_seconds')} s; seeds "
        f"{last_run['seeds']}.",
    ]
    walls = [model["wall_seconds"] for model in trained.values()]
    if walls:
        lines.append(
            f"- Training wall time: {sum(walls) / 60:.1f} min in all "
            f"({min(walls) / 60:.1f}–{max(walls) / 60:.1f} min per model, one thread each)."
        )
        lines.append("")
        lines.append("| model | steps | wall (min) | sha256 |")
        lines.append("|---|---|---|---|")
        for label, model in trained.items():
            lines.append(
                f"| {label} | {model['steps']} | {model['wall_seconds'] / 60:.1f} | "
                f"`{model['sha256'][:16]}` |"
            )
        lines.append("")
    for run in record.get("runs", []):
        git = run.get("git", {})
        lines.append(
            f"- `{run['command']}` at {run['started']} (executor {run['executor']}); git "
            f"`{git.get('commit')}`{' with uncommitted changes' if git.get('dirty') else ''}; "
            f"torch {run.get('versions', {}).get('torch')}."
        )
    return "\n".join(lines) + "\n"


def _latex(study: Study, tables: dict) -> str:
    parts = []
    for bitrate, table in tables.items():
        escaped = table.map(latex_escape).rename(columns=latex_escape)
        escaped = escaped.rename(
            columns=lambda name: (
                name.replace("↑", r"$\uparrow$")
                .replace("↓", r"$\downarrow$")
                .replace("Δ", r"$\Delta$")
            )
        )
        styler = escaped.style.hide(axis="index")
        parts.append(
            styler.to_latex(
                column_format="l" + "r" * (len(table.columns) - 1),
                hrules=True,
                caption=latex_escape(f"Ablation study {study.name} at {bitrate:g} kbps"),
            )
        )
    return "\n".join(parts)

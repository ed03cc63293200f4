"""``bench report RUN_DIR``: rebuild every report artefact from the run directory alone.

Reads ``config.json``, ``results.jsonl`` and the ``listening/`` audio the run kept, and
writes ``RUN_DIR/report/``: tables (Markdown, CSV, LaTeX; overall and per content tag),
the BD-rate of every codec against an anchor (``bench.report.bdrate``), token statistics,
the worst items of every condition, ``summary.json`` (what ``bench compare`` reads), our
numbers beside the papers' published ones, plots (PNG; SVG on request), and
``index.html``.

The page opens on the headline (the summary table, the rate–quality curves of every metric
as small multiples, the BD-rate table), then token statistics and the worst items, then
the per-tag tables, the single-metric figures, the listening section and, last and folded,
the provenance. The folder is built under a temporary name and swapped in whole, so a
report is never half old, half new. What did not change since the folder's previous
report is taken from it after a check (``bench.report.render`` for figures,
:func:`derived_tables` for the statistics), so a rebuild redraws only what changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import scipy

from bench import __version__ as bench_version
from bench.data.item import listening_selection
from bench.report.bdrate import BD_RATE_NOTE, bd_rate_html, bd_rate_table, write_bd_rate_tables
from bench.report.compare import SUMMARY_FILE, run_summary, write_summary
from bench.report.curves import file_safe, quality_metrics_with_nfe, rate_quality_metrics
from bench.report.html import (
    Figure,
    ListeningExample,
    ReportContent,
    ReportTable,
    write_html_report,
)
from bench.report.published import published_beside
from bench.report.render import FigureJob, render_figures
from bench.report.stats import ConditionKey, metric_directions, results_frame
from bench.report.table import (
    aggregation_note,
    code_statistics,
    html_table,
    metric_families,
    quality_only,
    tag_summaries,
    write_tables,
)
from bench.report.tokens import token_table, token_table_html, write_token_tables
from bench.report.worst import WORST_KEPT, condition_of, headline_metrics, worst_items
from bench.store import CONFIG_FILE, LISTENING_DIR, RESULTS_FILE, RunStore, condition_slug

REPORT_DIR = "report"
# Spectrogram overviews show each codec at its lowest bitrate, where artefacts are audible.
OVERVIEW_CONDITIONS = 6
# The statistics of the previous build, reused while the run's rows are unchanged.
DERIVED_FILE = "derived.json"
DERIVED_VERSION = 1


def build_report(
    run_dir: str | os.PathLike,
    report_dir: str | os.PathLike | None = None,
    *,
    anchor: str | None = None,
    vector: bool = False,
    workers: int | None = None,
) -> Path:
    """Write the report of ``run_dir`` into ``report_dir`` (default ``RUN_DIR/report``).

    ``anchor`` is the label the BD-rate table compares against (default: opus where the
    run has it, else its first label); ``vector`` adds an SVG of every plot; ``workers``
    is the number of processes that draw figures (default: one per core). Raises
    ``ValueError`` for an anchor that is not a label of the run.
    """
    run_dir = Path(run_dir)
    target = Path(report_dir) if report_dir is not None else run_dir / REPORT_DIR
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        previous = target if target.is_dir() else None
        _write_report(run_dir, staging, previous, anchor, vector, workers)
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _swap_in(staging: Path, target: Path) -> None:
    if target.exists():
        retired = target.with_name(f".{target.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(target)
    target.chmod(0o755)  # mkdtemp makes the folder private; a report is for sharing


@dataclass
class DerivedTables:
    """The statistics a report shows: summaries by tag (``""``: all items) and BD-rates."""

    summaries: dict[str, pd.DataFrame]
    bd_rate: pd.DataFrame | None


def derived_tables(
    run_dir: Path,
    anchor: str | None = None,
    previous: Path | None = None,
    frame: pd.DataFrame | None = None,
) -> DerivedTables:
    """The summaries (with their bootstrap intervals) and BD-rate table of a run.

    Taken from ``previous/derived.json`` when it was computed from the same
    ``results.jsonl`` and ``config.json`` bytes, anchor and versions (its key says so),
    else computed from ``frame`` (:func:`bench.report.stats.results_frame`, read when not
    given). The bootstraps behind them are most of a report's arithmetic.
    """
    run_dir = Path(run_dir)
    key = _derived_key(run_dir, anchor)
    cached = _read_derived(Path(previous), key) if previous is not None else None
    if cached is not None:
        return cached
    frame = results_frame(run_dir) if frame is None else frame
    if frame.empty:
        return DerivedTables({}, None)
    directions = metric_directions(run_dir)
    quality = frame[~metric_families(frame).isin(code_statistics(directions))]
    return DerivedTables(
        tag_summaries(frame, directions), bd_rate_table(quality, directions, anchor)
    )


def _derived_key(run_dir: Path, anchor: str | None) -> str:
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, RESULTS_FILE):
        digest.update(hashlib.sha256((run_dir / name).read_bytes()).digest())
    digest.update(
        repr((DERIVED_VERSION, bench_version, pd.__version__, scipy.__version__, anchor)).encode()
    )
    return digest.hexdigest()


def _read_derived(previous: Path, key: str) -> DerivedTables | None:
    """The tables of ``previous/derived.json`` if its key is ``key`` and its tables still
    hash to the digest recorded beside them; ``None`` otherwise."""
    try:
        document = json.loads((previous / DERIVED_FILE).read_text())
        tables = document["tables"]
        if document["key"] != key or document["sha256"] != _tables_digest(tables):
            return None
        return _parsed(tables)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, damaged or of another version: computed again


def _write_derived(derived: DerivedTables, key: str, out: Path) -> DerivedTables:
    """Store ``derived`` in ``out/derived.json`` and return the tables as stored: a build
    and the rebuild that reads them back then see the same numbers to the last digit (the
    JSON keeps 15 significant digits), so the figures drawn from them keep their keys."""
    tables = {
        "summaries": {
            tag: summary.to_json(orient="table", index=False, double_precision=15)
            for tag, summary in derived.summaries.items()
        },
        "bd_rate": None
        if derived.bd_rate is None
        else derived.bd_rate.to_json(orient="table", index=False, double_precision=15),
    }
    document = {"key": key, "sha256": _tables_digest(tables), "tables": tables}
    (out / DERIVED_FILE).write_text(json.dumps(document) + "\n")
    return _parsed(tables)


def _parsed(tables: dict) -> DerivedTables:
    summaries = {
        tag: pd.read_json(io.StringIO(text), orient="table")
        for tag, text in tables["summaries"].items()
    }
    bd_rate = tables["bd_rate"]
    return DerivedTables(
        summaries, None if bd_rate is None else pd.read_json(io.StringIO(bd_rate), orient="table")
    )


def _tables_digest(tables: dict) -> str:
    return hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()


@dataclass
class _Page:
    """What the page shows, gathered section by section; figures are drawn at the end."""

    out: Path
    formats: tuple[str, ...]
    jobs: list[FigureJob]

    def figure(self, job: FigureJob, caption: str) -> Figure:
        self.jobs.append(job)
        paths = {path.suffix: path.relative_to(self.out).as_posix() for path in job.paths(self.out)}
        return Figure(caption=caption, image=paths[".png"], vector=paths.get(".svg"))


def _write_report(
    run_dir: Path,
    out: Path,
    previous: Path | None,
    anchor: str | None,
    vector: bool,
    workers: int | None,
) -> None:
    config = RunStore(run_dir).read_config()
    frame = results_frame(run_dir)
    directions = metric_directions(run_dir)
    page = _Page(out, ("png", "svg") if vector else ("png",), [])
    derived = derived_tables(run_dir, anchor, previous, frame)
    derived = _write_derived(derived, _derived_key(run_dir, anchor), out)
    notes = (
        _failure_notes(frame)
        if not frame.empty
        else ["No results recorded yet: the run has not finished any task."]
    )
    overall = derived.summaries.get("")
    # The gate of bench compare covers every metric, token statistics included.
    write_summary(run_summary(run_dir, overall), out / SUMMARY_FILE)
    headline: list[ReportTable | Figure] = []
    token_tables: list[ReportTable] = []
    tables: list[ReportTable] = []
    figures: list[Figure] = []
    if overall is not None:
        token_tables = _token_section(overall, config.get("codecs", {}), out)
        summaries = {tag: quality_only(rows, directions) for tag, rows in derived.summaries.items()}
        overall = summaries[""]
        summary_tables = _summary_tables(summaries, out)
        # A run of token statistics alone has no quality table: its token table leads.
        if not overall.empty:
            headline.append(summary_tables.pop(0))
        if rate_quality_metrics(overall):
            headline.append(
                page.figure(
                    FigureJob(
                        "figures/rate_quality",
                        "bench.report.plots:draw_rate_quality_grid",
                        (overall,),
                        page.formats,
                    ),
                    "Every metric against actual bitrate: one panel per metric, one line per "
                    "codec (per codec and NFE for iterative decoders), 95% CI bands",
                )
            )
        headline += _bd_rate_section(derived.bd_rate, out)
        tables += summary_tables + _published_table(overall, out)
        figures += _metric_figures(overall, page)
    worst, worst_examples = _worst_section(run_dir, frame, directions, out, page)
    listening, overviews = _listening(run_dir, out, config, _conditions(overall), page)
    render_figures(page.jobs, out, previous, workers)
    content = ReportContent(
        title=f"Codec benchmark report: {config.get('run_id', run_dir.name)}",
        provenance=config,
        headline=tuple(headline),
        tables=tuple(token_tables + worst + tables),
        figures=tuple(figures + overviews),
        worst=tuple(worst_examples),
        listening=tuple(listening),
        notes=tuple(notes),
    )
    write_html_report(content, out)


def _summary_tables(summaries: dict[str, pd.DataFrame], out: Path) -> list[ReportTable]:
    tables = []
    for tag, summary in summaries.items():
        if summary.empty:
            continue
        stem = f"summary_{tag}" if tag else "summary"
        paths = write_tables(summary, out / "tables", stem)
        what = f"items tagged {tag!r}" if tag else "all items"
        tables.append(
            ReportTable(
                caption=f"Summary over {what}: {aggregation_note(summary)}; "
                "best per bitrate in bold; ↑ higher is better, ↓ lower is better",
                html=html_table(summary),
                downloads=_downloads(paths, out),
            )
        )
    return tables


def _downloads(paths: list[Path], out: Path) -> tuple[tuple[str, str], ...]:
    return tuple((path.suffix[1:].upper(), path.relative_to(out).as_posix()) for path in paths)


def _bd_rate_section(table: pd.DataFrame | None, out: Path) -> list[ReportTable]:
    if table is None or table.empty:
        return []
    paths = write_bd_rate_tables(table, out / "tables")
    anchor = table["anchor"].iloc[0]
    return [
        ReportTable(
            caption=f"BD-rate against {anchor}. {BD_RATE_NOTE}",
            html=bd_rate_html(table),
            downloads=_downloads(paths, out),
        )
    ]


def _token_section(summary: pd.DataFrame, codecs: dict, out: Path) -> list[ReportTable]:
    """The token statistics of the conditions with codes, their rates side by side."""
    table = token_table(summary, codecs)
    if table.empty:
        return []
    paths = write_token_tables(table, out / "tables")
    return [
        ReportTable(
            caption="Token statistics of the codecs with codes, pooled over each condition's "
            "items: nominal, actual, entropy-bound (an ideal entropy coder of the per-level "
            "unigram statistics) and LM-coded kbps side by side, so the table shows what "
            "entropy coding could save and what it does; codebook usage, entropy, perplexity",
            html=token_table_html(table),
            downloads=_downloads(paths, out),
        )
    ]


def _published_table(summary: pd.DataFrame, out: Path) -> list[ReportTable]:
    beside = published_beside(summary)
    if beside.empty:
        return []
    path = out / "tables" / "published_beside.csv"
    beside.to_csv(path, index=False)
    return [
        ReportTable(
            caption="Our measurements beside PUBLISHED figures from the papers (not measured "
            "here; conditions such as data and metric implementation may differ, see notes)",
            html=beside.to_html(
                index=False,
                classes="published",
                border=0,
                na_rep="",
                float_format=lambda value: f"{value:.4g}",
            ),
            downloads=(("CSV", path.relative_to(out).as_posix()),),
        )
    ]


def _metric_figures(summary: pd.DataFrame, page: _Page) -> list[Figure]:
    """One rate–quality figure per metric, then quality against NFE for iterative codecs."""
    figures = [
        page.figure(
            FigureJob(
                f"figures/rate_quality_{file_safe(metric)}",
                "bench.report.plots:draw_rate_quality",
                (summary, metric),
                page.formats,
            ),
            f"{metric} against actual bitrate, one line per codec, 95% CI bands",
        )
        for metric in rate_quality_metrics(summary)
    ]
    figures += [
        page.figure(
            FigureJob(
                f"figures/nfe_{file_safe(metric)}",
                "bench.report.plots:draw_quality_vs_nfe",
                (summary, metric),
                page.formats,
            ),
            f"{metric}: quality against NFE and against decode RTF",
        )
        for metric in quality_metrics_with_nfe(summary)
    ]
    return figures


def _worst_section(
    run_dir: Path, frame: pd.DataFrame, directions: dict[str, dict], out: Path, page: _Page
) -> tuple[list[ReportTable], list[ListeningExample]]:
    """The worst items of every condition as a table, and players with spectrograms for
    those whose audio the run kept (the :data:`WORST_KEPT` worst of each)."""
    if frame.empty:
        return [], []
    table = worst_items(frame, directions)
    if table.empty:
        return [], []
    metrics = headline_metrics(frame)
    path = out / "tables" / "worst_items.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    shown = table.assign(condition=[condition_of(row).title() for _, row in table.iterrows()])
    shown = shown[["condition", "rank", "item", *metrics, "badness"]]
    section = ReportTable(
        caption="Worst items of each condition, worst first, on the headline metrics "
        f"({', '.join(metrics)}): badness is the mean over those metrics of an item's place "
        "among the condition's items, 1 for the worst, 1/n for the best of n. Listen to "
        "them below.",
        html=shown.to_html(
            index=False, classes="worst", border=0, na_rep="–", float_format=lambda v: f"{v:.3g}"
        ),
        downloads=(("CSV", path.relative_to(out).as_posix()),),
    )
    store = RunStore(run_dir)
    examples = []
    for _, row in table[table["rank"] <= WORST_KEPT].iterrows():
        condition = condition_of(row)
        reference = store.reference_audio_path(row["item"])
        decoded = store.decoded_audio_path(
            condition.label, condition.bitrate, condition.nfe, row["item"]
        )
        if reference.exists() and decoded.exists():
            examples.append(
                _example(run_dir, out, page, row["item"], condition, reference, decoded, "worst")
            )
    return [section], examples


def _example(
    run_dir: Path,
    out: Path,
    page: _Page,
    item: str,
    condition: ConditionKey,
    reference: Path,
    decoded: Path,
    folder: str,
) -> ListeningExample:
    slug = condition_slug(condition.label, condition.bitrate, condition.nfe)
    job = FigureJob(
        f"{folder}/{slug}__{decoded.stem}",
        "bench.report.plots:draw_spectrogram_strip",
        (reference, decoded),
        ("png",),
    )
    page.jobs.append(job)
    return ListeningExample(
        item=item,
        condition=condition.title(),
        reference_audio=_copy(reference, run_dir, out),
        decoded_audio=_copy(decoded, run_dir, out),
        spectrogram=job.paths(out)[0].relative_to(out).as_posix(),
    )


@dataclass(frozen=True)
class _ListedItem:
    """An item as the run's config records it: what :func:`listening_selection` reads."""

    id: str
    tags: frozenset[str]


def _listening(
    run_dir: Path,
    out: Path,
    config: dict,
    conditions: dict[str, ConditionKey],
    page: _Page,
) -> tuple[list[ListeningExample], list[Figure]]:
    """The listening items' audio in the report, with spectrograms: a strip per example
    and an overview per item. Worst items the run kept besides are in their own section."""
    store = RunStore(run_dir)
    recorded = [
        _ListedItem(str(item["id"]), frozenset(item.get("tags") or ()))
        for item in config.get("dataset", {}).get("items", [])
    ]
    count = config.get("settings", {}).get("listening_items", len(recorded))
    examples, overviews = [], []
    for item in listening_selection(recorded, count):
        reference = store.reference_audio_path(item.id)
        if not reference.exists():
            continue
        decoded = []
        for title, condition in conditions.items():
            path = store.decoded_audio_path(
                condition.label, condition.bitrate, condition.nfe, item.id
            )
            if path.exists():
                decoded.append((title, path))
                examples.append(
                    _example(
                        run_dir, out, page, item.id, condition, reference, path, "spectrograms"
                    )
                )
        if decoded:
            overviews.append(_overview(item.id, reference, decoded, page))
    return examples, overviews


def _conditions(summary: pd.DataFrame | None) -> dict[str, ConditionKey]:
    """Every condition the run recorded, by title ("opus 6 kbps"), in the summary's order."""
    if summary is None:
        return {}
    conditions = {}
    for label, bitrate, nfe in (
        summary[["label", "bitrate", "nfe"]].drop_duplicates().itertuples(index=False)
    ):
        key = ConditionKey(label, float(bitrate), None if pd.isna(nfe) else int(nfe))
        conditions[key.title()] = key
    return conditions


def _overview(item: str, reference: Path, decoded: list[tuple[str, Path]], page: _Page) -> Figure:
    lowest: dict[str, tuple[str, Path]] = {}
    for label, path in decoded:  # conditions come in ascending bitrate per codec
        lowest.setdefault(label.split(" ", 1)[0], (label, path))
    chosen = tuple(lowest.values())[:OVERVIEW_CONDITIONS]
    job = FigureJob(
        f"figures/spectrograms_{Path(reference).stem}",
        "bench.report.plots:draw_spectrogram_comparison",
        (reference, chosen, f"{item}: reference and decoded"),
        page.formats,
    )
    return page.figure(
        job, f"Spectrograms of {item}: reference, then each codec at its lowest bitrate"
    )


def _copy(path: Path, run_dir: Path, out: Path) -> str:
    relative = path.relative_to(run_dir / LISTENING_DIR)
    target = out / "audio" / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copyfile(path, target)
    return target.relative_to(out).as_posix()


def _failure_notes(frame: pd.DataFrame) -> list[str]:
    failed = frame[frame["failure"].notna()]
    if failed.empty:
        return []
    notes = [f"{len(failed)} value(s) could not be scored (NaN, excluded from means):"]
    for (metric, reason), count in failed.groupby(["metric", "failure"]).size().items():
        notes.append(f"{count} x {metric}: {reason}")
    return notes

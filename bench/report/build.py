"""``bench report RUN_DIR``: rebuild every report artefact from the run directory alone.

Reads ``config.json``, ``results.jsonl`` and the ``listening/`` audio the run kept, and
writes ``RUN_DIR/report/``: tables (Markdown, CSV, LaTeX; overall and per content tag),
``summary.json`` (what ``bench compare`` reads), our numbers beside the papers' published
ones, plots (PNG and SVG), and ``index.html`` with a listening section. The folder is
built under a temporary name and swapped in whole, so a report is never half old, half new.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from bench.report.compare import SUMMARY_FILE, run_summary, write_summary
from bench.report.html import (
    Figure,
    ListeningExample,
    ReportContent,
    ReportTable,
    write_html_report,
)
from bench.report.plots import (
    plot_quality_vs_nfe,
    plot_rate_quality,
    plot_spectrogram_comparison,
)
from bench.report.published import published_beside
from bench.report.stats import ConditionKey, metric_directions, results_frame
from bench.report.table import aggregation_note, html_table, tag_summaries, write_tables
from bench.store import LISTENING_DIR, RunStore, condition_slug

REPORT_DIR = "report"
# Spectrogram overviews show each codec at its lowest bitrate, where artefacts are audible.
OVERVIEW_CONDITIONS = 6


def build_report(run_dir: str | os.PathLike, report_dir: str | os.PathLike | None = None) -> Path:
    """Write the report of ``run_dir`` into ``report_dir`` (default ``RUN_DIR/report``)."""
    run_dir = Path(run_dir)
    target = Path(report_dir) if report_dir is not None else run_dir / REPORT_DIR
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _write_report(run_dir, staging)
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


def _write_report(run_dir: Path, out: Path) -> None:
    config = RunStore(run_dir).read_config()
    frame = results_frame(run_dir)
    notes = []
    if frame.empty:
        notes.append("No results recorded yet: the run has not finished any task.")
        summaries: dict[str, pd.DataFrame] = {}
    else:
        summaries = tag_summaries(frame, metric_directions(run_dir))
        notes += _failure_notes(frame)
    overall = summaries.get("")
    write_summary(run_summary(run_dir, overall), out / SUMMARY_FILE)
    tables = _tables(summaries, out)
    figures: list[Figure] = []
    if overall is not None:
        tables += _published_table(overall, out)
        figures += _plots(overall, out)
    listening, overviews = _listening(run_dir, out, config, _conditions(overall))
    content = ReportContent(
        title=f"Codec benchmark report: {config.get('run_id', run_dir.name)}",
        provenance=config,
        tables=tuple(tables),
        figures=tuple(figures + overviews),
        listening=tuple(listening),
        notes=tuple(notes),
    )
    write_html_report(content, out)


def _tables(summaries: dict[str, pd.DataFrame], out: Path) -> list[ReportTable]:
    tables = []
    for tag, summary in summaries.items():
        stem = f"summary_{tag}" if tag else "summary"
        paths = write_tables(summary, out / "tables", stem)
        what = f"items tagged {tag!r}" if tag else "all items"
        tables.append(
            ReportTable(
                caption=f"Summary over {what}: {aggregation_note(summary)}; "
                "best per bitrate in bold; ↑ higher is better, ↓ lower is better",
                html=html_table(summary),
                downloads=tuple(
                    (path.suffix[1:].upper(), path.relative_to(out).as_posix()) for path in paths
                ),
            )
        )
    return tables


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


def _plots(summary: pd.DataFrame, out: Path) -> list[Figure]:
    figures_dir = out / "figures"
    written = plot_rate_quality(summary, figures_dir) + plot_quality_vs_nfe(summary, figures_dir)
    figures = []
    for png in (path for path in written if path.suffix == ".png"):
        svg = png.with_suffix(".svg")
        kind, metric = png.stem.split("_", 1) if png.stem.startswith("nfe_") else ("", png.stem)
        caption = (
            f"{metric.removeprefix('rate_quality_')} against actual bitrate, one line per "
            "codec, 95% CI bands"
            if not kind
            else f"{metric}: quality against NFE and against decode RTF"
        )
        figures.append(
            Figure(
                caption=caption,
                image=png.relative_to(out).as_posix(),
                vector=svg.relative_to(out).as_posix() if svg in written else None,
            )
        )
    return figures


def _listening(
    run_dir: Path, out: Path, config: dict, conditions: dict[str, tuple[str, float, int | None]]
) -> tuple[list[ListeningExample], list[Figure]]:
    """Copy the kept audio into the report and draw its spectrograms."""
    store = RunStore(run_dir)
    examples, overviews = [], []
    for item in config.get("dataset", {}).get("items", []):
        reference = store.reference_audio_path(item["id"])
        if not reference.exists():
            continue
        reference_copy = _copy(reference, run_dir, out)
        decoded = []
        for title, (label, bitrate, nfe) in conditions.items():
            path = store.decoded_audio_path(label, bitrate, nfe, item["id"])
            if not path.exists():
                continue
            decoded.append((title, path))
            stem = out / "spectrograms" / f"{condition_slug(label, bitrate, nfe)}__{path.stem}"
            (spectrogram,) = plot_spectrogram_comparison(
                reference, [(title, path)], stem, title=f"{item['id']}: {title}", formats=("png",)
            )
            examples.append(
                ListeningExample(
                    item=item["id"],
                    condition=title,
                    reference_audio=reference_copy,
                    decoded_audio=_copy(path, run_dir, out),
                    # The written path: a stem such as "encodec_1.5__x" holds a dot.
                    spectrogram=spectrogram.relative_to(out).as_posix(),
                )
            )
        if decoded:
            overviews.append(_overview(item["id"], reference, decoded, out))
    return examples, overviews


def _conditions(summary: pd.DataFrame | None) -> dict[str, tuple[str, float, int | None]]:
    """Every condition the run recorded, by title ("opus 6 kbps"), in the summary's order."""
    if summary is None:
        return {}
    conditions = {}
    for label, bitrate, nfe in (
        summary[["label", "bitrate", "nfe"]].drop_duplicates().itertuples(index=False)
    ):
        key = ConditionKey(label, float(bitrate), None if pd.isna(nfe) else int(nfe))
        conditions[key.title()] = (key.label, key.bitrate, key.nfe)
    return conditions


def _overview(item: str, reference: Path, decoded: list[tuple[str, Path]], out: Path) -> Figure:
    lowest: dict[str, tuple[str, Path]] = {}
    for label, path in decoded:  # conditions come in ascending bitrate per codec
        lowest.setdefault(label.split(" ", 1)[0], (label, path))
    chosen = list(lowest.values())[:OVERVIEW_CONDITIONS]
    stem = out / "figures" / f"spectrograms_{Path(reference).stem}"
    png, svg = plot_spectrogram_comparison(
        reference, chosen, stem, title=f"{item}: reference and decoded", formats=("png", "svg")
    )
    return Figure(
        caption=f"Spectrograms of {item}: reference, then each codec at its lowest bitrate",
        image=png.relative_to(out).as_posix(),
        vector=svg.relative_to(out).as_posix(),
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

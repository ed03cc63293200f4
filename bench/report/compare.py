"""Regression gating: compare the metric means of two runs, condition by condition.

``bench compare BASELINE NEW`` matches each (codec, bitrate, NFE, metric) mean of the
new run with the baseline's. A change in the metric's worse direction beyond its
tolerance is a regression; beyond it in the better direction, an improvement; a value
that could be scored before and cannot now (NaN), or more failed items, is a regression
too. Conditions present on one side only are reported as new or missing, never dropped.
The verdict is printed as Markdown for a pull-request comment and can be written as
JUnit XML for CI dashboards. Either side is a run directory or a summary file
(``summary.json``, written by ``bench report`` and kept as the committed baseline).
"""

from __future__ import annotations

import json
import math
import os
import tomllib
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from bench.report.stats import (
    BOOTSTRAP_SEED,
    CONFIDENCE,
    RESAMPLES,
    metric_directions,
    results_frame,
    summary_stats,
)
from bench.store import CONFIG_FILE, RunStore, write_atomically

SUMMARY_FORMAT = "codec-bench summary"
SUMMARY_VERSION = 1
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class Tolerance:
    """How far a mean may move in the worse direction before it is a regression.

    The allowed change is the larger of ``absolute`` and ``relative`` times the
    baseline's magnitude.
    """

    absolute: float = 0.0
    relative: float = 0.0

    def allowed(self, baseline: float) -> float:
        return max(self.absolute, self.relative * abs(baseline))

    def describe(self) -> str:
        parts = []
        if self.absolute:
            parts.append(f"±{self.absolute:g}")
        if self.relative:
            parts.append(f"±{self.relative:.0%}")
        return " or ".join(parts) or "exact"


# Defaults: about the smallest change a codec researcher would act on, and well above
# the run-to-run drift of deterministic decoding on one machine (which is zero) or
# across BLAS builds (last digits).
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "mel_distance": Tolerance(relative=0.02),
    "mel_distance_dac": Tolerance(relative=0.02),
    "si_sdr": Tolerance(absolute=0.2),  # dB
    "pesq_wb": Tolerance(absolute=0.05),  # MOS-LQO
    "pesq_nb": Tolerance(absolute=0.05),
    "stoi": Tolerance(absolute=0.005),
    "estoi": Tolerance(absolute=0.005),
    "visqol_speech": Tolerance(absolute=0.05),
    "visqol_audio": Tolerance(absolute=0.05),
    "wer": Tolerance(absolute=0.01),  # one word in a hundred
    "cer": Tolerance(absolute=0.01),  # one character in a hundred
    "speaker_similarity": Tolerance(absolute=0.01),
    "dnsmos": Tolerance(absolute=0.05),
    "kbps_actual": Tolerance(relative=0.01),
    # Timings move with the machine's load; only a doubling is worth a red build.
    "rtf_encode": Tolerance(relative=1.0),
    "rtf_decode": Tolerance(relative=1.0),
}
FALLBACK_TOLERANCE = Tolerance(relative=0.01)
KEY_COLUMNS = ["codec", "bitrate", "nfe", "metric"]


def run_summary(run_dir: str | os.PathLike, stats: pd.DataFrame | None = None) -> dict:
    """The summary document of a run: per-condition statistics plus what made them.

    ``stats`` is the run's :func:`summary_stats` if the caller has it already.
    """
    config = RunStore(run_dir).read_config()
    if stats is None:
        stats = summary_stats(results_frame(run_dir), metric_directions(run_dir))
    return {
        "format": SUMMARY_FORMAT,
        "version": SUMMARY_VERSION,
        "run_id": config.get("run_id"),
        "created": config.get("created"),
        "summarised": datetime.now(UTC).isoformat(),
        "config_hash": config.get("config_hash"),
        "settings": config.get("settings"),
        "git": config.get("git"),
        "versions": config.get("versions"),
        "device": config.get("device"),
        "checkpoints": {
            name: codec.get("checkpoint_hash") for name, codec in config.get("codecs", {}).items()
        },
        "statistics": {
            "confidence": CONFIDENCE,
            "interval": "BCa bootstrap over items",
            "resamples": RESAMPLES,
            "seed": BOOTSTRAP_SEED,
        },
        "conditions": json.loads(stats.to_json(orient="records")),
    }


def load_summary(path: str | os.PathLike) -> dict:
    """A summary from a run directory or a summary JSON file; ``ValueError`` otherwise."""
    path = Path(path)
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise ValueError(f"expected a run directory with {CONFIG_FILE}, got {path}")
        return run_summary(path)
    if not path.is_file():
        raise ValueError(f"expected a run directory or a {SUMMARY_FILE} file, got {path}")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: expected a JSON summary, got invalid JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != SUMMARY_FORMAT:
        raise ValueError(f"{path}: expected a {SUMMARY_FORMAT!r} document, got something else")
    if document.get("version") != SUMMARY_VERSION:
        raise ValueError(
            f"{path}: expected summary version {SUMMARY_VERSION}, got {document.get('version')}"
        )
    return document


def write_summary(document: dict, path: str | os.PathLike) -> None:
    write_atomically(Path(path), json.dumps(document, indent=1).encode() + b"\n")


def load_tolerances(path: str | os.PathLike | None = None) -> dict[str, Tolerance]:
    """The default tolerances, overridden per metric by a TOML or JSON file.

    The file maps metric names to ``absolute`` and/or ``relative``, e.g. TOML
    ``[pesq_wb]`` / ``absolute = 0.1``.
    """
    tolerances = dict(DEFAULT_TOLERANCES)
    if path is None:
        return tolerances
    path = Path(path)
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--tolerance: expected a TOML or JSON file of per-metric tolerances, "
            f"got {path} ({error})"
        ) from None
    for metric, entry in data.items():
        if not isinstance(entry, dict) or not set(entry) <= {"absolute", "relative"} or not entry:
            raise ValueError(
                f"--tolerance {path}: expected {{absolute = X, relative = Y}} for {metric!r}, "
                f"got {entry!r}"
            )
        values = {key: float(value) for key, value in entry.items()}
        if any(value < 0 or not math.isfinite(value) for value in values.values()):
            raise ValueError(f"--tolerance {path}: {metric!r} needs finite values >= 0")
        tolerances[metric] = Tolerance(**values)
    return tolerances


def _tolerance(tolerances: dict[str, Tolerance], metric: str) -> Tolerance:
    return tolerances.get(metric) or tolerances.get(metric.split(".", 1)[0], FALLBACK_TOLERANCE)


def _frame(document: dict) -> pd.DataFrame:
    frame = pd.DataFrame(document["conditions"])
    if frame.empty:
        return pd.DataFrame(columns=[*KEY_COLUMNS, "mean", "failed", "n", "higher_is_better"])
    frame["nfe"] = pd.to_numeric(frame["nfe"], errors="coerce")
    frame["mean"] = pd.to_numeric(frame["mean"], errors="coerce")
    # Bitrates and NFEs are matched as rounded numbers, so 6 and 6.0 are one condition.
    frame["bitrate"] = frame["bitrate"].astype(float).round(6)
    return frame


def compare_summaries(
    baseline: dict, new: dict, tolerances: dict[str, Tolerance] | None = None
) -> pd.DataFrame:
    """One row per (condition, metric) with its status.

    Statuses: ``regression``, ``improvement``, ``unchanged``, ``new`` (only in ``new``),
    ``missing`` (only in ``baseline``).
    """
    tolerances = tolerances if tolerances is not None else DEFAULT_TOLERANCES
    merged = _frame(baseline).merge(
        _frame(new),
        on=KEY_COLUMNS,
        how="outer",
        suffixes=("_baseline", "_new"),
        indicator="presence",
    )
    records = []
    for row in merged.itertuples(index=False):
        row = row._asdict()
        tolerance = _tolerance(tolerances, row["metric"])
        status, reason = _status(row, tolerance)
        higher = row["higher_is_better_new"]
        if pd.isna(higher):
            higher = row["higher_is_better_baseline"]
        records.append(
            {
                "codec": row["codec"],
                "bitrate": row["bitrate"],
                "nfe": None if pd.isna(row["nfe"]) else int(row["nfe"]),
                "metric": row["metric"],
                "higher_is_better": bool(higher),
                "baseline": row["mean_baseline"],
                "new": row["mean_new"],
                "change": row["mean_new"] - row["mean_baseline"],
                "tolerance": tolerance.describe(),
                "status": status,
                "reason": reason,
            }
        )
    return pd.DataFrame(records)


def _status(row: dict, tolerance: Tolerance) -> tuple[str, str]:
    if row["presence"] == "right_only":
        return "new", "condition not in the baseline"
    if row["presence"] == "left_only":
        return "missing", "condition not in the new run"
    old, new = row["mean_baseline"], row["mean_new"]
    if math.isnan(old) and math.isnan(new):
        return "unchanged", "not scored in either run"
    if math.isnan(new):
        return "regression", "scored in the baseline, NaN now"
    if math.isnan(old):
        return "improvement", "NaN in the baseline, scored now"
    items_before = int(row["n_baseline"] + row["failed_baseline"])
    items_now = int(row["n_new"] + row["failed_new"])
    if items_now != items_before:
        # Means over other items are not comparable: an unfinished run, or another slice.
        return "regression", f"scored over {items_now} items, the baseline over {items_before}"
    failed_before, failed_now = int(row["failed_baseline"]), int(row["failed_new"])
    if failed_now > failed_before:
        return "regression", f"failed items {failed_before} -> {failed_now}"
    worse = (old - new) if row["higher_is_better_new"] else (new - old)
    allowed = tolerance.allowed(old)
    if worse > allowed:
        return "regression", f"worse by {worse:.4g} (allowed {allowed:.4g})"
    if -worse > allowed:
        return "improvement", f"better by {-worse:.4g}"
    return "unchanged", ""


STATUS_ORDER = ("regression", "missing", "new", "improvement", "unchanged")
_SECTION_TITLES = {
    "regression": "Regressions",
    "missing": "Missing conditions (in the baseline, not in the new run)",
    "new": "New conditions (not in the baseline)",
    "improvement": "Improvements",
    "unchanged": "Unchanged",
}


def _provenance_line(label: str, document: dict) -> str:
    git = document.get("git") or {}
    commit = (git.get("commit") or "unknown")[:12]
    dirty = " (dirty)" if git.get("dirty") else ""
    return f"- **{label}:** run `{document.get('run_id')}`, commit `{commit}`{dirty}"


def _version_changes(baseline: dict, new: dict) -> list[str]:
    old_versions, new_versions = baseline.get("versions") or {}, new.get("versions") or {}
    return [
        f"{name} {old_versions.get(name, '-')} -> {new_versions.get(name, '-')}"
        for name in sorted(set(old_versions) | set(new_versions))
        if old_versions.get(name) != new_versions.get(name)
    ]


def markdown_report(comparison: pd.DataFrame, baseline: dict, new: dict) -> str:
    """A pull-request comment: verdict, provenance, then one section per status."""
    counts = comparison["status"].value_counts()
    regressions = int(counts.get("regression", 0))
    verdict = "❌ regressions found" if regressions else "✅ no regressions"
    summary = ", ".join(f"{int(counts.get(status, 0))} {status}" for status in STATUS_ORDER)
    lines = [
        f"## bench compare: {verdict}",
        "",
        summary,
        "",
        _provenance_line("baseline", baseline),
        _provenance_line("new", new),
    ]
    changes = _version_changes(baseline, new)
    if changes:
        lines.append(f"- **versions changed:** {'; '.join(changes)}")
    for status in STATUS_ORDER:
        rows = comparison[comparison["status"] == status]
        if rows.empty:
            continue
        table = _display(rows).to_markdown(index=False, disable_numparse=True)
        title = f"### {_SECTION_TITLES[status]} ({len(rows)})"
        if status == "unchanged":
            lines += ["", f"<details><summary>{title[4:]}</summary>", "", table, "", "</details>"]
        else:
            lines += ["", title, "", table]
    return "\n".join(lines) + "\n"


def _display(rows: pd.DataFrame) -> pd.DataFrame:
    def number(value: float) -> str:
        return "" if pd.isna(value) else f"{value:.4g}"

    return pd.DataFrame(
        {
            "codec": rows["codec"],
            "kbps": rows["bitrate"].map("{:g}".format),
            "NFE": rows["nfe"].map(lambda nfe: "-" if nfe is None or pd.isna(nfe) else str(nfe)),
            "metric": [
                f"{metric} {'↑' if higher else '↓'}"
                for metric, higher in zip(rows["metric"], rows["higher_is_better"], strict=True)
            ],
            "baseline": rows["baseline"].map(number),
            "new": rows["new"].map(number),
            "change": rows["change"].map(number),
            "tolerance": rows["tolerance"],
            "note": rows["reason"],
        }
    )


def junit_xml(comparison: pd.DataFrame) -> bytes:
    """JUnit XML: a test case per (condition, metric); regressions fail, new/missing skip."""
    suite = ElementTree.Element(
        "testsuite",
        name="bench compare",
        tests=str(len(comparison)),
        failures=str(int((comparison["status"] == "regression").sum())),
        skipped=str(int(comparison["status"].isin(["new", "missing"]).sum())),
    )
    for row in comparison.itertuples(index=False):
        nfe = f".nfe{row.nfe}" if row.nfe is not None and not pd.isna(row.nfe) else ""
        case = ElementTree.SubElement(
            suite, "testcase", classname=f"{row.codec}.{row.bitrate:g}kbps{nfe}", name=row.metric
        )
        message = f"baseline {row.baseline:.6g}, new {row.new:.6g}: {row.reason}".strip(": ")
        if row.status == "regression":
            ElementTree.SubElement(case, "failure", message=message, type="regression")
        elif row.status in ("new", "missing"):
            ElementTree.SubElement(case, "skipped", message=row.reason)
    return ElementTree.tostring(suite, encoding="utf-8", xml_declaration=True)

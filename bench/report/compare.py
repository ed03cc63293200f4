"""Regression gating: compare the metric means of two runs, condition by condition.

``bench compare BASELINE NEW`` matches each (label, bitrate, NFE, metric) mean of the
new run with the baseline's. A change in the metric's worse direction beyond its
tolerance (which the metric declares: :class:`bench.metrics.Tolerance`) is a regression;
beyond it in the better direction, an improvement; a value that could be scored before
and cannot now (NaN), more failed items or another item count is a regression too. A
condition of the baseline that the new run lacks is missing, and fails the gate like a
regression; one only in the new run is new. Two runs over different
items (compared by id and input hash) or crops are not comparable at all: their means
are not compared. The verdict is printed as Markdown for a pull-request comment and can
be written as JUnit XML for CI dashboards. Either side is a run directory or a summary
file (``summary.json``, written by ``bench report`` and kept as the committed baseline),
checked field by field when it is loaded.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
import xml.etree.ElementTree as ElementTree
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from bench.metrics import Tolerance, get_metric, metric_names
from bench.report.stats import (
    BOOTSTRAP_SEED,
    CONFIDENCE,
    MEAN_AGGREGATE,
    RESAMPLES,
    metric_directions,
    results_frame,
    summary_stats,
)
from bench.store import CONFIG_FILE, RunStore, write_atomically

SUMMARY_FORMAT = "codec-bench summary"
# Version 2 records each item's id and input hash; version 1 did not, so its item set
# cannot be checked and it must be regenerated.
SUMMARY_VERSION = 2
SUMMARY_FILE = "summary.json"


KEY_COLUMNS = ["label", "bitrate", "nfe", "metric"]
COMPARISON_COLUMNS = [
    *KEY_COLUMNS,
    "higher_is_better",
    "baseline",
    "new",
    "change",
    "tolerance",
    "status",
    "reason",
]


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
        "items": [
            {"id": item["id"], "input_hash": item.get("input_hash")}
            for item in config.get("dataset", {}).get("items", [])
        ],
        "conditions": json.loads(stats.to_json(orient="records")),
    }


def load_summary(path: str | os.PathLike) -> dict:
    """A summary from a run directory or a summary JSON file; ``ValueError`` otherwise."""
    path = Path(path)
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise ValueError(f"expected a run directory with {CONFIG_FILE}, got {path}")
        document = run_summary(path)
        check_summary(document, path)
        return document
    if not path.is_file():
        raise ValueError(f"expected a run directory or a {SUMMARY_FILE} file, got {path}")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: expected a JSON summary, got invalid JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != SUMMARY_FORMAT:
        raise ValueError(f"{path}: expected a {SUMMARY_FORMAT!r} document, got something else")
    if document.get("version") == 1:
        raise ValueError(
            f"{path}: summary version 1 records no item ids and input hashes, so its items "
            f"cannot be checked; regenerate it from a finished run with "
            f"`bench compare {path} RUN_DIR --update-baseline`"
        )
    if document.get("version") != SUMMARY_VERSION:
        raise ValueError(
            f"{path}: expected summary version {SUMMARY_VERSION}, got {document.get('version')}"
        )
    # Summaries from before labelled conditions name each condition by its codec alone,
    # which was then its label.
    for condition in document.get("conditions") or []:
        if isinstance(condition, dict) and "label" not in condition:
            condition["label"] = condition.get("codec")
    check_summary(document, path)
    return document


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: object) -> bool:
    return _is_number(value) and float(value).is_integer() and value >= 0


# What compare reads of each condition: (field, check, what the check expects).
_CONDITION_FIELDS = (
    ("label", lambda value: isinstance(value, str) and value != "", "a condition label"),
    ("codec", lambda value: isinstance(value, str) and value != "", "a codec name"),
    ("bitrate", lambda value: _is_number(value) and value > 0, "a finite number > 0"),
    ("nfe", lambda value: value is None or (_is_count(value) and value > 0), "null or an NFE"),
    ("metric", lambda value: isinstance(value, str) and value != "", "a metric name"),
    ("higher_is_better", lambda value: isinstance(value, bool), "true or false"),
    ("mean", lambda value: value is None or _is_number(value), "a finite number or null"),
    ("n", _is_count, "a whole number >= 0 (items scored)"),
    ("failed", _is_count, "a whole number >= 0 (items failed)"),
)


def check_summary(document: dict, source: str | os.PathLike) -> None:
    """Refuse a summary whose items or conditions are not what compare expects.

    ``ValueError`` names the file, the condition and the field. A value that is not a
    finite number is refused, never coerced: a string "0.5" or an Infinity must not be
    judged as a score.
    """
    items = document.get("items")
    if not isinstance(items, list) or not all(
        isinstance(item, dict)
        and isinstance(item.get("id"), str)
        and (item.get("input_hash") is None or isinstance(item["input_hash"], str))
        for item in items
    ):
        raise ValueError(
            f"{source}: expected 'items' to be a list of {{id, input_hash}}, got {items!r:.200}"
        )
    ids = [item["id"] for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{source}: item ids repeat: {_listed(_repeated(ids))}")
    conditions = document.get("conditions")
    if not isinstance(conditions, list):
        raise ValueError(f"{source}: expected 'conditions' to be a list, got {conditions!r:.200}")
    keys = []
    for index, condition in enumerate(conditions):
        if not isinstance(condition, dict):
            raise ValueError(f"{source}: condition {index}: expected an object, got {condition!r}")
        where = (
            f"{source}: condition {index} ({condition.get('label')!r} at "
            f"{condition.get('bitrate')!r} kbps, NFE {condition.get('nfe')!r}, "
            f"metric {condition.get('metric')!r})"
        )
        for field, check, expected in _CONDITION_FIELDS:
            if field not in condition:
                raise ValueError(f"{where}: expected a field {field!r}, got none")
            if not check(condition[field]):
                raise ValueError(
                    f"{where}: expected {field!r} to be {expected}, got {condition[field]!r}"
                )
        if (condition["mean"] is None) != (condition["n"] == 0):
            raise ValueError(
                f"{where}: expected a mean exactly when items were scored, got mean "
                f"{condition['mean']!r} over n = {condition['n']!r} items"
            )
        keys.append(
            (
                condition["label"],
                round(condition["bitrate"], 6),
                condition["nfe"],
                condition["metric"],
            )
        )
    if len(set(keys)) != len(keys):
        raise ValueError(f"{source}: conditions repeat: {_listed(_repeated(keys))}")


def _repeated(values: list) -> list:
    return [value for value, count in Counter(values).items() if count > 1]


def _listed(values: list, shown: int = 20) -> str:
    """Up to ``shown`` values, then how many more."""
    text = ", ".join(str(value) for value in values[:shown])
    return text + (f" and {len(values) - shown} more" if len(values) > shown else "")


def require_conditions(document: dict, source: str | os.PathLike) -> None:
    """Refuse a summary with no conditions as a baseline: a gate against nothing passes
    everything, and an empty run has nothing to gate."""
    if not document["conditions"]:
        raise ValueError(
            f"{source}: expected a baseline with at least one condition, got none (an empty "
            f"or unstarted run); make the baseline from a finished run with --update-baseline"
        )


def comparability_problems(baseline: dict, new: dict) -> list[str]:
    """Why the two runs' means cannot be compared at all; empty when they can.

    Items are matched by id and input hash: a run over other audio, even with the same
    item count, has means over other things, and would count its differences as
    regressions or improvements of the codec.
    """
    old_items = {item["id"]: item["input_hash"] for item in baseline["items"]}
    new_items = {item["id"]: item["input_hash"] for item in new["items"]}
    problems = []
    lost = sorted(old_items.keys() - new_items.keys())
    if lost:
        problems.append(f"{len(lost)} item(s) of the baseline not in the new run: {_listed(lost)}")
    added = sorted(new_items.keys() - old_items.keys())
    if added:
        problems.append(
            f"{len(added)} item(s) of the new run not in the baseline: {_listed(added)}"
        )
    changed = sorted(
        item for item in old_items.keys() & new_items.keys() if old_items[item] != new_items[item]
    )
    if changed:
        problems.append(
            f"{len(changed)} item(s) whose input audio differs (input hash): {_listed(changed)}"
        )
    # A metric aggregated another way (WER as a mean of utterances, then as corpus WER)
    # has a mean that measures something else: comparing would report the definition's
    # change as the codec's.
    old_aggregates, new_aggregates = _aggregates(baseline), _aggregates(new)
    for metric in sorted(old_aggregates.keys() & new_aggregates.keys()):
        if old_aggregates[metric] != new_aggregates[metric]:
            problems.append(
                f"{metric} is aggregated differently: {old_aggregates[metric]} in the "
                f"baseline, {new_aggregates[metric]} now"
            )
    old_crop = (baseline.get("settings") or {}).get("max_seconds")
    new_crop = (new.get("settings") or {}).get("max_seconds")
    if old_crop != new_crop:
        problems.append(
            f"items cropped differently: --max-seconds {old_crop} in the baseline, {new_crop} now"
        )
    return problems


def _aggregates(document: dict) -> dict[str, str]:
    """What each metric's means are (``mean`` or a ratio of totals), per metric."""
    return {
        condition["metric"]: condition.get("aggregate", MEAN_AGGREGATE)
        for condition in document["conditions"]
    }


def write_summary(document: dict, path: str | os.PathLike) -> None:
    write_atomically(Path(path), json.dumps(document, indent=1).encode() + b"\n")


def declared_tolerances() -> dict[str, Tolerance]:
    """Each registered metric's tolerance, as its spec declares it."""
    return {name: get_metric(name).tolerance for name in metric_names()}


def load_tolerances(path: str | os.PathLike | None = None) -> dict[str, Tolerance]:
    """The metrics' declared tolerances, overridden per metric by a TOML or JSON file.

    The file maps metric names to ``absolute`` and/or ``relative``, e.g. TOML
    ``[pesq_wb]`` / ``absolute = 0.1``; it also gives one to a metric that is not
    registered here (a plug-in that is not installed).
    """
    tolerances = declared_tolerances()
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
    family = metric.split(".", 1)[0]
    tolerance = tolerances.get(metric) or tolerances.get(family)
    if tolerance is None:
        # No guessed default: a gate the metric's author never chose could pass anything.
        raise ValueError(
            f"no tolerance for metric {metric!r}: it is not registered here (see `bench "
            f"metrics`), so none is declared; give it one in a --tolerance file, e.g. "
            f"[{family}] relative = 0.01"
        )
    return tolerance


def _frame(document: dict) -> pd.DataFrame:
    """The conditions of a summary that :func:`check_summary` accepted, as a frame."""
    columns = [*KEY_COLUMNS, "mean", "failed", "n", "higher_is_better"]
    frame = pd.DataFrame(document["conditions"], columns=columns)
    frame["nfe"] = frame["nfe"].astype(float)
    frame["mean"] = frame["mean"].astype(float)  # null (not scored) becomes NaN
    # Bitrates and NFEs are matched as rounded numbers, so 6 and 6.0 are one condition.
    frame["bitrate"] = frame["bitrate"].astype(float).round(6)
    return frame


def compare_summaries(
    baseline: dict, new: dict, tolerances: dict[str, Tolerance] | None = None
) -> pd.DataFrame:
    """One row per (condition, metric) with its status.

    Statuses: ``regression``, ``improvement``, ``unchanged``, ``new`` (only in ``new``),
    ``missing`` (only in ``baseline``). Both summaries must have passed
    :func:`check_summary`, and their items :func:`comparability_problems`.
    """
    tolerances = tolerances if tolerances is not None else declared_tolerances()
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
        # The baseline says which way is better: a new run cannot redefine its own gate.
        higher = row["higher_is_better_baseline"]
        if pd.isna(higher):
            higher = row["higher_is_better_new"]
        records.append(
            {
                "label": row["label"],
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
    return pd.DataFrame(records, columns=COMPARISON_COLUMNS)


def _status(row: dict, tolerance: Tolerance) -> tuple[str, str]:
    if row["presence"] == "right_only":
        return "new", "condition not in the baseline"
    if row["presence"] == "left_only":
        return "missing", "condition not in the new run"
    if row["higher_is_better_new"] != row["higher_is_better_baseline"]:
        return "regression", "the metric's better direction differs from the baseline's"
    # Before any NaN verdict: an unfinished run whose values are NaN on fewer items is
    # not "unchanged", nor one scored on fewer items an improvement.
    items_before = int(row["n_baseline"] + row["failed_baseline"])
    items_now = int(row["n_new"] + row["failed_new"])
    if items_now != items_before:
        # Means over other items are not comparable: an unfinished run, or another slice.
        return "regression", f"scored over {items_now} items, the baseline over {items_before}"
    old, new = row["mean_baseline"], row["mean_new"]
    if math.isnan(old) and math.isnan(new):
        return "unchanged", "not scored in either run"
    if math.isnan(new):
        return "regression", "scored in the baseline, NaN now"
    if math.isnan(old):
        return "improvement", "NaN in the baseline, scored now"
    failed_before, failed_now = int(row["failed_baseline"]), int(row["failed_new"])
    if failed_now > failed_before:
        return "regression", f"failed items {failed_before} -> {failed_now}"
    worse = (old - new) if row["higher_is_better_baseline"] else (new - old)
    allowed = tolerance.allowed(old)
    if worse > allowed:
        return "regression", f"worse by {worse:.4g} (allowed {allowed:.4g})"
    if -worse > allowed:
        return "improvement", f"better by {-worse:.4g}"
    return "unchanged", ""


STATUS_ORDER = ("regression", "missing", "new", "improvement", "unchanged")
# A condition the new run lost fails the gate like a regression: an empty or unfinished
# run must not pass.
FAILING_STATUSES = ("regression", "missing")
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


def gate_fails(comparison: pd.DataFrame) -> bool:
    """Whether the comparison holds a regression or a missing condition."""
    return bool(comparison["status"].isin(FAILING_STATUSES).any())


def _heading(verdict: str, summary: str, baseline: dict, new: dict) -> list[str]:
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
    return lines


def markdown_report(comparison: pd.DataFrame, baseline: dict, new: dict) -> str:
    """A pull-request comment: verdict, provenance, then one section per status."""
    counts = comparison["status"].value_counts()
    failures = [
        {"regression": "regressions found", "missing": "conditions missing"}[status]
        for status in FAILING_STATUSES
        if counts.get(status, 0)
    ]
    verdict = f"❌ {', '.join(failures)}" if failures else "✅ no regressions"
    summary = ", ".join(f"{int(counts.get(status, 0))} {status}" for status in STATUS_ORDER)
    lines = _heading(verdict, summary, baseline, new)
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
            "codec": rows["label"],
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


def not_comparable_report(problems: list[str], baseline: dict, new: dict) -> str:
    """The Markdown verdict for runs whose items differ: what differs, no means."""
    summary = "The runs scored different audio (items or crops), so no mean was compared."
    lines = _heading("⛔ not comparable", summary, baseline, new)
    lines += ["", "### What differs", "", *(f"- {problem}" for problem in problems)]
    return "\n".join(lines) + "\n"


def junit_xml(comparison: pd.DataFrame) -> bytes:
    """JUnit XML: a test case per (condition, metric); regressions and missing conditions
    fail, new ones skip."""
    suite = ElementTree.Element(
        "testsuite",
        name="bench compare",
        tests=str(len(comparison)),
        failures=str(int(comparison["status"].isin(FAILING_STATUSES).sum())),
        skipped=str(int((comparison["status"] == "new").sum())),
    )
    for row in comparison.itertuples(index=False):
        nfe = f".nfe{row.nfe}" if row.nfe is not None and not pd.isna(row.nfe) else ""
        case = ElementTree.SubElement(
            suite, "testcase", classname=f"{row.label}.{row.bitrate:g}kbps{nfe}", name=row.metric
        )
        message = f"baseline {row.baseline:.6g}, new {row.new:.6g}: {row.reason}".strip(": ")
        if row.status in FAILING_STATUSES:
            ElementTree.SubElement(case, "failure", message=message, type=row.status)
        elif row.status == "new":
            ElementTree.SubElement(case, "skipped", message=row.reason)
    return _xml(suite)


def not_comparable_junit(problems: list[str]) -> bytes:
    """JUnit XML with one failing case, so a dashboard shows why nothing was compared."""
    suite = ElementTree.Element("testsuite", name="bench compare", tests="1", failures="1")
    case = ElementTree.SubElement(suite, "testcase", classname="bench compare", name="items")
    ElementTree.SubElement(case, "failure", message="; ".join(problems), type="not comparable")
    return _xml(suite)


def _xml(suite: ElementTree.Element) -> bytes:
    return ElementTree.tostring(suite, encoding="utf-8", xml_declaration=True)

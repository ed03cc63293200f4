"""``bench compare``: a new run against a baseline, the CI gate (exit 4 on a regression or a
missing condition, 5 when the runs' items differ); or ``--update-baseline``."""

from __future__ import annotations

import argparse
import os

from bench.cli.common import EXIT_NOT_COMPARABLE, EXIT_OK, EXIT_REGRESSION, add_subcommand

HELP = (
    "compare a new run with a baseline; exit 4 on any regression or missing condition, 5 when "
    "the runs' items differ"
)


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    compare = add_subcommand(subcommands, "compare", compare_command, HELP)
    compare.add_argument("baseline", metavar="BASELINE", help="run directory or summary.json")
    compare.add_argument("new", metavar="NEW", help="run directory or summary.json")
    compare.add_argument("--tolerance", help="TOML/JSON file of per-metric tolerances")
    compare.add_argument("--junit", metavar="FILE", help="also write JUnit XML here")
    compare.add_argument("--markdown", metavar="FILE", help="also write the Markdown report here")
    compare.add_argument(
        "--update-baseline",
        action="store_true",
        help="write NEW's summary to BASELINE (a .json path) instead of comparing",
    )


def compare_command(arguments: argparse.Namespace) -> int:
    from bench.report.compare import (
        comparability_problems,
        compare_summaries,
        gate_fails,
        junit_xml,
        load_summary,
        load_tolerances,
        markdown_report,
        not_comparable_junit,
        not_comparable_report,
        require_conditions,
    )

    new = load_summary(arguments.new)
    if arguments.update_baseline:
        return _update_baseline(arguments.baseline, new, arguments.new)
    baseline = load_summary(arguments.baseline)
    require_conditions(baseline, arguments.baseline)
    tolerances = load_tolerances(arguments.tolerance)
    problems = comparability_problems(baseline, new)
    if problems:
        report, junit = (
            not_comparable_report(problems, baseline, new),
            not_comparable_junit(problems),
        )
        code = EXIT_NOT_COMPARABLE
    else:
        comparison = compare_summaries(baseline, new, tolerances)
        report, junit = markdown_report(comparison, baseline, new), junit_xml(comparison)
        code = EXIT_REGRESSION if gate_fails(comparison) else EXIT_OK
    print(report)
    if arguments.markdown:
        with open(arguments.markdown, "w", encoding="utf-8") as handle:
            handle.write(report)
    if arguments.junit:
        with open(arguments.junit, "wb") as handle:
            handle.write(junit)
    return code


def _update_baseline(baseline: str, new: dict, new_source: str) -> int:
    """Write the summary of ``new`` (read from ``new_source``) to the ``baseline`` path."""
    from bench.report.compare import require_conditions, write_summary

    if os.path.isdir(baseline):
        raise ValueError(
            f"--update-baseline: expected a summary .json path, got the directory {baseline!r}"
        )
    require_conditions(new, new_source)
    write_summary(new, baseline)
    print(
        f"baseline {baseline} now holds run {new['run_id']} "
        f"({len(new['conditions'])} condition x metric means)"
    )
    return EXIT_OK

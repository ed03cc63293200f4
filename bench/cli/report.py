"""``bench report``: rebuild a run's report from its directory and print its table."""

from __future__ import annotations

import argparse
import os
import sys

from bench.cli.common import EXIT_OK, add_subcommand

HELP = "rebuild a run's report (tables, plots, HTML) from its directory and print the table"


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    report = add_subcommand(subcommands, "report", report_command, HELP, epilog=None)
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("--out", help="report folder (default: RUN_DIR/report)")
    add_report_options(report)


def add_report_options(parser: argparse.ArgumentParser) -> None:
    """The options of the report that `bench report` and `bench run` write."""
    parser.add_argument(
        "--anchor",
        metavar="CODEC",
        help="the codec label the BD-rate table compares every other against "
        "(default: opus where the run has it, else its first codec)",
    )
    parser.add_argument(
        "--svg", action="store_true", help="write every plot as SVG too, beside its PNG"
    )


def report_command(arguments: argparse.Namespace) -> int:
    from bench.report.build import build_report, derived_tables
    from bench.report.table import format_summary

    if not os.path.isfile(os.path.join(arguments.run_dir, "config.json")):
        raise ValueError(f"expected a run directory with config.json, got {arguments.run_dir!r}")
    report_dir = build_report(
        arguments.run_dir, arguments.out, anchor=arguments.anchor, vector=arguments.svg
    )
    # The summary the report just computed, from its folder, not computed a second time.
    derived = derived_tables(arguments.run_dir, arguments.anchor, report_dir)
    print(format_summary(arguments.run_dir, derived.summaries.get("")))
    print(f"\nreport: {report_dir / 'index.html'}", file=sys.stderr)
    return EXIT_OK

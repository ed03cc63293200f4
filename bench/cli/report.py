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


def report_command(arguments: argparse.Namespace) -> int:
    from bench.report.build import build_report
    from bench.report.table import format_summary

    if not os.path.isfile(os.path.join(arguments.run_dir, "config.json")):
        raise ValueError(f"expected a run directory with config.json, got {arguments.run_dir!r}")
    report_dir = build_report(arguments.run_dir, arguments.out)
    print(format_summary(arguments.run_dir))
    print(f"\nreport: {report_dir / 'index.html'}", file=sys.stderr)
    return EXIT_OK

"""``bench nll``: a SampleRNN checkpoint's test NLL in bits per sample on a dataset, with a
bootstrap interval over items (:mod:`bench.likelihood`)."""

from __future__ import annotations

import argparse
import json
import sys

from bench.cli.common import EXIT_FAILURES, EXIT_OK, add_subcommand, finite_float, names

HELP = "test NLL of a SampleRNN checkpoint in bits per sample, with a bootstrap interval"


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    nll = add_subcommand(subcommands, "nll", nll_command, HELP)
    nll.add_argument("--model", required=True, help="a `bench train samplernn` checkpoint")
    nll.add_argument("--data", required=True, help="a dataset spec, e.g. manifest:PATH")
    nll.add_argument(
        "--bitrate",
        type=finite_float,
        help="kbps of the EnCodec bitstream that conditions a codec decoder (required for one)",
    )
    nll.add_argument("--limit", type=int, help="score the first N items")
    nll.add_argument("--tags", help="keep the items with any of these tags, comma-separated")
    nll.add_argument("--exclude-tags", help="then drop the items with any of these tags")
    nll.add_argument("--out", required=True, help="run directory (a killed run resumes there)")
    nll.add_argument("--json", action="store_true", help="print the summary as JSON")
    nll.add_argument("--quiet", action="store_true", help="no progress bar")


def nll_command(arguments: argparse.Namespace) -> int:
    from bench.likelihood import NllSettings, format_summary, run_nll

    settings = NllSettings(
        model=arguments.model,
        data=arguments.data,
        bitrate=arguments.bitrate,
        limit=arguments.limit,
        tags=names(arguments.tags) if arguments.tags else None,
        exclude_tags=names(arguments.exclude_tags) if arguments.exclude_tags else None,
    )
    result = run_nll(settings, arguments.out, progress=not arguments.quiet)
    print(json.dumps(result, indent=2) if arguments.json else format_summary(result))
    print(f"\nrun: {arguments.out}", file=sys.stderr)
    return EXIT_FAILURES if result["all"]["failed"] else EXIT_OK

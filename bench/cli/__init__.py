"""The ``bench`` command: a thin layer over the library (``bench.sweep``, registries, reports).

One module per subcommand, as lhotse's ``bin/modes``: each adds its parser (``add_parser``)
and holds its handler, a few lines around a library call; option defaults come from the
library's settings dataclasses. Building the parser imports no torch: the library loads
when a handler runs.

Exit codes: 0 success; 1 unexpected internal error; 2 bad usage or input (unknown codec
or metric, unsupported bitrate or NFE, bad dataset spec, missing run directory); 3 the
run finished but some values could not be scored (NaN, counted in the table);
4 ``bench compare`` found a regression or a missing condition; 5 ``bench compare`` was
given runs over different items (not comparable); 130 interrupted; 141 the reader of the
output left (`bench weights list | head`).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from bench.cli import ablate, compare, listen, listing, nll, report, run, score, train, weights
from bench.cli.common import (
    EPILOG,
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_FAILURES,
    EXIT_INTERRUPTED,
    EXIT_NOT_COMPARABLE,
    EXIT_OK,
    EXIT_REGRESSION,
    EXIT_USAGE,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_FAILURES",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_COMPARABLE",
    "EXIT_OK",
    "EXIT_REGRESSION",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

# The subcommands' modules, in the order `bench --help` lists them.
SUBCOMMANDS = (run, score, listen, listing, report, train, ablate, compare, nll, weights)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description="Benchmark neural and classic audio codecs.", epilog=EPILOG
    )
    # How to continue after Ctrl-C, for the subcommands that can (`bench run`, `bench train`).
    parser.set_defaults(continue_with=lambda _interrupt: None)
    subcommands = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        return arguments.handler(arguments)
    except KeyboardInterrupt as interrupt:
        how = arguments.continue_with(interrupt) or "the same command"
        print(f"interrupted; continue with {how}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output left (`bench weights list | head`): stop quietly, as a
        # shell's commands do on SIGPIPE, and keep Python from failing again on flushing
        # stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except ValueError as error:  # bad usage or input, with what was expected
        print(f"bench: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except Exception:  # noqa: BLE001 - report, then a distinct exit code
        traceback.print_exc()
        return EXIT_ERROR

"""``bench ablate STUDY``: train a study's variants under one budget, evaluate them on held-out
data and write the tables (:mod:`bench.ablate`)."""

from __future__ import annotations

import argparse
import sys

from bench.cli.common import EXIT_OK, add_subcommand

HELP = (
    "ablation study: train every variant x seed of a study (discriminator, balancer, "
    "quantizer, or a study file) under one budget, evaluate on held-out data, write tables"
)


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    ablate = add_subcommand(subcommands, "ablate", ablate_command, HELP)
    ablate.set_defaults(continue_with=_continue_with)
    ablate.add_argument(
        "study",
        metavar="STUDY",
        help="a shipped study (discriminator, balancer, quantizer) or a TOML file",
    )
    ablate.add_argument(
        "--data", required=True, help="training data: a dataset spec, e.g. manifest:PATH"
    )
    ablate.add_argument(
        "--steps", type=int, help="training steps per variant (default: the study's)"
    )
    ablate.add_argument("--seeds", help="training seeds, comma-separated (default: the study's)")
    ablate.add_argument(
        "--executor",
        default="process",
        help="where variants train: process (local, one thread each) | inline | ray "
        "(default: process)",
    )
    ablate.add_argument(
        "--ray-address", help="with --executor ray: `auto` or HOST:PORT of a running cluster"
    )
    ablate.add_argument(
        "--workers", type=int, help="variants trained at once (default: one per core or Ray CPU)"
    )
    ablate.add_argument("--out", required=True, help="study folder (a killed study resumes there)")
    ablate.add_argument("--quiet", action="store_true", help="no progress bars")


def _continue_with(_interrupt: KeyboardInterrupt) -> str:
    return "the same `bench ablate` command (finished variants are not retrained)"


def ablate_command(arguments: argparse.Namespace) -> int:
    from bench.ablate.run import run_study
    from bench.ablate.study import load_study
    from bench.ablate.tables import write_tables
    from bench.sweep.settings import parse_list

    seeds = parse_list(arguments.seeds, int, "--seeds") if arguments.seeds else None
    if arguments.steps is not None and arguments.steps < 1:
        raise ValueError(f"--steps: expected at least 1, got {arguments.steps}")
    study = load_study(arguments.study).with_budget(steps=arguments.steps, seeds=seeds)
    options = {}
    if arguments.ray_address is not None:
        if arguments.executor != "ray":
            raise ValueError(
                "--ray-address: expected --executor ray with it, got --executor "
                f"{arguments.executor}"
            )
        options["address"] = arguments.ray_address
    result = run_study(
        study,
        arguments.data,
        arguments.out,
        executor=arguments.executor,
        workers=arguments.workers,
        executor_options=options,
        progress=not arguments.quiet,
        command=["bench", *sys.argv[1:]],
    )
    paths = write_tables(study, result.folder)
    print(paths[0].read_text(encoding="utf-8"))
    print(f"tables: {', '.join(map(str, paths))}", file=sys.stderr)
    return EXIT_OK

"""``bench listen``: MUSHRA listening tests (ITU-R BS.1534-3): ``export`` a webMUSHRA package
of a run's conditions, ``analyze`` its ratings."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.common import (
    EPILOG,
    EXIT_OK,
    add_subcommand,
    field_defaults,
    finite_float,
    names,
    shown,
)
from bench.listen.settings import ExportSettings

EXPORT_HELP = "a webMUSHRA package (zipped) of a run's conditions"
ANALYZE_HELP = "post-screen listeners, condition means with 95%% CIs, paired tests, correlations"
EXPORT_DEFAULTS = field_defaults(ExportSettings)


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    listen = subcommands.add_parser(
        "listen",
        help="MUSHRA listening tests (ITU-R BS.1534-3): export a package, analyse the ratings",
        epilog=EPILOG,
    )
    listen_commands = listen.add_subparsers(dest="listen_command", required=True)
    export = add_subcommand(listen_commands, "export", export_command, EXPORT_HELP)
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--out", required=True, metavar="PKG", help="new package folder")
    items = EXPORT_DEFAULTS["items"]
    export.add_argument(
        "--items", type=int, default=items, help=f"trials (default: {shown(items)})"
    )
    export.add_argument(
        "--conditions", help="condition labels such as opus_6kbps (default: all of the run's)"
    )
    export.add_argument(
        "--metric", help="metric that spreads the items (default: mel_distance if scored)"
    )
    lufs, seconds = EXPORT_DEFAULTS["target_lufs"], EXPORT_DEFAULTS["max_seconds"]
    export.add_argument(
        "--loudness", type=finite_float, default=lufs, help=f"target LUFS ({shown(lufs)})"
    )
    export.add_argument(
        "--max-seconds",
        type=finite_float,
        default=seconds,
        help=f"excerpt length ({shown(seconds)})",
    )
    analyze = add_subcommand(listen_commands, "analyze", analyze_command, ANALYZE_HELP)
    analyze.add_argument("results", metavar="RESULTS", help="webMUSHRA mushra.csv or plain CSV")
    analyze.add_argument("--package", required=True, metavar="PKG", help="the exported package")
    analyze.add_argument("--out", help="analysis folder (default: PKG/analysis)")
    analyze.add_argument(
        "--correction", default="holm", help="holm | bonferroni | bh (default: holm)"
    )


def export_settings(arguments: argparse.Namespace) -> ExportSettings:
    """What ``bench listen export`` was asked for."""
    return ExportSettings(
        items=arguments.items,
        conditions=None if arguments.conditions is None else names(arguments.conditions),
        target_lufs=arguments.loudness,
        max_seconds=arguments.max_seconds,
        selection_metric=arguments.metric,
    )


def export_command(arguments: argparse.Namespace) -> int:
    from bench.listen.export import export_package

    archive = export_package(arguments.run_dir, arguments.out, export_settings(arguments))
    print(Path(arguments.out, "README.md").read_text())
    print(f"package: {arguments.out}\nzip: {archive}")
    return EXIT_OK


def analyze_command(arguments: argparse.Namespace) -> int:
    from bench.listen.analyze import analyze
    from bench.listen.export import TRAINING_PAGE, package_objective_means, package_trials

    package = Path(arguments.package)
    out = Path(arguments.out) if arguments.out else package / "analysis"
    result = analyze(
        arguments.results,
        out,
        objective=package_objective_means(package),
        correction=arguments.correction,
        exclude_trials=(TRAINING_PAGE,),
        trials=package_trials(package),
    )
    print(result.summary.to_markdown(index=False))
    print(f"\nanalysis: {out}")
    return EXIT_OK

"""``bench codecs`` and ``bench metrics``: the registered codecs and metrics, one a line."""

from __future__ import annotations

import argparse

from bench.cli.common import EXIT_OK, add_subcommand

CODECS_HELP = "list codecs with their bitrates and NFE options"
METRICS_HELP = "list metrics with their metadata"


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    add_subcommand(subcommands, "codecs", list_codecs, CODECS_HELP, epilog=None)
    add_subcommand(subcommands, "metrics", list_metrics, METRICS_HELP, epilog=None)


def list_codecs(_arguments: argparse.Namespace) -> int:
    from bench.registry import CODECS, create_codec

    print(f"{'codec':<12} {'rate':>6} {'ch':>3}  {'bitrates (kbps)':<40} {'nfe':<10} source")
    for name in CODECS.names():
        try:
            codec = create_codec(name)
        except Exception as error:  # noqa: BLE001 - a broken plug-in must not hide the rest
            print(f"{name:<12} cannot be loaded: {type(error).__name__}: {error}")
            continue
        bitrates = ", ".join(f"{bitrate:g}" for bitrate in codec.bitrates)
        nfe = ", ".join(map(str, codec.nfe_options)) if codec.nfe_options else "one-shot"
        print(
            f"{name:<12} {codec.sample_rate:>6} {codec.channels:>3}  {bitrates:<40} "
            f"{nfe:<10} {CODECS.source(name)}"
        )
    return EXIT_OK


def list_metrics(_arguments: argparse.Namespace) -> int:
    from bench.metrics import get_metric, metric_names
    from bench.metrics.costs import load_costs

    costs, cost_source = load_costs()
    print(
        f"{'metric':<18} {'better':<7} {'gate':<7} {'ref':<4} {'text':<5} {'rate':>6} "
        f"{'content':<8} {'cost':>7}  backend"
    )
    for name in metric_names():
        spec = get_metric(name)
        rate = str(spec.sample_rate) if spec.sample_rate else "codec"
        content = ",".join(sorted(spec.content)) if spec.content else "any"
        cost = f"{costs[name]:.4f}" if name in costs else "-"
        print(
            f"{name:<18} {'higher' if spec.higher_is_better else 'lower':<7} "
            f"{spec.tolerance.describe():<7} {'yes' if spec.needs_reference else 'no':<4} "
            f"{'yes' if spec.needs_transcript else 'no':<5} {rate:>6} {content:<8} {cost:>7}  "
            f"{spec.backend} {spec.backend_version}"
        )
    print(
        "\ngate: the change `bench compare` allows; ref: needs a reference (no = "
        f"non-intrusive); text: needs a transcript; {cost_source}"
    )
    return EXIT_OK

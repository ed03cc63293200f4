"""``bench score``: score a reference/degraded pair of files, or two folders paired by path."""

from __future__ import annotations

import argparse
import json

from bench.cli.common import (
    ASR_MODEL_HELP,
    EXIT_FAILURES,
    EXIT_OK,
    add_subcommand,
    metric_options,
    names,
)

HELP = "score a reference/degraded pair of files, or two folders paired by path"


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    score = add_subcommand(subcommands, "score", score_command, HELP)
    score.add_argument("reference", metavar="REF", help="reference file or folder")
    score.add_argument("degraded", metavar="DEG", help="degraded file or folder")
    score.add_argument("--metrics", help="metric names, comma-separated (default: all audio)")
    score.add_argument("--asr-model", help=ASR_MODEL_HELP)
    score.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
    score.add_argument("--json", action="store_true", help="print one JSON object")
    score.add_argument(
        "--trim",
        action="store_true",
        help="score pairs whose lengths differ by more than 20 ms or 1 %% on their common "
        "part (default: NaN with the reason)",
    )


def score_command(arguments: argparse.Namespace) -> int:
    from bench.metrics import get_metric, metric_names
    from bench.scoring import bind_metrics, mean_scores, score_paths

    if arguments.workers < 1:
        raise ValueError(f"--workers: expected >= 1, got {arguments.workers}")
    chosen = (
        names(arguments.metrics)
        if arguments.metrics
        else tuple(name for name in metric_names() if get_metric(name).scores_files)
    )
    metrics = bind_metrics(chosen, metric_options(arguments))
    pairs = score_paths(
        arguments.reference, arguments.degraded, metrics, arguments.workers, arguments.trim
    )
    failures = sum(len(pair.failures) for pair in pairs)
    if arguments.json:
        if len(pairs) == 1:
            document = pairs[0].as_json()
        else:
            document = {
                "pairs": [pair.as_json() for pair in pairs],
                "mean": mean_scores(pairs, metrics),
            }
        # allow_nan=False: a NaN that slipped through would be written as bare NaN,
        # which is not JSON; failed values must be null with a reason.
        print(json.dumps(document, indent=2, allow_nan=False))
        return EXIT_FAILURES if failures else EXIT_OK
    for pair in pairs:
        print(f"{pair.reference or '(no reference)'} ~ {pair.degraded or '(no degraded)'}")
        for name, value in pair.values.items():
            shown = f"{value:.4f}" if value is not None else f"nan ({pair.failures[name]})"
            print(f"  {name:<20} {shown}")
        for note in pair.notes:
            print(f"  note: {note}")
    if len(pairs) > 1:
        print(f"mean over {len(pairs)} pairs (failures excluded):")
        ratios = {metric.name: metric.spec.aggregation for metric in metrics}
        for name, value in mean_scores(pairs, metrics).items():
            shown = f"{value:.4f}" if value is not None else "nan"
            ratio = ratios.get(name)
            pooled = f" (total {ratio.numerator} / total {ratio.denominator})" if ratio else ""
            print(f"  {name:<20} {shown}{pooled}")
    return EXIT_FAILURES if failures else EXIT_OK

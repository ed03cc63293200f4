"""The ``bench`` command: a thin layer over the library (``bench.sweep``, registries, reports).

Exit codes: 0 success; 1 unexpected internal error; 2 bad usage or input (unknown codec
or metric, unsupported bitrate or NFE, bad dataset spec, missing run directory); 3 the
run finished but some values could not be scored (NaN, counted in the table);
4 ``bench compare`` found a regression or a missing condition; 5 ``bench compare`` was
given runs over different items (not comparable); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.sweep.plan import CodecChoice

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_FAILURES = 3
EXIT_REGRESSION = 4
EXIT_NOT_COMPARABLE = 5
EXIT_INTERRUPTED = 130

ASR_MODEL_HELP = (
    "Whisper model for `wer` and `cer`: a CTranslate2 model folder or a name (default: tiny.en)"
)
EPILOG = (
    "exit codes: 0 ok; 1 internal error; 2 bad usage or input; "
    "3 finished with unscored values (NaN); 4 regression or missing condition (bench "
    "compare); 5 not comparable: different items (bench compare); 130 interrupted"
)


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _finite_float(text: str) -> float:
    """An argparse type for numbers: ``float`` alone takes "nan" and "inf" as well."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description="Benchmark neural and classic audio codecs.", epilog=EPILOG
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="sweep codecs x bitrates x NFE x seeds over a dataset and score it",
        epilog=EPILOG,
    )
    run.add_argument(
        "--suite",
        help="run a named suite from bench/suites (e.g. ci); it fixes codecs, bitrates, "
        "items and metrics",
    )
    run.add_argument(
        "--config",
        metavar="FILE",
        help="run the suite in FILE (TOML in the format of bench/suites/*.toml), from any path",
    )
    run.add_argument(
        "--codec",
        action="append",
        help="codec name(s), comma-separated (see `bench codecs`); NAME:KBPS[,KBPS...] gives "
        "one codec bitrates of its own; LABEL=NAME[:KBPS,...][:OPTION=VALUE...] names a "
        "variant (--codec ours=encodec:checkpoint=model.pt); repeat --codec for more "
        "(--codec opus:6,12 --codec encodec:1.5,3)",
    )
    run.add_argument(
        "--bitrates",
        help="kbps, comma-separated, for the codecs without their own; each codec runs those "
        "it supports, the rest are skipped with a note (default: every bitrate)",
    )
    run.add_argument("--nfe", help="NFE counts for iterative decoders, comma-separated")
    run.add_argument("--seed", default="0", help="seed(s), comma-separated (default: 0)")
    run.add_argument(
        "--data",
        default="embedded",
        help="embedded | folder:PATH | librispeech:PATH | manifest:FILE (default: embedded)",
    )
    run.add_argument("--items", help="use only these item ids, comma-separated")
    run.add_argument("--limit", type=int, help="use the first N items (after tag filters)")
    run.add_argument(
        "--max-seconds", type=float, help="crop every item to its first S seconds (S >= 0.25)"
    )
    run.add_argument("--tags", help="keep items with any of these tags, e.g. speech,music")
    run.add_argument("--exclude-tags", help="drop items with any of these tags")
    run.add_argument("--metrics", help="metric names, comma-separated (default: all)")
    run.add_argument("--asr-model", help=ASR_MODEL_HELP)
    run.add_argument(
        "--checkpoint",
        help="weights for the neural codec(s) that take one: a `bench train` checkpoint or "
        "an official release file (default: each codec's shipped demo model)",
    )
    run.add_argument(
        "--entropy-coding",
        action="store_true",
        help="code the tokens with the codec's entropy-coding LM (EnCodec); kbps from real bytes",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes for coding and metrics (default: number of cores)",
    )
    run.add_argument(
        "--executor",
        help="where tasks run: inline | process, or a registered one (default: inline for "
        "one worker, else process); like --workers, not part of the run's identity",
    )
    run.add_argument("--out", default="runs", help="folder for run directories (default: runs)")
    run.add_argument("--run-dir", help="exact run directory to create (instead of under --out)")
    run.add_argument("--no-report", action="store_true", help="skip writing RUN_DIR/report")
    run.add_argument("--cache", help="cache folder (default: $BENCH_CACHE or ~/.cache/codec-bench)")
    run.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a killed or stopped run")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    score = commands.add_parser(
        "score",
        help="score a reference/degraded pair of files, or two folders paired by path",
        epilog=EPILOG,
    )
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

    listen = commands.add_parser(
        "listen",
        help="MUSHRA listening tests (ITU-R BS.1534-3): export a package, analyse the ratings",
        epilog=EPILOG,
    )
    listen_commands = listen.add_subparsers(dest="listen_command", required=True)
    export = listen_commands.add_parser(
        "export", help="a webMUSHRA package (zipped) of a run's conditions", epilog=EPILOG
    )
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--out", required=True, metavar="PKG", help="new package folder")
    export.add_argument("--items", type=int, default=10, help="trials (default: 10)")
    export.add_argument(
        "--conditions", help="condition labels such as opus_6kbps (default: all of the run's)"
    )
    export.add_argument(
        "--metric", help="metric that spreads the items (default: mel_distance if scored)"
    )
    export.add_argument("--loudness", type=_finite_float, default=-23.0, help="target LUFS (-23)")
    export.add_argument(
        "--max-seconds", type=_finite_float, default=10.0, help="excerpt length (10)"
    )
    analyze = listen_commands.add_parser(
        "analyze",
        help="post-screen listeners, condition means with 95%% CIs, paired tests, correlations",
        epilog=EPILOG,
    )
    analyze.add_argument("results", metavar="RESULTS", help="webMUSHRA mushra.csv or plain CSV")
    analyze.add_argument("--package", required=True, metavar="PKG", help="the exported package")
    analyze.add_argument("--out", help="analysis folder (default: PKG/analysis)")
    analyze.add_argument(
        "--correction", default="holm", help="holm | bonferroni | bh (default: holm)"
    )

    commands.add_parser("codecs", help="list codecs with their bitrates and NFE options")
    commands.add_parser("metrics", help="list metrics with their metadata")
    report = commands.add_parser(
        "report",
        help="rebuild a run's report (tables, plots, HTML) from its directory and print the table",
    )
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("--out", help="report folder (default: RUN_DIR/report)")

    train = commands.add_parser(
        "train",
        help="train a model with its solver and export a checkpoint: a neural codec "
        "(adversarial, loss balancer) or the entropy-coding LM of a trained codec",
        epilog=EPILOG,
    )
    _add_train_parsers(train)

    compare = commands.add_parser(
        "compare",
        help="compare a new run with a baseline; exit 4 on any regression or missing "
        "condition, 5 when the runs' items differ",
        epilog=EPILOG,
    )
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
    return parser


def _metric_options(arguments: argparse.Namespace) -> dict[str, dict[str, str]]:
    """``--asr-model`` as the option of each requested ASR metric (all when none are named)."""
    from bench.metrics.asr import METRIC_NAMES

    if not arguments.asr_model:
        return {}
    requested = _names(arguments.metrics) if arguments.metrics else METRIC_NAMES
    asr_metrics = [name for name in METRIC_NAMES if name in requested]
    if not asr_metrics:
        raise ValueError(
            f"--asr-model applies to {' and '.join(METRIC_NAMES)}, which are not among the "
            f"requested metrics: {arguments.metrics}"
        )
    return {name: {"model": arguments.asr_model} for name in asr_metrics}


# Options a suite fixes, with their defaults: giving one alongside --suite is an error.
SUITE_FIXED = {
    "codec": None,
    "bitrates": None,
    "nfe": None,
    "seed": "0",
    "data": "embedded",
    "items": None,
    "limit": None,
    "max_seconds": None,
    "tags": None,
    "exclude_tags": None,
    "metrics": None,
    "asr_model": None,
    "checkpoint": None,
    "entropy_coding": False,
}


def _codec_options(arguments: argparse.Namespace, choices: list[CodecChoice]) -> dict[str, dict]:
    """Each label's codec options: its own (``--codec LABEL=NAME:OPTION=VALUE``), plus
    ``--checkpoint`` and ``--entropy-coding`` where its codec takes them and it does not set
    them itself."""
    from bench.registry import codec_options

    given = {"checkpoint": arguments.checkpoint, "entropy_coding": arguments.entropy_coding}
    given = {name: value for name, value in given.items() if value}
    options: dict[str, dict] = {}
    applied: set[str] = set()
    for choice in choices:
        accepted = codec_options(choice.codec)
        chosen = {
            name: value
            for name, value in given.items()
            if name in accepted and name not in choice.options
        }
        applied |= set(chosen)
        if choice.options or chosen:
            options[choice.label] = {**chosen, **choice.options}
    unused = sorted(given.keys() - applied)
    if unused:
        raise ValueError(
            f"--{unused[0].replace('_', '-')}: expected a codec that takes it (e.g. encodec), "
            f"got --codec {','.join(choice.label for choice in choices)}"
        )
    return options


def _codec_arguments(values: list[str]) -> list[CodecChoice]:
    """The conditions the ``--codec`` options name (see
    :func:`bench.sweep.plan.parse_codec_argument`), each label once."""
    from bench.sweep.plan import parse_codec_argument
    from bench.sweep.settings import refuse_duplicates

    choices = [choice for value in values for choice in parse_codec_argument(value)]
    refuse_duplicates([choice.label for choice in choices], "--codec")
    return choices


def _settings_from_arguments(arguments: argparse.Namespace):
    from bench.suites import load_suite, load_suite_file
    from bench.sweep import SweepSettings, parse_list

    if arguments.suite and arguments.config:
        raise ValueError("--suite and --config: expected one of them, got both")
    if arguments.suite or arguments.config:
        source = f"--suite {arguments.suite}" if arguments.suite else f"--config {arguments.config}"
        clashing = [
            f"--{name.replace('_', '-')}"
            for name, default in SUITE_FIXED.items()
            if getattr(arguments, name) != default
        ]
        if clashing:
            raise ValueError(f"{source} fixes the sweep; expected no {', '.join(clashing)}")
        if arguments.suite:
            return load_suite(arguments.suite)
        return load_suite_file(Path(arguments.config))
    if not arguments.codec:
        raise ValueError("--codec is required (or --resume RUN_DIR); see `bench codecs`")
    choices = _codec_arguments(arguments.codec)
    codecs = tuple(choice.label for choice in choices)
    codec_bitrates = {choice.label: choice.bitrates for choice in choices if choice.bitrates}
    if arguments.bitrates and set(codec_bitrates) == set(codecs):
        raise ValueError(
            f"--bitrates {arguments.bitrates}: applies to no codec, since every codec has "
            "bitrates of its own (--codec NAME:KBPS); expected one or the other"
        )
    return SweepSettings(
        codecs=codecs,
        codec_bitrates=codec_bitrates,
        bitrates=parse_list(arguments.bitrates, float, "--bitrates")
        if arguments.bitrates
        else None,
        nfes=parse_list(arguments.nfe, int, "--nfe") if arguments.nfe else None,
        seeds=parse_list(arguments.seed, int, "--seed"),
        data=arguments.data,
        limit=arguments.limit,
        max_seconds=arguments.max_seconds,
        tags=parse_list(arguments.tags, str, "--tags") if arguments.tags else (),
        exclude_tags=(
            parse_list(arguments.exclude_tags, str, "--exclude-tags")
            if arguments.exclude_tags
            else ()
        ),
        items=parse_list(arguments.items, str, "--items") if arguments.items else None,
        codec_options=_codec_options(arguments, choices),
        label_codecs={
            choice.label: choice.codec for choice in choices if choice.label != choice.codec
        },
        metrics=parse_list(arguments.metrics, str, "--metrics") if arguments.metrics else None,
        metric_options=_metric_options(arguments),
    )


def _run(arguments: argparse.Namespace) -> int:
    from bench.report.table import format_summary
    from bench.store import RunStore
    from bench.sweep import DEFAULT_CACHE_DIR, format_kbps, run_sweep

    if arguments.limit is not None and arguments.limit < 1:
        raise ValueError(f"--limit: expected a positive count, got {arguments.limit}")
    if arguments.run_dir and os.path.exists(os.path.join(arguments.run_dir, "config.json")):
        raise ValueError(
            f"--run-dir: expected a new folder, got {arguments.run_dir!r} which holds a run; "
            "continue it with --resume"
        )
    if arguments.resume and not os.path.isdir(arguments.resume):
        raise ValueError(f"--resume: expected a run directory, got {arguments.resume!r}")
    settings = None if arguments.resume else _settings_from_arguments(arguments)
    cache_dir = None if arguments.no_cache else (arguments.cache or DEFAULT_CACHE_DIR)
    summary = run_sweep(
        settings,
        workers=arguments.workers,
        executor=arguments.executor,
        out_root=arguments.out,
        run_dir=arguments.run_dir,
        cache_dir=cache_dir,
        resume=arguments.resume,
        progress=not arguments.quiet,
    )
    if not arguments.no_report:
        from bench.report.build import build_report

        build_report(summary.run_dir)
    print(format_summary(summary.run_dir))
    config = RunStore(summary.run_dir).read_config()
    for name, description in config["codecs"].items():
        if description.get("model_note"):
            print(f"note: {name}: {description['model_note']}")
    skipped_bitrates: dict[str, list[float]] = {}
    supported: dict[str, list[float]] = {}
    for skipped in config.get("skipped_conditions", []):
        label = skipped.get("label", skipped["codec"])
        skipped_bitrates.setdefault(label, []).append(skipped["bitrate"])
        supported[label] = skipped["supported"]
    for codec, bitrates in skipped_bitrates.items():
        print(
            f"note: skipped {codec} at {format_kbps(bitrates)} kbps: not among its bitrates "
            f"({format_kbps(supported[codec])})"
        )
    for skipped in config["dataset"].get("skipped", []):
        print(f"note: dataset: skipped a file: {skipped}")
    # Entries that failed their digest check (corrupt, truncated, an older format) were
    # recomputed; say so, since a cache that needed repair may need a look.
    bad = summary.bad_cache_entries
    repaired = f", {bad} bad cache {'entry' if bad == 1 else 'entries'} recomputed" if bad else ""
    print(
        f"\nrun: {summary.run_dir}  ({summary.tasks_total} tasks (item x condition): "
        f"{summary.tasks_computed} computed, {summary.tasks_from_cache} from cache, "
        f"{summary.tasks_resumed} already done{repaired}; {summary.wall_seconds:.1f} s)"
    )
    return EXIT_FAILURES if summary.failures else EXIT_OK


def _score(arguments: argparse.Namespace) -> int:
    from bench.metrics import get_metric, metric_names
    from bench.scoring import bind_metrics, score_paths

    if arguments.workers < 1:
        raise ValueError(f"--workers: expected >= 1, got {arguments.workers}")
    names = (
        _names(arguments.metrics)
        if arguments.metrics
        else tuple(name for name in metric_names() if get_metric(name).scores_files)
    )
    metrics = bind_metrics(names, _metric_options(arguments))
    pairs = score_paths(
        arguments.reference, arguments.degraded, metrics, arguments.workers, arguments.trim
    )
    failures = sum(len(pair.failures) for pair in pairs)
    if arguments.json:
        if len(pairs) == 1:
            document = pairs[0].as_json()
        else:
            document = {"pairs": [pair.as_json() for pair in pairs], "mean": _means(pairs, metrics)}
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
        for name, value in _means(pairs, metrics).items():
            shown = f"{value:.4f}" if value is not None else "nan"
            ratio = ratios.get(name)
            pooled = f" (total {ratio.numerator} / total {ratio.denominator})" if ratio else ""
            print(f"  {name:<20} {shown}{pooled}")
    return EXIT_FAILURES if failures else EXIT_OK


def _means(pairs: list, metrics: tuple) -> dict[str, float | None]:
    """Each metric over the pairs that scored it (``None`` if none did): the mean, or for a
    ratio metric (WER) the ratio of its counts summed over the pairs."""
    ratios = {metric.name: metric.spec.aggregation for metric in metrics}
    means = {}
    for name in dict.fromkeys(name for pair in pairs for name in pair.values):
        values = [value for pair in pairs if (value := pair.values.get(name)) is not None]
        ratio = ratios.get(name)
        if ratio is not None and values:
            counts = [pair.counts[name] for pair in pairs if pair.values.get(name) is not None]
            numerator = sum(count[ratio.numerator] for count in counts)
            means[name] = numerator / sum(count[ratio.denominator] for count in counts)
        else:
            means[name] = statistics.fmean(values) if values else None
    return means


def _list_codecs() -> int:
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


def _list_metrics() -> int:
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


def _report(arguments: argparse.Namespace) -> int:
    from bench.report.build import build_report
    from bench.report.table import format_summary

    if not os.path.isfile(os.path.join(arguments.run_dir, "config.json")):
        raise ValueError(f"expected a run directory with config.json, got {arguments.run_dir!r}")
    report_dir = build_report(arguments.run_dir, arguments.out)
    print(format_summary(arguments.run_dir))
    print(f"\nreport: {report_dir / 'index.html'}", file=sys.stderr)
    return EXIT_OK


def _compare(arguments: argparse.Namespace) -> int:
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
        write_summary,
    )

    new = load_summary(arguments.new)
    if arguments.update_baseline:
        if os.path.isdir(arguments.baseline):
            raise ValueError(
                f"--update-baseline: expected a summary .json path, got the directory "
                f"{arguments.baseline!r}"
            )
        require_conditions(new, arguments.new)
        write_summary(new, arguments.baseline)
        print(
            f"baseline {arguments.baseline} now holds run {new['run_id']} "
            f"({len(new['conditions'])} condition x metric means)"
        )
        return EXIT_OK
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


def _add_train_parsers(train: argparse.ArgumentParser) -> None:
    """``bench train MODEL``, one subcommand per training recipe (``bench.registry.SOLVERS``),
    with the options and defaults of its settings dataclass (``bench.train.settings``)."""
    from dataclasses import MISSING, fields
    from typing import get_type_hints

    from bench.registry import SOLVERS, load_target

    models = train.add_subparsers(dest="model", required=True, metavar="MODEL")
    for name in SOLVERS.names():
        recipe = SOLVERS.factory(name)
        settings_class = load_target(recipe.settings)
        parser = models.add_parser(
            name, help=recipe.description, description=recipe.description, epilog=EPILOG
        )
        parser.add_argument("--out", required=True, help="folder for checkpoints and logs")
        parser.add_argument("--resume", action="store_true", help="continue the run in --out")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        types = get_type_hints(settings_class)
        options = {}
        for field in fields(settings_class):
            option = field.metadata.get("option")
            if option is None:
                continue
            options[field.name] = option
            default = field.default
            if field.default_factory is not MISSING:
                default = field.default_factory()
            default = recipe.defaults.get(field.name, default)
            flag = option.flag or "--" + field.name.replace("_", "-")
            if types[field.name] is bool:  # a switch away from the default
                action = "store_false" if default else "store_true"
                parser.add_argument(flag, dest=field.name, action=action, help=option.help)
                continue
            # Numbers parse here; other values (lists, weights) through `option.parse` later,
            # whose errors name the option.
            kind = next(
                (kind for kind in (int, float) if kind in _type_parts(types[field.name])), str
            )
            parser.add_argument(
                flag,
                dest=field.name,
                type=_finite_float if kind is float else kind,
                required=default is MISSING,
                default=None if default is MISSING else default,
                help=option.help
                if default in (MISSING, None)
                else f"{option.help} (default: {_shown(default)})",
            )
        parser.set_defaults(settings_options=options)


def _type_parts(annotation) -> tuple:
    """``int | None`` -> (int, NoneType); any other annotation -> (annotation,)."""
    import types

    return annotation.__args__ if isinstance(annotation, types.UnionType) else (annotation,)


def _shown(default) -> str:
    """A default as the command line writes it."""
    if isinstance(default, dict):
        return ",".join(f"{name}={value:g}" for name, value in default.items())
    if isinstance(default, tuple):
        return ",".join(default) or "none"
    return f"{default:g}" if isinstance(default, float) else str(default)


def _train_settings(arguments: argparse.Namespace):
    """The settings of ``bench train MODEL``: its recipe's, with the options given."""
    from bench.train.settings import recipe_settings

    given = {}
    for name, option in arguments.settings_options.items():
        value = getattr(arguments, name)
        given[name] = option.parse(value) if option.parse and isinstance(value, str) else value
    return recipe_settings(arguments.model, **given)


def _train(arguments: argparse.Namespace) -> int:
    from bench.train.loop import train

    settings = _train_settings(arguments)
    model = train(settings, arguments.out, resume=arguments.resume, progress=not arguments.quiet)
    print(f"model: {model}")
    return EXIT_OK


def _listen(arguments: argparse.Namespace) -> int:
    from bench.listen.analyze import analyze
    from bench.listen.export import (
        TRAINING_PAGE,
        ExportSettings,
        export_package,
        package_objective_means,
        package_trials,
    )

    if arguments.listen_command == "export":
        settings = ExportSettings(
            items=arguments.items,
            conditions=None if arguments.conditions is None else _names(arguments.conditions),
            target_lufs=arguments.loudness,
            max_seconds=arguments.max_seconds,
            selection_metric=arguments.metric,
        )
        archive = export_package(arguments.run_dir, arguments.out, settings)
        print(Path(arguments.out, "README.md").read_text())
        print(f"package: {arguments.out}\nzip: {archive}")
        return EXIT_OK
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


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _build_parser().parse_args(argv)
    handlers = {
        "run": lambda: _run(arguments),
        "codecs": _list_codecs,
        "metrics": _list_metrics,
        "score": lambda: _score(arguments),
        "report": lambda: _report(arguments),
        "compare": lambda: _compare(arguments),
        "train": lambda: _train(arguments),
        "listen": lambda: _listen(arguments),
    }
    try:
        return handlers[arguments.command]()
    except KeyboardInterrupt as interrupt:
        # bench.sweep.RunInterrupted names the run once its directory exists.
        run_dir = getattr(interrupt, "run_dir", None)
        how = {
            "run": f"`bench run --resume {shlex.quote(str(run_dir))}`" if run_dir else None,
            "train": "the same `bench train` command with --resume (the state was saved)",
        }.get(arguments.command) or "the same command"
        print(f"interrupted; continue with {how}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ValueError as error:  # bad usage or input, with what was expected
        print(f"bench: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except Exception:  # noqa: BLE001 - report, then a distinct exit code
        traceback.print_exc()
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

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


# `bench train` options of the codec trainer only, and of the LM trainer (--lm) only.
CODEC_TRAIN_OPTIONS = (
    "codec",
    "config",
    "discriminators",
    "discriminator_filters",
    "shared_discriminator",
    "no_balancer",
    "weights",
    "quantizer",
    "bandwidth_sampling",
    "learning_rate",
    "commitment_weight",
    "frequency_loss",
    "weight_init",
    "quantizer_warmup_steps",
)
LM_TRAIN_OPTIONS = (
    "checkpoint",
    "lm_dim",
    "lm_layers",
    "lm_heads",
    "lm_context_seconds",
    "lm_learning_rate",
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
        "one codec bitrates of its own; repeat --codec for more (--codec opus:6,12 "
        "--codec encodec:1.5,3)",
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
        help="train a neural codec (adversarial, loss balancer) and export a checkpoint; "
        "with --lm, the entropy-coding LM of a trained codec",
        epilog=EPILOG,
    )
    train.add_argument(
        "--lm",
        action="store_true",
        help="train the entropy-coding LM of the codec in --checkpoint (EnCodec Sec. 3.3) and "
        "write that checkpoint plus the LM to --out/model_lm.pt",
    )
    train.add_argument(
        "--checkpoint",
        help="with --lm: the trained codec, a `bench train` EnCodec checkpoint (model.pt)",
    )
    train.add_argument("--codec", default="encodec", help="codec to train (default: encodec)")
    train.add_argument("--config", default="tiny", help="model configuration (default: tiny)")
    train.add_argument("--data", required=True, help="training data: a dataset spec")
    train.add_argument("--steps", type=int, required=True, help="train until this step")
    train.add_argument("--out", required=True, help="folder for checkpoints and logs")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument(
        "--segment-seconds",
        type=_finite_float,
        help="training segment length (default: 1, 5 with --lm)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--discriminators",
        help="comma-separated discriminator families (msstft, mpd, msd), or 'none' "
        "(default: the codec's; encodec: msstft; hificodec: msstft,mpd,msd)",
    )
    train.add_argument("--discriminator-filters", type=int, default=32)
    train.add_argument(
        "--shared-discriminator",
        action="store_true",
        help="one discriminator for all bandwidths (the paper trains one per bandwidth)",
    )
    train.add_argument("--no-balancer", action="store_true", help="sum the weighted losses")
    train.add_argument(
        "--weights",
        help="loss weights as time=0.1,frequency=1,adversarial=3,feature=3 (the paper's)",
    )
    train.add_argument(
        "--quantizer",
        help="rvq or grvq (HiFi-Codec's group-residual VQ; default: the codec's own)",
    )
    train.add_argument("--bandwidth-sampling", default="paper", help="paper | uniform")
    train.add_argument(
        "--learning-rate", type=_finite_float, default=3e-4, help="Adam (paper: 3e-4)"
    )
    train.add_argument("--commitment-weight", type=_finite_float, default=1.0)
    train.add_argument(
        "--frequency-loss",
        default="paper",
        help="paper (L1+L2 on mels) | audiocraft (the L2 term on log mels)",
    )
    train.add_argument(
        "--weight-init",
        default="fan_in",
        help="fan_in (variance-preserving convolutions) | pytorch (PyTorch's default)",
    )
    train.add_argument(
        "--quantizer-warmup-steps",
        type=int,
        default=0,
        help="train as a plain autoencoder this many steps before k-means (default: 0)",
    )
    train.add_argument("--checkpoint-every", type=int, default=100)
    train.add_argument("--data-limit", type=int, help="use the first N items of --data")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    lm = train.add_argument_group(
        "entropy-coding LM (with --lm; size and window default to the paper's)"
    )
    lm.add_argument("--lm-dim", type=int, help="transformer width (default: 200)")
    lm.add_argument("--lm-layers", type=int, help="transformer layers (default: 5)")
    lm.add_argument("--lm-heads", type=int, help="attention heads (default: 8)")
    lm.add_argument(
        "--lm-context-seconds", type=_finite_float, help="causal attention window (default: 3.5)"
    )
    lm.add_argument(
        "--lm-learning-rate", type=_finite_float, help="Adam learning rate (default: 1e-3)"
    )
    # Options of the codec trainer that --lm would ignore (the codec is fixed by --checkpoint).
    train.set_defaults(
        codec_option_defaults={dest: train.get_default(dest) for dest in CODEC_TRAIN_OPTIONS}
    )

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


def _codec_options(arguments: argparse.Namespace, codecs: tuple[str, ...]) -> dict[str, dict]:
    """``--checkpoint`` and ``--entropy-coding`` for the codecs whose constructor takes them."""
    from bench.registry import CODECS, codec_options

    given = {"checkpoint": arguments.checkpoint, "entropy_coding": arguments.entropy_coding}
    given = {name: value for name, value in given.items() if value}
    options: dict[str, dict] = {}
    for codec in codecs:
        CODECS.check(codec)
        accepted = codec_options(codec)
        chosen = {name: value for name, value in given.items() if name in accepted}
        if chosen:
            options[codec] = chosen
    for name in given:
        if not any(name in chosen for chosen in options.values()):
            raise ValueError(
                f"--{name.replace('_', '-')}: expected a codec that takes it (e.g. encodec), "
                f"got --codec {','.join(codecs)}"
            )
    return options


def _codec_arguments(values: list[str]) -> tuple[tuple[str, ...], dict[str, tuple[float, ...]]]:
    """The codecs of the ``--codec`` options, and the bitrates some of them were given.

    Each ``--codec`` is either ``NAME[,NAME...]`` or ``NAME:KBPS[,KBPS...]``, one codec
    with bitrates of its own; anything else (two names before a ':', a name after one)
    is refused rather than guessed.
    """
    from bench.sweep import parse_list, refuse_duplicates

    codecs: list[str] = []
    own_bitrates: dict[str, tuple[float, ...]] = {}
    for value in values:
        name, colon, bitrates = value.partition(":")
        if not colon:
            codecs += parse_list(value, str, "--codec")
            continue
        name = name.strip()
        if not name or "," in name:
            raise ValueError(
                f"--codec {value!r}: expected one codec before ':', as in --codec opus:6,12; "
                "give each codec with bitrates of its own a --codec of its own"
            )
        try:
            own_bitrates[name] = parse_list(bitrates, float, f"--codec {name}:KBPS")
        except ValueError as error:
            raise ValueError(
                f"{error}; expected --codec NAME:KBPS[,KBPS...], one codec per --codec "
                "(--codec opus:6,12 --codec encodec:1.5,3)"
            ) from None
        codecs.append(name)
    refuse_duplicates(codecs, "--codec")
    return tuple(codecs), own_bitrates


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
            return load_suite(arguments.suite, workers=arguments.workers)
        return load_suite_file(Path(arguments.config), workers=arguments.workers)
    if not arguments.codec:
        raise ValueError("--codec is required (or --resume RUN_DIR); see `bench codecs`")
    codecs, codec_bitrates = _codec_arguments(arguments.codec)
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
        codec_options=_codec_options(arguments, codecs),
        metrics=parse_list(arguments.metrics, str, "--metrics") if arguments.metrics else None,
        metric_options=_metric_options(arguments),
        workers=arguments.workers,
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
        skipped_bitrates.setdefault(skipped["codec"], []).append(skipped["bitrate"])
        supported[skipped["codec"]] = skipped["supported"]
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


def _loss_weights(text: str | None) -> dict[str, float]:
    from bench.train.trainer import PAPER_WEIGHTS

    weights = dict(PAPER_WEIGHTS)
    for part in _names(text or ""):
        name, _, value = part.partition("=")
        if name not in weights or not value:
            raise ValueError(
                f"--weights: expected NAME=VALUE with NAME in {sorted(weights)}, got {part!r}"
            )
        try:
            weights[name] = _finite_float(value)
        except argparse.ArgumentTypeError as error:
            raise ValueError(f"--weights {part!r}: {error}") from None
    return weights


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _train(arguments: argparse.Namespace) -> int:
    from bench.train.trainer import TrainSettings, train

    if arguments.lm:
        return _train_lm(arguments)
    given = [_option(dest) for dest in LM_TRAIN_OPTIONS if getattr(arguments, dest) is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: only with --lm (training the entropy-coding LM)")
    discriminators = None if arguments.discriminators is None else _names(arguments.discriminators)
    settings = TrainSettings(
        data=arguments.data,
        steps=arguments.steps,
        codec=arguments.codec,
        config=arguments.config,
        batch_size=arguments.batch_size,
        segment_seconds=(
            TrainSettings.segment_seconds
            if arguments.segment_seconds is None
            else arguments.segment_seconds
        ),
        discriminators=() if discriminators == ("none",) else discriminators,
        discriminator_filters=arguments.discriminator_filters,
        discriminator_per_bandwidth=not arguments.shared_discriminator,
        balancer=not arguments.no_balancer,
        weights=_loss_weights(arguments.weights),
        quantizer=arguments.quantizer,
        bandwidth_sampling=arguments.bandwidth_sampling,
        learning_rate=arguments.learning_rate,
        commitment_weight=arguments.commitment_weight,
        frequency_loss=arguments.frequency_loss,
        weight_init=arguments.weight_init,
        quantizer_warmup_steps=arguments.quantizer_warmup_steps,
        seed=arguments.seed,
        checkpoint_every=arguments.checkpoint_every,
        data_limit=arguments.data_limit,
    )
    model = train(settings, arguments.out, resume=arguments.resume, progress=not arguments.quiet)
    print(f"model: {model}")
    return EXIT_OK


def _train_lm(arguments: argparse.Namespace) -> int:
    from bench.train.lm import LMTrainSettings, train_lm

    if arguments.checkpoint is None:
        raise ValueError("--lm: expected --checkpoint FILE, the trained codec (its model.pt)")
    ignored = [
        _option(dest)
        for dest, default in arguments.codec_option_defaults.items()
        if getattr(arguments, dest) != default
    ]
    if ignored:
        raise ValueError(
            f"{', '.join(ignored)}: not with --lm (the codec and its configuration come from "
            "--checkpoint)"
        )
    given = {
        "segment_seconds": arguments.segment_seconds,
        "dim": arguments.lm_dim,
        "num_layers": arguments.lm_layers,
        "num_heads": arguments.lm_heads,
        "context_seconds": arguments.lm_context_seconds,
        "learning_rate": arguments.lm_learning_rate,
    }
    settings = LMTrainSettings(
        checkpoint=arguments.checkpoint,
        data=arguments.data,
        steps=arguments.steps,
        batch_size=arguments.batch_size,
        seed=arguments.seed,
        checkpoint_every=arguments.checkpoint_every,
        data_limit=arguments.data_limit,
        **{name: value for name, value in given.items() if value is not None},
    )
    model = train_lm(settings, arguments.out, resume=arguments.resume, progress=not arguments.quiet)
    print(f"model with LM: {model}")
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

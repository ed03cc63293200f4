"""``bench run``: sweep codecs x bitrates x NFE x seeds over a dataset, score and report it.

The sweep options' defaults are :class:`bench.sweep.SweepSettings`'s; how the run is
executed (``--workers``, ``--executor``) defaults in :func:`bench.sweep.run_sweep`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cli.common import (
    ASR_MODEL_HELP,
    EXIT_FAILURES,
    EXIT_OK,
    add_subcommand,
    field_defaults,
    metric_options,
    shown,
)
from bench.cli.report import add_report_options
from bench.sweep.settings import SweepSettings, parse_list, refuse_duplicates

if TYPE_CHECKING:
    from bench.sweep.plan import CodecChoice
    from bench.sweep.run import RunSummary

HELP = "sweep codecs x bitrates x NFE x seeds over a dataset and score it"
SETTINGS_DEFAULTS = field_defaults(SweepSettings)
# The options that set one settings field each, by dest: the field, and the type of the
# comma-separated values of a list (None: the value as the parser reads it).
FIELD_OPTIONS = {
    "bitrates": ("bitrates", float),
    "nfe": ("nfes", int),
    "seed": ("seeds", int),
    "data": ("data", None),
    "items": ("items", str),
    "limit": ("limit", None),
    "max_seconds": ("max_seconds", None),
    "tags": ("tags", str),
    "exclude_tags": ("exclude_tags", str),
    "metrics": ("metrics", str),
}


def _option_default(dest: str) -> object:
    """The default of the option that sets a settings field: the field's, a list as its text
    (parsed like a given value), an empty list as unset."""
    default = SETTINGS_DEFAULTS[FIELD_OPTIONS[dest][0]]
    if isinstance(default, tuple):
        return shown(default) if default else None
    return default


# Options a suite fixes, with their defaults: giving one alongside --suite is an error. Those
# not in FIELD_OPTIONS feed several fields (the conditions, codec and metric options).
SUITE_FIXED = {
    "codec": None,
    **{dest: _option_default(dest) for dest in FIELD_OPTIONS},
    "asr_model": None,
    "checkpoint": None,
    "entropy_coding": False,
}


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    run = add_subcommand(subcommands, "run", run_command, HELP)
    run.set_defaults(continue_with=_continue_with)

    def settings_option(flag: str, help: str, **options) -> None:
        """An option that sets one SweepSettings field, with its default."""
        dest = flag.removeprefix("--").replace("-", "_")
        run.add_argument(flag, default=_option_default(dest), help=help, **options)

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
    settings_option(
        "--bitrates",
        "kbps, comma-separated, for the codecs without their own; each codec runs those "
        "it supports, the rest are skipped with a note (default: every bitrate)",
    )
    settings_option("--nfe", "NFE counts for iterative decoders, comma-separated")
    settings_option("--seed", f"seed(s), comma-separated (default: {_option_default('seed')})")
    settings_option(
        "--data",
        "embedded | folder:PATH | librispeech:PATH | manifest:FILE "
        f"(default: {_option_default('data')})",
    )
    settings_option("--items", "use only these item ids, comma-separated")
    settings_option("--limit", "use the first N items (after tag filters)", type=int)
    settings_option(
        "--max-seconds", "crop every item to its first S seconds (S >= 0.25)", type=float
    )
    settings_option("--tags", "keep items with any of these tags, e.g. speech,music")
    settings_option("--exclude-tags", "drop items with any of these tags")
    settings_option("--metrics", "metric names, comma-separated (default: all)")
    run.add_argument("--asr-model", help=ASR_MODEL_HELP)
    run.add_argument(
        "--checkpoint",
        help="weights for the neural codec(s) that take one: a `bench train` checkpoint, an "
        "official release file, or official:NAME, the paper's released weights NAME (see "
        "`bench weights list`; fetched and verified on first use) (default: each codec's "
        "shipped demo model)",
    )
    run.add_argument(
        "--entropy-coding",
        action="store_true",
        help="code the tokens with the codec's entropy-coding LM (EnCodec); kbps from real bytes",
    )
    run.add_argument(
        "--workers",
        type=int,
        help="processes for coding and metrics (default: number of cores; with "
        "--executor ray, the cluster's CPUs)",
    )
    run.add_argument(
        "--executor",
        help="where tasks run: inline | process | ray, or a registered one (default: inline "
        "for one worker, else process); like --workers, not part of the run's identity",
    )
    run.add_argument(
        "--ray-address",
        help="with --executor ray: `auto` or HOST:PORT of a running Ray cluster whose nodes "
        "share this filesystem (default: a new Ray instance on this machine)",
    )
    run.add_argument("--out", default="runs", help="folder for run directories (default: runs)")
    run.add_argument("--run-dir", help="exact run directory to create (instead of under --out)")
    run.add_argument("--no-report", action="store_true", help="skip writing RUN_DIR/report")
    add_report_options(run)
    run.add_argument("--cache", help="cache folder (default: $BENCH_CACHE or ~/.cache/codec-bench)")
    run.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a killed or stopped run")
    run.add_argument("--quiet", action="store_true", help="no progress bar")


def _continue_with(interrupt: KeyboardInterrupt) -> str | None:
    # bench.sweep.RunInterrupted names the run once its directory exists.
    run_dir = getattr(interrupt, "run_dir", None)
    return f"`bench run --resume {shlex.quote(str(run_dir))}`" if run_dir else None


def run_command(arguments: argparse.Namespace) -> int:
    from bench.report.table import format_summary
    from bench.sweep import DEFAULT_CACHE_DIR, run_sweep

    if arguments.limit is not None and arguments.limit < 1:
        raise ValueError(f"--limit: expected a positive count, got {arguments.limit}")
    if arguments.run_dir and os.path.exists(os.path.join(arguments.run_dir, "config.json")):
        raise ValueError(
            f"--run-dir: expected a new folder, got {arguments.run_dir!r} which holds a run; "
            "continue it with --resume"
        )
    if arguments.resume and not os.path.isdir(arguments.resume):
        raise ValueError(f"--resume: expected a run directory, got {arguments.resume!r}")
    executor_options = {}
    if arguments.ray_address is not None:
        if arguments.executor != "ray":
            raise ValueError(
                f"--ray-address: expected --executor ray with it, got --executor "
                f"{arguments.executor or '(default)'}"
            )
        executor_options["address"] = arguments.ray_address
    settings = None if arguments.resume else settings_from_arguments(arguments)
    _check_anchor(arguments.anchor, settings, arguments.resume)
    cache_dir = None if arguments.no_cache else (arguments.cache or DEFAULT_CACHE_DIR)
    summary = run_sweep(
        settings,
        workers=arguments.workers,
        executor=arguments.executor,
        executor_options=executor_options,
        out_root=arguments.out,
        run_dir=arguments.run_dir,
        cache_dir=cache_dir,
        resume=arguments.resume,
        progress=not arguments.quiet,
    )
    overall = None
    if not arguments.no_report:
        from bench.report.build import build_report, derived_tables

        report_dir = build_report(summary.run_dir, anchor=arguments.anchor, vector=arguments.svg)
        overall = derived_tables(summary.run_dir, arguments.anchor, report_dir).summaries.get("")
    print(format_summary(summary.run_dir, overall))
    _print_notes(summary)
    return EXIT_FAILURES if summary.failures else EXIT_OK


def _check_anchor(anchor: str | None, settings: SweepSettings | None, resume: str | None) -> None:
    """Refuse a BD-rate anchor that is not a codec label of the run, before it runs."""
    if anchor is None:
        return
    if settings is not None:
        labels = list(settings.codecs)
    else:
        config = json.loads(Path(resume, "config.json").read_text())
        labels = list(config.get("settings", {}).get("codecs", []))
    if anchor not in labels:
        raise ValueError(f"--anchor: expected one of the run's codecs {labels}, got {anchor!r}")


def _print_notes(summary: RunSummary) -> None:
    """What the table does not show: model notes, skipped conditions and files, the tally."""
    from bench.store import RunStore
    from bench.sweep import format_kbps

    config = RunStore(summary.run_dir).read_config()
    for name, description in config["codecs"].items():
        for note in (description.get("model_note"), *description.get("notes", ())):
            if note:
                print(f"note: {name}: {note}")
        published = description.get("published_weights")
        for weights in (published, (published or {}).get("lm")):
            if weights:
                print(
                    f"weights: {name}: official {weights['name']} from {weights['url']}, "
                    f"SHA-256 {weights['sha256']} (checked against the "
                    f"{weights['checked_against']}); licence: {weights['licence']}"
                )
    # (label, "bitrate" or "nfe") -> the skipped values and those the codec supports.
    skipped_values: dict[tuple[str, str], tuple[list, list]] = {}
    for skipped in config.get("skipped_conditions", []):
        axis = "nfe" if "nfe" in skipped else "bitrate"
        label = skipped.get("label", skipped["codec"])
        values, _ = skipped_values.setdefault((label, axis), ([], skipped["supported"]))
        values.append(skipped[axis])
    for (codec, axis), (values, supported) in skipped_values.items():
        if axis == "nfe":
            listed = ", ".join(map(str, supported))
            print(
                f"note: skipped {codec} at NFE {', '.join(map(str, values))}: not among the "
                f"NFEs it can spend exactly ({listed})"
            )
        else:
            print(
                f"note: skipped {codec} at {format_kbps(values)} kbps: not among its bitrates "
                f"({format_kbps(supported)})"
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


def settings_from_arguments(arguments: argparse.Namespace) -> SweepSettings:
    """The sweep that the options (or ``--suite``/``--config``) name."""
    from bench.suites import load_suite, load_suite_file

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
    fields = _field_values(arguments)
    return SweepSettings(
        codecs=codecs,
        codec_bitrates=codec_bitrates,
        codec_options=_codec_options(arguments, choices),
        label_codecs={
            choice.label: choice.codec for choice in choices if choice.label != choice.codec
        },
        metric_options=metric_options(arguments),
        **fields,
    )


def _field_values(arguments: argparse.Namespace) -> dict[str, object]:
    """The settings fields the options set (those left unset keep the field's default)."""
    values = {}
    for dest, (field, kind) in FIELD_OPTIONS.items():
        value = getattr(arguments, dest)
        # An empty list counts as not given where that means "all" or "none" (`--metrics ""`).
        if value is None or (kind and value == "" and _option_default(dest) is None):
            continue
        flag = "--" + dest.replace("_", "-")
        values[field] = parse_list(value, kind, flag) if kind else value
    return values


def _codec_arguments(values: list[str]) -> list[CodecChoice]:
    """The conditions the ``--codec`` options name (see
    :func:`bench.sweep.plan.parse_codec_argument`), each label once."""
    from bench.sweep.plan import parse_codec_argument

    choices = [choice for value in values for choice in parse_codec_argument(value)]
    refuse_duplicates([choice.label for choice in choices], "--codec")
    return choices


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

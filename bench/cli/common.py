"""What the ``bench`` subcommands share: exit codes, the epilog, argument types and the
reading of option defaults from settings dataclasses. Imports no torch."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import MISSING, Field, fields

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_FAILURES = 3
EXIT_REGRESSION = 4
EXIT_NOT_COMPARABLE = 5
EXIT_INTERRUPTED = 130
# 128 + SIGPIPE, what a shell reports for a command whose reader closed the pipe.
EXIT_BROKEN_PIPE = 141

EPILOG = (
    "exit codes: 0 ok; 1 internal error; 2 bad usage or input; "
    "3 finished with unscored values (NaN); 4 regression or missing condition (bench "
    "compare); 5 not comparable: different items (bench compare); 130 interrupted; "
    "141 the output's reader left"
)
ASR_MODEL_HELP = (
    "Whisper model for `wer` and `cer`: a CTranslate2 model folder or a name (default: tiny.en)"
)


def add_subcommand(
    subcommands: argparse._SubParsersAction,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    help: str,
    epilog: str | None = EPILOG,
    **options,
) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``, which ``handler`` runs (returning the exit code)."""
    parser = subcommands.add_parser(name, help=help, epilog=epilog, **options)
    parser.set_defaults(handler=handler)
    return parser


def names(text: str) -> tuple[str, ...]:
    """``"a, b,"`` -> ``("a", "b")``."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def finite_float(text: str) -> float:
    """An argparse type for numbers: ``float`` alone takes "nan" and "inf" as well."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def field_default(field: Field) -> object:
    """A dataclass field's default (``MISSING`` for a required field)."""
    return field.default_factory() if field.default_factory is not MISSING else field.default


def field_defaults(settings_class: type) -> dict[str, object]:
    """Each field's default, by name (``MISSING`` for a required field)."""
    return {field.name: field_default(field) for field in fields(settings_class)}


def shown(default: object) -> str:
    """A default as the command line writes it."""
    if isinstance(default, dict):
        return ",".join(f"{name}={value:g}" for name, value in default.items())
    if isinstance(default, tuple):
        return ",".join(map(shown, default)) or "none"
    return f"{default:g}" if isinstance(default, float) else str(default)


def metric_options(arguments: argparse.Namespace) -> dict[str, dict[str, str]]:
    """``--asr-model`` as the option of each requested ASR metric (all when none are named)."""
    from bench.metrics.asr import METRIC_NAMES

    if not arguments.asr_model:
        return {}
    requested = names(arguments.metrics) if arguments.metrics else METRIC_NAMES
    asr_metrics = [name for name in METRIC_NAMES if name in requested]
    if not asr_metrics:
        raise ValueError(
            f"--asr-model applies to {' and '.join(METRIC_NAMES)}, which are not among the "
            f"requested metrics: {arguments.metrics}"
        )
    return {name: {"model": arguments.asr_model} for name in asr_metrics}

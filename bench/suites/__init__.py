"""Named sweep suites: fixed, versioned sweep settings kept in this folder as TOML.

``bench run --suite ci`` runs ``ci.toml``; ``bench run --config FILE`` runs a suite file
kept anywhere. A suite pins everything that decides its numbers (codecs and their
bitrates, items, metrics, seeds), so that two runs of it, on two commits, can be
compared condition by condition with ``bench compare``.
"""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

from bench.registry import did_you_mean
from bench.sweep import SweepSettings

SUITES_DIR = Path(__file__).resolve().parent
# Keys a suite file may set: everything that decides a run's numbers (how the run is
# executed, its workers and executor, belongs to the machine, not to the suite).
SUITE_KEYS = {field.name for field in fields(SweepSettings)}


def suite_names() -> list[str]:
    return sorted(path.stem for path in SUITES_DIR.glob("*.toml"))


def load_suite(name: str) -> SweepSettings:
    """The settings of suite ``name``; ``ValueError`` names the known suites or bad keys."""
    path = SUITES_DIR / f"{name}.toml"
    if not path.is_file():
        raise ValueError(did_you_mean("suite", name, suite_names()))
    return load_suite_file(path)


def load_suite_file(path: Path) -> SweepSettings:
    """The settings in the suite file ``path``; ``ValueError`` names the file and the fault."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise ValueError(f"suite file {str(path)!r}: cannot read it: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"suite file {str(path)!r}: expected TOML: {error}") from None
    data.pop("description", None)
    unknown = sorted(set(data) - SUITE_KEYS)
    if unknown:
        raise ValueError(
            f"suite file {str(path)!r}: unknown keys {unknown}; expected some of "
            f"{sorted(SUITE_KEYS)}"
        )
    try:
        return SweepSettings.from_json(data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"suite file {str(path)!r}: {error}") from None

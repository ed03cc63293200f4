"""The harness never names a concrete codec: it reaches codecs through ``bench.registry``.

ARCHITECTURE.md: dependencies point one way, ``bench.cli -> bench.* -> bench.codecs``, and
of ``bench.codecs`` the harness imports only the interface and the shared blocks, so that a
new codec is its folder plus one registration.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO_ROOT

HARNESS = REPO_ROOT / "bench"
CODECS = REPO_ROOT / "codecs"
# The one place that names codec implementations, by import path.
REGISTRY = HARNESS / "registry.py"


def codec_families() -> set[str]:
    """The codec packages (``encodec``, ``classic``, ...): every package under ``codecs/``
    but the shared blocks."""
    return {
        path.parent.name for path in CODECS.glob("*/__init__.py") if path.parent.name != "modules"
    }


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules_naming_a_codec(families: set[str]) -> dict[str, set[str]]:
    """Harness modules (but the registry) that import a codec family, with what they import."""
    prefixes = tuple(f"bench.codecs.{family}" for family in families)
    found = {}
    for path in sorted(HARNESS.rglob("*.py")):
        if path == REGISTRY:
            continue
        named = {name for name in imported_modules(path) if name.startswith(prefixes)}
        if named:
            found[path.relative_to(REPO_ROOT).as_posix()] = named
    return found


def test_the_codec_families_are_found():
    assert {"classic", "encodec", "hificodec"} <= codec_families()


def test_the_harness_reaches_codecs_only_through_the_registry():
    offenders = modules_naming_a_codec(codec_families())
    assert not offenders, offenders

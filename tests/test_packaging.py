"""Packaging: `codecs/` ships as `bench.codecs`, with every subpackage, the corpus and the
EnCodec demo checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import zipfile

import pytest
from helpers import REPO_ROOT


def _declared_packages() -> set[str]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return set(config["tool"]["setuptools"]["packages"])


def _packages_on_disk() -> set[str]:
    found = set()
    for top, name in (("bench", "bench"), ("codecs", "bench.codecs")):
        for init in (REPO_ROOT / top).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO_ROOT / top).parts
            found.add(".".join((name, *relative)))
    return found


def test_every_package_on_disk_is_declared():
    assert _packages_on_disk() == _declared_packages()


@pytest.mark.slow
def test_wheel_maps_codecs_to_bench_codecs_and_ships_the_corpus(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO_ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "bench/codecs/base.py" in names and "bench/codecs/classic/opus.py" in names
    assert not any(name.startswith("codecs/") for name in names), "would shadow the stdlib"
    manifest = [
        json.loads(line)
        for line in (REPO_ROOT / "bench/data/embedded/manifest.jsonl").read_text().splitlines()
    ]
    for entry in manifest:
        assert f"bench/data/embedded/{entry['file']}" in names
    assert "bench/data/embedded/PROVENANCE.md" in names
    assert "bench/report/templates/report.html.j2" in names
    assert "bench/suites/ci.toml" in names
    assert "bench/codecs/encodec/checkpoints/encodec_tiny_demo.pt" in names
    assert "bench/codecs/encodec/checkpoints/MODEL_CARD.md" in names


def test_encodec_demo_checkpoint_fits_the_budget_and_carries_its_card():
    """The demo model ships in the package: at most 5 MB, with its model card beside it."""
    from bench.codecs.checkpoint import load_checkpoint
    from bench.codecs.encodec.codec import DEMO_CHECKPOINT

    assert DEMO_CHECKPOINT.stat().st_size <= 5_000_000
    checkpoint = load_checkpoint(DEMO_CHECKPOINT, "encodec")
    assert checkpoint.metadata["stored_as"] == "float16" and checkpoint.step > 0
    card = (DEMO_CHECKPOINT.parent / "MODEL_CARD.md").read_text()
    assert checkpoint.hash in card and "not the" in card

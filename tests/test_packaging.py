"""Packaging: `codecs/` ships as `bench.codecs`, with every subpackage, the corpus and the
demo checkpoints of EnCodec and HiFi-Codec."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import zipfile

import pytest
from helpers import REPO_ROOT

# The neural codecs whose small demo checkpoints ship inside the package.
DEMO_CODECS = ("encodec", "hificodec", "flowmac", "soundstorm", "samplernn")
# The network whose hash each demo's card must quote: the model the codec is named after.
CARD_NETWORK = {"soundstorm": "soundstorm", "samplernn": "model"}


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
    for codec in DEMO_CODECS:
        assert f"bench/codecs/{codec}/checkpoints/{codec}_tiny_demo.pt" in names
        assert f"bench/codecs/{codec}/checkpoints/MODEL_CARD.md" in names
    assert "bench/codecs/samplernn/checkpoints/samplernn_decoder_demo.pt" in names


@pytest.mark.parametrize("codec", DEMO_CODECS)
def test_demo_checkpoint_fits_the_budget_and_carries_its_card(codec):
    """The demo model ships in the package: at most 5 MB, with its model card beside it."""
    from bench.codecs.checkpoint import load_checkpoint

    from bench.registry import CODECS

    path = CODECS.factory(codec).demo_checkpoint
    assert path.stat().st_size <= 5_000_000
    checkpoint = load_checkpoint(path, codec)
    assert checkpoint.metadata["stored_as"].startswith("float16") and checkpoint.step > 0
    card = (path.parent / "MODEL_CARD.md").read_text()
    assert checkpoint.network(CARD_NETWORK.get(codec, "codec")).hash in card
    assert "not the" in card


def test_the_samplernn_demos_ship_together_within_the_budget():
    """The unconditional model and the codec decoder: 5 MB at most together, both carded."""
    from bench.codecs.checkpoint import load_checkpoint
    from bench.codecs.samplernn.codec import DEMO_DECODER, DEMO_UNCONDITIONAL

    assert DEMO_UNCONDITIONAL.stat().st_size + DEMO_DECODER.stat().st_size <= 5_000_000
    card = (DEMO_DECODER.parent / "MODEL_CARD.md").read_text()
    for path in (DEMO_UNCONDITIONAL, DEMO_DECODER):
        assert load_checkpoint(path, "samplernn").network("model").hash in card

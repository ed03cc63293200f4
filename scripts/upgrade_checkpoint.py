"""Rewrite codec-bench checkpoints of an older format in the current one, weights untouched.

    python scripts/upgrade_checkpoint.py codecs/*/checkpoints/*_tiny_demo.pt

Loading already upgrades a format-1 file in memory (``bench.codecs.checkpoint``); this writes
the result back, with each network's configuration passed through its codec's configuration
class, which drops fields that class no longer has (EnCodec's unused ``extra``). Every
network's hash is printed before and after: they must not change.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.codecs.checkpoint import load_checkpoint

from bench.registry import CODECS


def upgrade(path: Path) -> None:
    checkpoint = load_checkpoint(path)
    before = {name: network.hash for name, network in checkpoint.networks.items()}
    config_class = getattr(CODECS.factory(checkpoint.codec), "config_class", None)
    if config_class is not None and "codec" in checkpoint.networks:
        codec = checkpoint.network("codec")
        codec.config = config_class.from_json(codec.config).to_json()
    after = checkpoint.save(path)
    if after != before:
        raise SystemExit(f"{path}: network hashes changed: {before} -> {after}")
    for name, value in after.items():
        print(f"{path}: {name} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="CHECKPOINT")
    for path in parser.parse_args().paths:
        upgrade(path)


if __name__ == "__main__":
    main()

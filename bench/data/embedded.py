"""``embedded``: the small default corpus shipped inside the package.

Speech (real LibriVox and "cards" recordings, flite voices), music, general audio and
noisy speech, a few minutes in all, so that ``bench run`` works without downloading
anything. The files live in ``bench/data/embedded/``, listed by ``manifest.jsonl`` and
documented item by item in ``PROVENANCE.md``; ``scripts/build_embedded_corpus.py``
generates all three, deterministically.

Tags: ``speech``, ``music``, ``audio`` (general sound that is neither speech nor music,
EnCodec's "general audio" class), ``noisy`` (speech mixed with noise) and ``synthetic``
(synthesised speech or music; a noisy mix inherits it from its clean speech).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.data.item import DatasetScheme, Item, Listing

# Wheels install the package as plain files, so the audio has real paths soundfile can open.
EMBEDDED_DIR = Path(__file__).with_name("embedded")
MANIFEST_PATH = EMBEDDED_DIR / "manifest.jsonl"


@dataclass(frozen=True)
class EmbeddedEntry:
    """One manifest row: the item plus the facts about its file and origin."""

    item: Item
    sample_rate: int
    duration_seconds: float
    source: str
    licence: str


def embedded_entries() -> tuple[EmbeddedEntry, ...]:
    """Every row of the embedded manifest, in manifest order."""
    rows = [json.loads(line) for line in MANIFEST_PATH.read_text(encoding="utf-8").splitlines()]
    return tuple(
        EmbeddedEntry(
            item=Item(
                id=row["id"],
                path=EMBEDDED_DIR / row["file"],
                transcript=row["transcript"],
                speaker=row["speaker"],
                tags=frozenset(row["tags"]),
            ),
            sample_rate=row["sample_rate"],
            duration_seconds=row["duration_seconds"],
            source=row["source"],
            licence=row["licence"],
        )
        for row in rows
    )


def load_embedded() -> tuple[Item, ...]:
    """The items of the embedded corpus."""
    return tuple(entry.item for entry in embedded_entries())


SCHEME = DatasetScheme(lambda: Listing(load_embedded()), takes_path=False, example="embedded")

"""``librispeech:PATH``: the LibriSpeech corpus layout (Panayotov et al., ICASSP 2015).

The layout, as distributed on openslr.org (resource 12)::

    <split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
    <split>/<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac

Each ``trans.txt`` line is ``<utterance-id> <TRANSCRIPT>``. ``PATH`` may be one split
(``test-clean``) or any folder above several; every ``*.trans.txt`` below it is read. The
transcript files are the source of truth: an utterance listed there whose FLAC is missing
is still an item, so the harness reports it instead of the dataset shrinking silently.
Items come in the order of the sorted transcript paths, then line order.
"""

from __future__ import annotations

from pathlib import Path

from bench.data.folder import require_directory
from bench.data.item import DatasetError, DatasetScheme, Item, Listing

TRANSCRIPT_SUFFIX = ".trans.txt"


def load_librispeech(root: Path) -> tuple[Item, ...]:
    """List the utterances of every ``*.trans.txt`` under ``root`` as items tagged speech."""
    require_directory(root, "librispeech")
    transcript_files = sorted(root.rglob(f"*{TRANSCRIPT_SUFFIX}"))
    if not transcript_files:
        raise DatasetError(
            f"librispeech: no *{TRANSCRIPT_SUFFIX} file under {str(root)!r}; expected the "
            "LibriSpeech layout <split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt "
            "(for plain audio files use folder:PATH)"
        )
    return tuple(item for path in transcript_files for item in _read_chapter(path))


def _read_chapter(transcript_file: Path) -> list[Item]:
    chapter_folder = transcript_file.parent
    speaker, chapter = chapter_folder.parent.name, chapter_folder.name
    expected_prefix = f"{speaker}-{chapter}-"
    items = []
    lines = transcript_file.read_text(encoding="utf-8").splitlines()
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        utterance_id, _, transcript = line.strip().partition(" ")
        if not utterance_id.startswith(expected_prefix) or not transcript.strip():
            raise DatasetError(
                f"librispeech: {transcript_file}:{line_number}: expected "
                f"'{expected_prefix}<utterance> <TRANSCRIPT>' (speaker and chapter from the "
                f"folders {speaker}/{chapter}/), got {line.strip()!r}"
            )
        items.append(
            Item(
                id=utterance_id,
                path=chapter_folder / f"{utterance_id}.flac",
                transcript=transcript.strip(),
                speaker=speaker,
                tags=frozenset({"speech"}),
            )
        )
    return items


SCHEME = DatasetScheme(
    lambda root: Listing(load_librispeech(root)),
    takes_path=True,
    example="librispeech:/data/LibriSpeech/test-clean",
)

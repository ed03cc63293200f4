"""``folder:PATH``: every audio file under a folder, recursively, with optional sidecar text.

Files with the extensions in ``AUDIO_EXTENSIONS`` (any letter case) are items, sorted by
their path relative to the folder so that the order is the same on every machine. The id
is that relative path without its extension, with ``/`` separators. A ``<stem>.txt`` file
next to the audio holds its transcript. Hidden files and folders (names starting with
``.``, such as macOS ``._x.wav`` resource forks) are skipped. Symbolic links are followed.
An audio name that is not a regular file (a FIFO, a device such as a link to
``/dev/zero``, a symbolic link loop, a broken link) is skipped with a note in the listing:
reading a FIFO or a device would hang the run.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.audio import AudioError, require_regular_file
from bench.data.item import DatasetError, DatasetScheme, Item, Listing

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg"})


def require_directory(path: Path, scheme: str) -> None:
    """Raise :class:`DatasetError` unless ``path`` is an existing folder."""
    if not path.exists():
        raise DatasetError(f"{scheme}: folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise DatasetError(f"{scheme}: expected a folder, got the file {str(path)!r}")


def read_sidecar_transcript(audio_path: Path) -> str | None:
    """The stripped text of ``<stem>.txt`` next to ``audio_path``, or None if absent or blank."""
    sidecar = audio_path.with_suffix(".txt")
    if not sidecar.is_file():
        return None
    return sidecar.read_text(encoding="utf-8").strip() or None


def load_folder(root: Path) -> Listing:
    """List the audio files under ``root`` as items (see the module docstring for the rules)."""
    require_directory(root, "folder")
    relative_paths = []
    skipped = []
    for relative in sorted(_audio_files(root), key=lambda path: path.as_posix()):
        try:
            require_regular_file(root / relative)
        except AudioError as error:
            skipped.append(str(error))
            continue
        relative_paths.append(relative)
    if not relative_paths:
        raise DatasetError(
            f"folder: no audio files under {str(root)!r}; expected files ending in "
            f"{', '.join(sorted(AUDIO_EXTENSIONS))} (any letter case)"
            + (f"; skipped: {'; '.join(skipped)}" if skipped else "")
        )
    items = tuple(
        Item(
            id=relative.with_suffix("").as_posix(),
            path=root / relative,
            transcript=read_sidecar_transcript(root / relative),
        )
        for relative in relative_paths
    )
    return Listing(items, tuple(skipped))


def _audio_files(root: Path) -> list[Path]:
    """Audio file paths relative to ``root``, in no particular order."""
    found: list[Path] = []
    visited_folders: set[str] = set()
    for folder, subfolders, file_names in os.walk(root, followlinks=True):
        # A link pointing back up the tree would otherwise make the walk endless.
        real_folder = os.path.realpath(folder)
        if real_folder in visited_folders:
            subfolders.clear()
            continue
        visited_folders.add(real_folder)
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        relative_folder = Path(folder).relative_to(root)
        found.extend(
            relative_folder / name
            for name in file_names
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS
        )
    return found


SCHEME = DatasetScheme(load_folder, takes_path=True, example="folder:/data/wavs")

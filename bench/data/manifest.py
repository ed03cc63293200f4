"""``manifest:FILE``: a CSV or JSON Lines list of audio files with optional metadata.

The format follows the file extension: ``.csv`` is RFC 4180 CSV with a header row,
``.jsonl`` / ``.json-lines`` holds one JSON object per line (JSON Lines). Fields:

- ``path`` (required): the audio file; a relative path is relative to the manifest's folder;
- ``id``: unique item id; by default ``path`` without its extension (relative to the
  manifest's folder when the file lies below it);
- ``transcript``, ``speaker``: text; empty means none;
- ``tags``: in CSV, tags separated by ``;`` (``speech;noisy``), because ``,`` already
  separates the columns; in JSONL, a list of strings (``["speech", "noisy"]``). A JSONL
  string is refused: nothing in JSON says how it splits (``"speech, music"`` would
  otherwise become one tag).

Other fields are ignored, so a manifest may carry durations or notes for other tools. A
row whose audio file is missing is still an item: the harness reports it as NaN with a
reason. Errors name the manifest line (line 1 of a CSV is its header).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.data.item import DatasetError, DatasetScheme, Item, Listing

TAG_SEPARATOR = ";"
FIELDS = ("path", "id", "transcript", "speaker", "tags")
CSV_EXTENSIONS = frozenset({".csv"})
JSONL_EXTENSIONS = frozenset({".jsonl", ".json-lines"})


def load_manifest(manifest: Path) -> tuple[Item, ...]:
    """Read a CSV or JSONL manifest into items, in file order."""
    if not manifest.exists():
        raise DatasetError(f"manifest: file {str(manifest)!r} does not exist")
    if not manifest.is_file():
        raise DatasetError(
            f"manifest: expected a CSV or JSONL file, got the folder {str(manifest)!r}"
        )
    extension = manifest.suffix.lower()
    if extension in CSV_EXTENSIONS:
        rows = _csv_rows(manifest)
        tag_separator: str | None = TAG_SEPARATOR
    elif extension in JSONL_EXTENSIONS:
        rows = _jsonl_rows(manifest)
        tag_separator = None
    else:
        known = ", ".join(sorted(CSV_EXTENSIONS | JSONL_EXTENSIONS))
        raise DatasetError(
            f"manifest: cannot tell the format of {str(manifest)!r} from its extension "
            f"{extension or '(none)'!r}; expected one of {known}"
        )

    items: list[Item] = []
    first_line_of_id: dict[str, int] = {}
    for line_number, row in rows:
        item = _row_to_item(manifest, line_number, row, tag_separator)
        if item.id in first_line_of_id:
            raise DatasetError(
                f"manifest: {manifest}:{line_number}: duplicate id {item.id!r}, first used on "
                f"line {first_line_of_id[item.id]}; expected every id to be unique"
            )
        first_line_of_id[item.id] = line_number
        items.append(item)
    return tuple(items)


def _csv_rows(manifest: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with manifest.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        if "path" not in header:
            raise DatasetError(
                f"manifest: {manifest}:1: the header has no 'path' column; expected a header "
                f"with 'path' and optionally {', '.join(FIELDS[1:])}, got {header}"
            )
        for row in reader:
            given = _csv_field_count(row, len(header))
            if given != len(header):
                raise DatasetError(
                    f"manifest: {manifest}:{reader.line_num}: expected {len(header)} fields "
                    f"({', '.join(header)}), got {given}"
                )
            yield reader.line_num, row


def _csv_field_count(row: dict[str | None, Any], header_length: int) -> int:
    # DictReader files surplus fields under the key None and fills missing ones with None.
    if None in row:
        return header_length + len(row[None])
    return sum(value is not None for value in row.values())


def _jsonl_rows(manifest: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with manifest.open(encoding="utf-8-sig") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(
                    f"manifest: {manifest}:{line_number}: expected one JSON object per line, "
                    f"cannot parse it: {error.msg} at column {error.colno}"
                ) from None
            if not isinstance(row, dict):
                raise DatasetError(
                    f"manifest: {manifest}:{line_number}: expected a JSON object such as "
                    f'{{"path": "a.wav"}}, got a {type(row).__name__}'
                )
            yield line_number, row


def _row_to_item(
    manifest: Path, line_number: int, row: dict[str, Any], tag_separator: str | None
) -> Item:
    where = f"manifest: {manifest}:{line_number}"
    path_text = _text_field(row, "path", where)
    if path_text is None:
        raise DatasetError(f"{where}: expected a non-empty 'path', got {row.get('path')!r}")
    folder = manifest.parent
    path = folder / path_text  # an absolute path_text replaces the folder
    return Item(
        id=_text_field(row, "id", where) or _default_id(folder, path, path_text),
        path=path,
        transcript=_text_field(row, "transcript", where),
        speaker=_text_field(row, "speaker", where),
        tags=_tags_field(row.get("tags"), where, tag_separator),
    )


def _default_id(folder: Path, path: Path, path_text: str) -> str:
    """``path`` without its extension, relative to the manifest's folder when below it."""
    relative = path.relative_to(folder) if path.is_relative_to(folder) else Path(path_text)
    return relative.with_suffix("").as_posix()


def _text_field(row: dict[str, Any], name: str, where: str) -> str | None:
    """A stripped text field; None when absent or empty. JSON numbers are accepted as text
    because numeric speaker and utterance ids (LibriSpeech's 1089) are common."""
    value = row.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DatasetError(f"{where}: expected '{name}' to be text, got {value!r}")
    return str(value).strip() or None


def _tags_field(value: Any, where: str, separator: str | None) -> frozenset[str]:
    """Tags from a list of strings, or from a string where the format has a ``separator``."""
    if value is None:
        return frozenset()
    if isinstance(value, str) and separator is not None:
        parts = value.split(separator)
    elif isinstance(value, list) and all(isinstance(tag, str) for tag in value):
        parts = value
    else:
        expected = (
            f"a string such as 'speech{separator}noisy'"
            if separator is not None
            else 'a list of strings such as ["speech", "noisy"]'
        )
        raise DatasetError(f"{where}: expected 'tags' as {expected}, got {value!r}")
    return frozenset(tag.strip() for tag in parts if tag.strip())


SCHEME = DatasetScheme(
    lambda manifest: Listing(load_manifest(manifest)),
    takes_path=True,
    example="manifest:/data/items.csv",
)

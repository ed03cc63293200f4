"""Where results live: an append-only, resumable results file per run, and a
content-addressed cache shared between runs.

``runs/<run-id>/results.jsonl`` gets one JSON row per (condition, item, metric), flushed
and fsynced as each item completes, so a killed run loses at most the items in flight;
a torn last line is cut off when the run is resumed. The cache stores decoded audio
(with its payload and timings) under a hash of everything that determines it, and
metric values under that hash plus the metric's name and versions. Writes go to a
temporary file first and are renamed into place, so readers never see half a file.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

CONFIG_FILE = "config.json"
LISTENING_DIR = "listening"
DEFAULT_CACHE_DIR = Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "codec-bench"))
RESULTS_FILE = "results.jsonl"


def content_key(fields: dict) -> str:
    """A stable SHA-256 over canonical JSON of ``fields``."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_atomically(path: Path, data: bytes) -> None:
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except FileNotFoundError:  # creating folders only when missing keeps writes cheap
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        # mkstemp makes the file private; results and reports are meant to be shared.
        os.fchmod(descriptor, 0o644)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip(".") or "item"


def item_file_stem(item: str) -> str:
    """A file name for an item id, unique per id: a readable slug plus a short hash.

    Item ids can be relative paths or free text (manifests). The slug alone would give
    "a b", "a_b" and "a+b" one file, so every place that names a file after an item
    (listening copies, spectrograms, MUSHRA stimuli) uses this instead.
    """
    digest = hashlib.sha256(item.encode()).hexdigest()[:10]
    return f"{_safe_name(item)[:80]}-{digest}"


def condition_slug(codec: str, bitrate: float, nfe: int | None) -> str:
    """A folder name for a condition: ``opus_6kbps``, ``flowmac_3kbps_nfe8``.

    Unique per condition: codec names are registry identifiers and the rest is numbers.
    """
    nfe_part = f"_nfe{nfe}" if nfe is not None else ""
    return _safe_name(f"{codec}_{bitrate:g}kbps{nfe_part}")


class RunStore:
    """One run's directory: ``config.json`` (written once) and ``results.jsonl``."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.config_path = self.run_dir / CONFIG_FILE
        self.results_path = self.run_dir / RESULTS_FILE

    def reference_audio_path(self, item: str) -> Path:
        """Where the run keeps an item's reference (as the codecs got it) for listening."""
        return self.run_dir / LISTENING_DIR / "reference" / f"{item_file_stem(item)}.flac"

    def decoded_audio_path(self, codec: str, bitrate: float, nfe: int | None, item: str) -> Path:
        """Where the run keeps an item's decoded audio under one condition for listening."""
        slug = condition_slug(codec, bitrate, nfe)
        return self.run_dir / LISTENING_DIR / slug / f"{item_file_stem(item)}.flac"

    def create(self, config: dict) -> None:
        if self.config_path.exists():
            raise FileExistsError(f"run directory already holds a run: {self.run_dir}")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.config_path, json.dumps(config, indent=2).encode() + b"\n")
        self.results_path.touch()

    def read_config(self) -> dict:
        if not self.config_path.exists():
            raise FileNotFoundError(
                f"expected a run directory with {CONFIG_FILE}, got {self.run_dir}"
            )
        return json.loads(self.config_path.read_text())

    def repair(self) -> int:
        """Cut a torn last line left by a killed writer; returns the bytes removed."""
        if not self.results_path.exists():
            return 0
        data = self.results_path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep == len(data):
            return 0
        with open(self.results_path, "r+b") as handle:
            handle.truncate(keep)
        return len(data) - keep

    def append(self, rows: Iterable[dict]) -> None:
        """Append rows as one write, flushed to disk before returning."""
        text = "".join(json.dumps(_strict_json(row), allow_nan=False) + "\n" for row in rows)
        if not text:
            return
        with open(self.results_path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def rows(self) -> Iterator[dict]:
        """Every complete row; a torn last line (from a kill) is skipped."""
        if not self.results_path.exists():
            return
        with open(self.results_path, encoding="utf-8") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    return
                yield json.loads(line)


def _strict_json(row: dict) -> dict:
    # NaN is not JSON; a failed value is written as null next to its failure reason.
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in row.items()
    }


class Cache:
    """Content-addressed decoded audio and metric values, shareable between runs."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / key[:2] / f"{key}{suffix}"

    def get_decoded(self, key: str) -> tuple[np.ndarray, dict] | None:
        """The decoded audio ``(channels, samples)`` and its metadata, or ``None``."""
        meta_path = self._path("decoded", key, ".json")
        audio_path = self._path("decoded", key, ".npy")
        # The metadata is written last, so its presence means the entry is complete.
        if not meta_path.exists():
            return None
        return np.load(audio_path), json.loads(meta_path.read_text())

    def decoded_meta(self, key: str) -> dict | None:
        meta_path = self._path("decoded", key, ".json")
        return json.loads(meta_path.read_text()) if meta_path.exists() else None

    def put_decoded(self, key: str, audio: np.ndarray, payload: bytes, meta: dict) -> None:
        buffer = _npy_bytes(np.ascontiguousarray(audio, dtype=np.float32))
        write_atomically(self._path("decoded", key, ".npy"), buffer)
        write_atomically(self._path("decoded", key, ".bin"), payload)
        write_atomically(self._path("decoded", key, ".json"), json.dumps(meta).encode())

    def payload(self, key: str) -> bytes:
        return self._path("decoded", key, ".bin").read_bytes()

    def get_metric(self, key: str) -> dict | None:
        path = self._path("metrics", key, ".json")
        return json.loads(path.read_text()) if path.exists() else None

    def put_metric(self, key: str, entry: dict) -> None:
        write_atomically(self._path("metrics", key, ".json"), json.dumps(entry).encode())


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()

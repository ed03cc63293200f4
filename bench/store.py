"""Where results live: an append-only, resumable results file per run, and a
content-addressed cache shared between runs.

``runs/<run-id>/results.jsonl`` gets one JSON row per (condition, item, metric), flushed
and fsynced as each item completes, so a killed run loses at most the items in flight;
a torn last line is cut off when the run is resumed. The cache stores decoded audio
(with its payload and timings) under a hash of everything that determines it, and
metric values under that hash plus the metric's name and versions. Writes go to a
temporary file first and are renamed into place, so readers never see half a file.
Every cache entry carries a SHA-256 digest of its bytes and is checked on read: an
entry that fails the check (edited, truncated, flipped bits, an older format) is a miss,
discarded and counted, never served. A run holds an exclusive lock on its directory,
so that two processes never append to one ``results.jsonl``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from bench.sweep.records import Record

# Entries with digests live apart from the digest-less ones of earlier versions, so that an
# older bench sharing the cache neither reads these nor has its own entries deleted.
CACHE_LAYOUT = "v2"
CONFIG_FILE = "config.json"
DECODED_SUFFIXES = (".json", ".npy", ".bin")
LISTENING_DIR = "listening"
DEFAULT_CACHE_DIR = Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "codec-bench"))
LOCK_FILE = ".lock"
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


def writable_folder(path: str | os.PathLike, option: str) -> Path:
    """``path`` as a folder that exists (created if missing) and takes new files.

    Raises ``ValueError`` naming ``option`` otherwise, before a run spends any time. The
    write is tried for real: permission bits alone say nothing when running as root.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".bench-write-check."):
            pass
    except OSError as error:
        kind = "a file" if folder.is_file() else "not writable"
        raise ValueError(
            f"{option}: expected a folder that can be written, got {str(folder)!r} ({kind}: "
            f"{error.strerror or error})"
        ) from None
    return folder


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


def condition_slug(label: str, bitrate: float, nfe: int | None) -> str:
    """A folder name for a condition: ``opus_6kbps``, ``flowmac_3kbps_nfe8``.

    Unique per condition: labels are identifiers (codec names, or letters, digits, ``-`` and
    ``_``) and the rest is numbers.
    """
    nfe_part = f"_nfe{nfe}" if nfe is not None else ""
    return _safe_name(f"{label}_{bitrate:g}kbps{nfe_part}")


class RunStore:
    """One run's directory: ``config.json`` (written once) and ``results.jsonl``."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.config_path = self.run_dir / CONFIG_FILE
        self.results_path = self.run_dir / RESULTS_FILE

    def reference_audio_path(self, item: str) -> Path:
        """Where the run keeps an item's reference (as the codecs got it) for listening."""
        return self.run_dir / LISTENING_DIR / "reference" / f"{item_file_stem(item)}.flac"

    def decoded_audio_path(self, label: str, bitrate: float, nfe: int | None, item: str) -> Path:
        """Where the run keeps an item's decoded audio under one condition for listening."""
        slug = condition_slug(label, bitrate, nfe)
        return self.run_dir / LISTENING_DIR / slug / f"{item_file_stem(item)}.flac"

    def create(self, config: dict) -> None:
        if self.config_path.exists():
            raise FileExistsError(f"run directory already holds a run: {self.run_dir}")
        writable_folder(self.run_dir, "run directory")
        write_atomically(self.config_path, json.dumps(config, indent=2).encode() + b"\n")
        self.results_path.touch()

    def read_config(self) -> dict:
        """The run's ``config.json``; ``ValueError`` naming the folder if it is not a run."""
        if not self.config_path.is_file():
            raise ValueError(f"expected a run directory with {CONFIG_FILE}, got {self.run_dir}")
        try:
            config = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(
                f"{self.config_path}: expected the run's JSON configuration, got invalid JSON "
                f"({error})"
            ) from None
        if not isinstance(config, dict):
            raise ValueError(
                f"{self.config_path}: expected a JSON object, got {type(config).__name__}"
            )
        return config

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run directory exclusively for the block.

        ``ValueError`` naming the holder's pid if another process holds it. The lock is
        the kernel's (``flock``), so it is released when its holder exits, however it
        exits; the pid in the file is only there to name the holder.
        """
        lock_path = self.run_dir / LOCK_FILE
        with open(lock_path, "a+", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                raise ValueError(
                    f"{self.run_dir} is in use by another bench process (pid {holder}); "
                    "wait for it to finish or stop it, then resume"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield

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

    def append(self, records: Iterable[Record]) -> None:
        """Append records as one write, flushed to disk before returning."""
        text = "".join(
            json.dumps(_strict_json(record.to_json()), allow_nan=False) + "\n" for record in records
        )
        if not text:
            return
        with open(self.results_path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def rows(self) -> Iterator[dict]:
        """Every complete row, as a dict of the current schema (see
        :mod:`bench.sweep.records`); a torn last line (from a kill) is skipped.

        Raises ``ValueError`` naming the file and line for a complete line that is not a
        result row of a schema version this bench reads: that is damage (or another
        bench's file), not a kill, and no row after it can be trusted.
        """
        for record in self.records():
            yield record.to_json()

    def records(self) -> Iterator[Record]:
        """Every complete row as a :class:`bench.sweep.records.Record`; see :meth:`rows`."""
        # Imported here: the schema lives with the sweep, which imports this module.
        from bench.sweep.records import Record

        if not self.results_path.exists():
            return
        with open(self.results_path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.endswith(b"\n"):
                    return
                where = f"{self.results_path}: line {number}"
                try:
                    row = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError) as error:
                    raise ValueError(
                        f"{where}: expected a JSON result row, got invalid JSON ({error})"
                    ) from None
                if not isinstance(row, dict):
                    raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
                try:
                    record = Record.from_json(row)
                except ValueError as error:
                    raise ValueError(f"{where}: {error}") from None
                yield record


def _strict_json(row: dict) -> dict:
    # NaN is not JSON; a failed value is written as null next to its failure reason.
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in row.items()
    }


class Cache:
    """Content-addressed decoded audio and metric values, shareable between runs.

    Each read checks the entry against the SHA-256 digests written with it. A bad entry
    is deleted and its key recorded in ``discarded``; the read returns ``None``, a miss,
    so the caller recomputes the value and the write replaces the entry.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        # Keys of the entries that failed their check, as "decoded/KEY" or "metrics/KEY".
        self.discarded: set[str] = set()

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / CACHE_LAYOUT / kind / key[:2] / f"{key}{suffix}"

    def _discard(self, kind: str, key: str, suffixes: tuple[str, ...]) -> None:
        self.discarded.add(f"{kind}/{key}")
        for suffix in suffixes:
            self._path(kind, key, suffix).unlink(missing_ok=True)

    def _read_sealed(self, kind: str, key: str, suffixes: tuple[str, ...]) -> dict | None:
        """The JSON document at ``kind/key.json`` if its digest holds, else ``None``.

        A missing file is a plain miss; anything else wrong discards the whole entry
        (``suffixes`` are its files).
        """
        try:
            data = self._path(kind, key, ".json").read_bytes()
        except FileNotFoundError:
            return None
        document = _unseal(data)
        if document is None:
            self._discard(kind, key, suffixes)
        return document

    def _decoded_file(self, key: str, suffix: str, digest: str) -> bytes | None:
        """The bytes of one file of a decoded entry if they match ``digest``."""
        try:
            data = self._path("decoded", key, suffix).read_bytes()
        except FileNotFoundError:
            data = None
        if data is None or _digest(data) != digest:
            self._discard("decoded", key, DECODED_SUFFIXES)
            return None
        return data

    def get_decoded(self, key: str) -> tuple[np.ndarray, dict] | None:
        """The decoded audio ``(channels, samples)`` and its metadata, or ``None``."""
        # The metadata is written last, so its presence means the entry is complete.
        document = self._read_sealed("decoded", key, DECODED_SUFFIXES)
        if document is None:
            return None
        data = self._decoded_file(key, ".npy", document["audio_sha256"])
        if data is None:
            return None
        return np.load(io.BytesIO(data), allow_pickle=False), document["meta"]

    def decoded_meta(self, key: str) -> dict | None:
        """The metadata of a decoded entry (its audio is checked when read)."""
        document = self._read_sealed("decoded", key, DECODED_SUFFIXES)
        return None if document is None else document["meta"]

    def put_decoded(self, key: str, audio: np.ndarray, payload: bytes, meta: dict) -> None:
        buffer = _npy_bytes(np.ascontiguousarray(audio, dtype=np.float32))
        write_atomically(self._path("decoded", key, ".npy"), buffer)
        write_atomically(self._path("decoded", key, ".bin"), payload)
        document = {
            "meta": meta,
            "audio_sha256": _digest(buffer),
            "payload_sha256": _digest(payload),
        }
        write_atomically(self._path("decoded", key, ".json"), _seal(document))

    def discard_decoded(self, key: str) -> None:
        """Delete a decoded entry that the caller found unusable (metadata of an older
        layout, say), counting it in ``discarded`` like an entry that failed its check."""
        self._discard("decoded", key, DECODED_SUFFIXES)

    def payload(self, key: str) -> bytes | None:
        """The codec's payload of a decoded entry, or ``None`` if missing or bad."""
        document = self._read_sealed("decoded", key, DECODED_SUFFIXES)
        if document is None:
            return None
        return self._decoded_file(key, ".bin", document["payload_sha256"])

    def get_metric(self, key: str) -> dict | None:
        return self._read_sealed("metrics", key, (".json",))

    def put_metric(self, key: str, entry: dict) -> None:
        write_atomically(self._path("metrics", key, ".json"), _seal(entry))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _seal(document: dict) -> bytes:
    """A cache file: the SHA-256 of the JSON body on the first line, then the body."""
    body = json.dumps(document).encode()
    return _digest(body).encode() + b"\n" + body


def _unseal(data: bytes) -> dict | None:
    """The document of a sealed cache file, or ``None`` if the digest does not hold.

    Files from before digests (a bare JSON body) fail the check too: a miss.
    """
    digest, newline, body = data.partition(b"\n")
    if not newline or digest.decode("ascii", "replace") != _digest(body):
        return None
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # a digest that holds over a body we did not write: not ours either
    return document if isinstance(document, dict) else None


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()

"""Drawing a report's figures: each only when its inputs changed, the rest in parallel.

A report is rebuilt often (``bench run`` writes one, ``bench report`` rewrites it after a
resumed run or a new metric), and most of its figures then show the same numbers as
before. Each figure is a :class:`FigureJob` whose key hashes what it draws: the drawing
function, the data it is given, the bytes of the audio files it reads, the formats and
the versions of this project and matplotlib. The report folder's ``figures.json`` records
the key of every file it holds; a rebuild takes a file from the previous report when its
key is unchanged, and draws the others in a pool of worker processes, one per core.
Nothing is trusted without its check: a file whose key or whose recorded digest does not
match is drawn again.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import pandas as pd

from bench import __version__ as bench_version

MANIFEST = "figures.json"
MANIFEST_VERSION = 1
# Below this many figures to draw, starting workers costs more than it saves.
PARALLEL_MIN_JOBS = 4


@dataclass(frozen=True)
class FigureJob:
    """One figure: ``draw(*args, stem=..., formats=...)`` writes ``stem.{format}`` for each
    format and returns the paths. ``draw`` is a module-level function (it is sent to a
    worker process) or its name, ``"module:function"``: by name, its module (matplotlib
    and all) is imported only if the figure is drawn. ``files`` are the files it reads,
    whose bytes are part of its key. ``stem`` is relative to the report folder."""

    stem: str
    draw: Callable[..., list[Path]] | str
    args: tuple = ()
    formats: tuple[str, ...] = ("png",)
    files: tuple[Path, ...] = field(default=())

    @property
    def draw_name(self) -> str:
        if isinstance(self.draw, str):
            return self.draw
        return f"{self.draw.__module__}:{self.draw.__qualname__}"

    def key(self) -> str:
        digest = hashlib.sha256()
        for part in (
            MANIFEST_VERSION,
            bench_version,
            version("matplotlib"),
            self.draw_name,
            self.formats,
        ):
            digest.update(repr(part).encode())
        for argument in self.args:
            digest.update(_fingerprint(argument))
        for path in self.files:
            digest.update(_file_digest(path).encode())
        return digest.hexdigest()

    def paths(self, report_dir: Path) -> list[Path]:
        stem = report_dir / self.stem
        return [stem.parent / f"{stem.name}.{extension}" for extension in self.formats]


def _fingerprint(value: object) -> bytes:
    if isinstance(value, pd.DataFrame):
        # Values, index and column names: the same numbers always hash the same.
        hashed = pd.util.hash_pandas_object(value, index=True).to_numpy().tobytes()
        return hashed + repr(list(value.columns)).encode()
    if isinstance(value, Path):
        # The file's name and bytes, not where the run lies: a moved run keeps its figures.
        return f"{value.name}:{_file_digest(value)}".encode()
    if isinstance(value, list | tuple):
        return b"[" + b",".join(_fingerprint(item) for item in value) + b"]"
    return repr(value).encode()


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def render_figures(
    jobs: Sequence[FigureJob],
    report_dir: Path,
    previous_dir: Path | None = None,
    workers: int | None = None,
) -> dict[str, list[Path]]:
    """Write every job's files into ``report_dir``; returns ``{stem: paths}``.

    Files whose key matches ``previous_dir``'s manifest (a previous build of the same
    report) and whose bytes match the digest recorded there are copied from it; the rest
    are drawn, in parallel when there are enough of them. ``workers`` defaults to the
    number of cores. Writes ``report_dir/figures.json``.
    """
    report_dir = Path(report_dir)
    previous = _read_manifest(previous_dir) if previous_dir is not None else {}
    manifest: dict[str, dict] = {}
    to_draw: list[FigureJob] = []
    for job in jobs:
        key = job.key()
        manifest[job.stem] = {"key": key}
        if not _reuse(job, key, previous.get(job.stem), previous_dir, report_dir):
            to_draw.append(job)
    workers = min(workers or os.cpu_count() or 1, len(to_draw))
    if workers > 1 and len(to_draw) >= PARALLEL_MIN_JOBS:
        # Imported here: bench.parallel brings torch, which a rebuild that draws little
        # need not load.
        from bench.parallel import process_pool

        with process_pool(workers) as pool:
            list(pool.map(_draw, to_draw, [report_dir] * len(to_draw)))
    else:
        for job in to_draw:
            _draw(job, report_dir)
    written = {}
    for job in jobs:
        paths = job.paths(report_dir)
        manifest[job.stem]["files"] = {
            path.relative_to(report_dir).as_posix(): _file_digest(path) for path in paths
        }
        written[job.stem] = paths
    (report_dir / MANIFEST).write_text(
        json.dumps({"version": MANIFEST_VERSION, "figures": manifest}, indent=1) + "\n"
    )
    return written


def _draw(job: FigureJob, report_dir: Path) -> None:
    stem = report_dir / job.stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    draw = job.draw
    if isinstance(draw, str):
        module, _, name = draw.partition(":")
        draw = getattr(importlib.import_module(module), name)
    draw(*job.args, stem=stem, formats=job.formats)


def _read_manifest(report_dir: Path) -> dict[str, dict]:
    """The previous report's figures by stem; empty when it has no readable manifest."""
    try:
        document = json.loads((Path(report_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict) or document.get("version") != MANIFEST_VERSION:
        return {}
    figures = document.get("figures")
    return figures if isinstance(figures, dict) else {}


def _reuse(
    job: FigureJob, key: str, entry: object, previous_dir: Path | None, report_dir: Path
) -> bool:
    """Copy the job's files from the previous report if its entry has this key and every
    file is there with the digest recorded; ``False`` (nothing copied) otherwise."""
    if previous_dir is None or not isinstance(entry, dict) or entry.get("key") != key:
        return False
    files = entry.get("files")
    paths = job.paths(report_dir)
    names = [path.relative_to(report_dir).as_posix() for path in paths]
    if not isinstance(files, dict) or sorted(files) != sorted(names):
        return False
    sources = [Path(previous_dir) / name for name in names]
    try:
        if any(
            _file_digest(source) != files[name] for source, name in zip(sources, names, strict=True)
        ):
            return False
    except OSError:
        return False
    for source, target in zip(sources, paths, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return True

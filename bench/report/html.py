"""The HTML report: one self-contained page per run, readable offline from ``file://``.

The page opens on the headline tables and figures, then holds the other tables and
figures, the worst items and the listening examples, and the run's provenance, last.
Every asset is a file inside the report folder, referenced by a relative path that is
checked before the page is written: a report never ships a broken link, and it never
loads anything from the network (no CDN, no web fonts, no scripts).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from bench import __version__

UNKNOWN = "unknown"
# How to read the spectrogram strips of bench.report.plots.spectrogram_strip.
SPECTROGRAM_NOTE = (
    "Spectrograms: reference above, decoded below; mel frequency from 0 Hz (bottom) to the "
    "higher Nyquist frequency of the two, time left to right, level from -80 dB (dark) to "
    "0 dB (bright) re. the reference's loudest bin."
)

# The MIME type of each audio file extension, for the <source type> attribute.
AUDIO_TYPES = {
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
}

# src/href/url() values that would make the browser reach outside the report folder.
_EXTERNAL_REFERENCE = re.compile(
    r"""(?:\b(?:src|href|srcset|poster|data)\s*=\s*["']?|url\(\s*["']?|@import\s+["'])"""
    r"""\s*((?:https?:)?//[^"'\s)>]*)""",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ListeningExample:
    """One decoded condition of one item, with its reference, as files in the report folder."""

    item: str
    condition: str
    reference_audio: str
    decoded_audio: str
    spectrogram: str | None


@dataclass(frozen=True)
class Figure:
    """A plot: the PNG shown on the page and, where there is one, the SVG to download."""

    caption: str
    image: str
    vector: str | None = None


@dataclass(frozen=True)
class ReportTable:
    """A table as an HTML ``<table>`` fragment (trusted, inserted as is) and its downloads.

    ``downloads`` holds ``(label, relative path)`` pairs, e.g. ``("CSV", "tables/summary.csv")``.
    """

    caption: str
    html: str
    downloads: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ReportContent:
    """Everything the page shows, in the order it shows it: the ``headline`` tables and
    figures on the first screen, then the other tables, the figures, the ``worst`` items'
    examples, the listening examples, the notes, and the provenance (the run's
    ``config.json``) last, folded."""

    title: str
    provenance: dict
    tables: tuple[ReportTable, ...]
    figures: tuple[Figure, ...]
    listening: tuple[ListeningExample, ...]
    notes: tuple[str, ...] = ()
    headline: tuple[ReportTable | Figure, ...] = ()
    worst: tuple[ListeningExample, ...] = ()


@dataclass(frozen=True)
class _ListeningGroup:
    item: str
    references: tuple[str, ...]
    examples: tuple[ListeningExample, ...]


def write_html_report(content: ReportContent, report_dir: Path) -> Path:
    """Write ``report_dir/index.html`` for ``content`` and return its path.

    Raises ``ValueError`` naming every referenced file that is missing from ``report_dir``
    or lies outside it, and if the page would load anything from the network.
    """
    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        raise ValueError(f"report folder {str(report_dir)!r} does not exist")
    _check_assets(content, report_dir)
    page = _render(content)
    external = _EXTERNAL_REFERENCE.findall(page)
    if external:
        raise ValueError(f"the report would load from the network: {', '.join(external)}")
    index = report_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _referenced_files(content: ReportContent) -> Iterable[tuple[str, str]]:
    """``(what, relative path)`` for every file the page links to or embeds."""
    blocks = (*content.headline, *content.tables, *content.figures)
    for table in (block for block in blocks if isinstance(block, ReportTable)):
        for label, path in table.downloads:
            yield f"download {label!r} of table {table.caption!r}", path
    for figure in (block for block in blocks if isinstance(block, Figure)):
        yield f"image of figure {figure.caption!r}", figure.image
        if figure.vector is not None:
            yield f"SVG of figure {figure.caption!r}", figure.vector
    for example in (*content.worst, *content.listening):
        where = f"of {example.item!r} ({example.condition})"
        yield f"reference audio {where}", example.reference_audio
        yield f"decoded audio {where}", example.decoded_audio
        if example.spectrogram is not None:
            yield f"spectrogram {where}", example.spectrogram


def _check_assets(content: ReportContent, report_dir: Path) -> None:
    root = report_dir.resolve()
    problems = []
    for what, path in _referenced_files(content):
        if not isinstance(path, str) or not path:
            problems.append(f"{what}: expected a relative path, got {path!r}")
        elif (
            "://" in path
            or path.startswith("//")
            or PurePosixPath(path).is_absolute()
            or PureWindowsPath(path).is_absolute()
        ):
            problems.append(f"{what}: expected a path relative to the report folder, got {path!r}")
        # resolve() follows symbolic links, so a link to a file outside the folder is
        # refused too: the folder must stay complete when it is copied or archived.
        elif not (report_dir / path).resolve().is_relative_to(root):
            problems.append(f"{what}: {path!r} lies outside the report folder")
        elif not (report_dir / path).is_file():
            problems.append(f"{what}: missing file {path!r}")
    if problems:
        raise ValueError(
            f"the report in {str(report_dir)!r} references files it does not contain:\n  "
            + "\n  ".join(problems)
        )


def _url(path: str) -> str:
    """A relative path as a URL: spaces, ``#`` and ``?`` in file names must not end it."""
    return quote(PurePosixPath(path).as_posix(), safe="/")


def _audio_type(path: str) -> str | None:
    return AUDIO_TYPES.get(PurePosixPath(path).suffix.lower())


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("bench.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["url"] = _url
    environment.filters["audio_type"] = _audio_type
    return environment


def _render(content: ReportContent) -> str:
    provenance = _mapping(content.provenance)
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=content.title,
            run_id=_text(provenance.get("run_id")),
            created=_created(provenance.get("created")),
            config_hash=_text(provenance.get("config_hash")),
            provenance=_provenance_view(provenance),
            headline=[
                (block, Markup(block.html) if isinstance(block, ReportTable) else None)
                for block in content.headline
            ],
            tables=[(table, Markup(table.html)) for table in content.tables],
            figures=content.figures,
            worst=_listening_groups(content.worst),
            listening=_listening_groups(content.listening),
            notes=content.notes,
            spectrogram_note=SPECTROGRAM_NOTE,
            generator=f"codec-bench {__version__}",
        )
    )


def _listening_groups(examples: Iterable[ListeningExample]) -> list[_ListeningGroup]:
    """Examples grouped by item in order of first appearance, each reference listed once."""
    by_item: dict[str, list[ListeningExample]] = {}
    for example in examples:
        by_item.setdefault(example.item, []).append(example)
    return [
        _ListeningGroup(
            item=item,
            references=tuple(dict.fromkeys(example.reference_audio for example in group)),
            examples=tuple(group),
        )
        for item, group in by_item.items()
    ]


# ---- provenance: config.json as a readable subset, "unknown" where a key is missing ----

_MISSING = object()


def _mapping(value: object) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _text(value: object, none: str = UNKNOWN) -> str:
    """A config value as text; ``none`` says what ``None`` (or an empty list) means here."""
    if value is _MISSING:
        return UNKNOWN
    if value is None:
        return none
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        text = ", ".join(f"{key}={_text(item)}" for key, item in value.items())
        return text or none
    if isinstance(value, list | tuple):
        return ", ".join(_text(item) for item in value) or none
    return str(value) if str(value) else none


def _created(value: object) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM:SS UTC`` (or as given when it is not one)."""
    if not isinstance(value, str):
        return _text(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return f"{moment:%Y-%m-%d %H:%M:%S} {moment.tzname() or ''}".strip()


_ACRONYMS = {"cpu": "CPU", "gpu": "GPU", "cuda": "CUDA", "nfe": "NFE", "vbr": "VBR"}


def _humanize(key: str) -> str:
    """``cpu_model`` -> ``CPU model``."""
    words = [_ACRONYMS.get(word.lower(), word) for word in key.split("_")]
    if words and words[0] == words[0].lower():
        words[0] = words[0].capitalize()
    return " ".join(words)


def _provenance_view(provenance: Mapping) -> dict:
    settings = _mapping(provenance.get("settings"))
    dataset = _mapping(provenance.get("dataset"))
    git = _mapping(provenance.get("git"))
    versions = _mapping(provenance.get("versions"))
    device = _mapping(provenance.get("device"))
    items = dataset.get("items")
    items = items if isinstance(items, list) else None

    def setting(key: str, none: str = UNKNOWN) -> str:
        return _text(settings.get(key, _MISSING), none)

    max_seconds = settings.get("max_seconds", _MISSING)
    crop = (
        f"first {max_seconds:g} s of each item"
        if isinstance(max_seconds, int | float) and not isinstance(max_seconds, bool)
        else _text(max_seconds, "whole items")
    )
    dirty = git.get("dirty", _MISSING)
    # (label, value, how to show it): "code" in monospace, "warning" highlighted.
    code = [
        ("Git commit", _text(git.get("commit", _MISSING)), "code"),
        (
            "Uncommitted changes",
            "yes: the tree differed from the commit" if dirty is True else _text(dirty),
            "warning" if dirty is True else "text",
        ),
        ("Bench version", _text(versions.get("bench", _MISSING)), "text"),
        ("Config hash", _text(provenance.get("config_hash", _MISSING)), "code"),
    ]
    run_settings = [
        ("Codecs", setting("codecs")),
        ("Bitrates (kbps)", setting("bitrates", "every bitrate of each codec")),
        ("NFE", setting("nfes", "each codec's default")),
        ("Seeds", setting("seeds")),
        ("Metrics", setting("metrics", "all")),
        ("Metric options", setting("metric_options", "defaults")),
        ("Dataset", _text(dataset.get("spec", settings.get("data", _MISSING)))),
        ("Items", str(len(items)) if items is not None else UNKNOWN),
        ("Content tags", _tag_counts(items)),
        ("Item limit", setting("limit", "none")),
        ("Crop", crop),
        ("Only tags", setting("tags", "all")),
        ("Excluded tags", setting("exclude_tags", "none")),
        ("Workers", setting("workers")),
    ]
    return {
        "code": code,
        "settings": [(label, value, "text") for label, value in run_settings],
        "versions": [(str(name), _text(version), "code") for name, version in versions.items()],
        "device": [(_humanize(str(key)), _text(value), "text") for key, value in device.items()],
        "codecs": _codec_cards(_mapping(provenance.get("codecs"))),
        "metrics": _metric_rows(_mapping(provenance.get("metrics"))),
    }


def _tag_counts(items: list | None) -> str:
    if items is None:
        return UNKNOWN
    counts: dict[str, int] = {}
    for item in items:
        for tag in _mapping(item).get("tags") or ():
            counts[str(tag)] = counts.get(str(tag), 0) + 1
    return ", ".join(f"{tag} {count}" for tag, count in sorted(counts.items())) or "none"


# Codec description keys shown first, in this order; the codec's own keys follow.
_CODEC_COLUMNS = (
    "name",
    "class",
    "sample_rate",
    "channels",
    "bitrates",
    "frame_rate",
    "num_codebooks",
    "codebook_size",
    "nfe_options",
    "checkpoint_hash",
    "backend_versions",
)


def _codec_cards(codecs: Mapping) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Per codec, ``(label, value, style)`` rows: the interface first, then its own keys."""
    cards = []
    for name, description in codecs.items():
        description = _mapping(description)

        def field(key: str, none: str = "–", description: Mapping = description) -> str:
            return _text(description.get(key, _MISSING), none)

        codebooks = "–"
        if description.get("num_codebooks") is not None:
            codebooks = f"{field('num_codebooks')} × {field('codebook_size')}"
        rows = [
            ("Class", field("class", UNKNOWN), "code"),
            ("Checkpoint hash", field("checkpoint_hash", UNKNOWN), "code"),
            ("Sample rate (Hz)", field("sample_rate", UNKNOWN), "text"),
            ("Channels", field("channels", UNKNOWN), "text"),
            ("Bitrates (kbps)", field("bitrates", UNKNOWN), "text"),
            ("Frame rate (Hz)", field("frame_rate"), "text"),
            ("Codebooks", codebooks, "text"),
            ("NFE options", field("nfe_options", "one-shot"), "text"),
            ("Backends", field("backend_versions"), "text"),
        ]
        rows += [
            (_humanize(str(key)), _text(value, "–"), "text")
            for key, value in description.items()
            if key not in _CODEC_COLUMNS
        ]
        cards.append((str(name), rows))
    return cards


def _metric_rows(metrics: Mapping) -> list[dict[str, str]]:
    rows = []
    for name, metadata in metrics.items():
        metadata = _mapping(metadata)
        higher_is_better = metadata.get("higher_is_better", _MISSING)
        direction = {True: "↑ higher", False: "↓ lower"}.get(higher_is_better, UNKNOWN)
        sample_rate = metadata.get("sample_rate", _MISSING)
        rows.append(
            {
                "name": str(name),
                "direction": direction,
                "backend": _text(metadata.get("backend", _MISSING)),
                "backend_version": _text(metadata.get("backend_version", _MISSING)),
                "sample_rate": _text(sample_rate, "codec's"),
                "description": _text(metadata.get("description", _MISSING), "–"),
            }
        )
    return rows

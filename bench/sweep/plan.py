"""Planning a sweep: the condition grid of its settings (:mod:`bench.sweep.settings`), and the
tasks (condition x item).

A condition is a label plus a registered codec, the codec's options, a bitrate, an NFE count
and a seed; the label names it in rows, tables and listening tests, so one run can hold two
checkpoints of one codec. Planning reads what it needs of each codec (bitrates, NFE options,
checkpoint hash) through :func:`bench.registry.codec_info`, which builds no network. Also
here: parsing ``--codec`` values and naming runs, whose identity covers what decides their numbers
and never how they were executed (workers, executor).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import soundfile

from bench import audio as bench_audio
from bench.codecs.base import CodecInfo
from bench.data import Dataset, Item
from bench.data.item import listening_selection
from bench.registry import CODECS, codec_info, codec_option_kinds
from bench.scoring import bind_metrics
from bench.store import RunStore, content_key
from bench.sweep.records import task_identity
from bench.sweep.settings import SweepSettings, check_label, parse_list

# Bump when the preparation of inputs (loading, resampling, cropping) changes, so that
# cached decodes made from the old inputs are not reused.
PREPARATION_VERSION = 1


@dataclass(frozen=True)
class Condition:
    """One point of the sweep grid, applied to every item: a label, the registered codec it
    runs with its options, a bitrate, an NFE count (``None`` for one-shot decoders) and a
    seed."""

    label: str
    codec: str
    bitrate: float
    nfe: int | None
    seed: int
    options: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Task:
    """One (condition, item) pair, self-contained so it can be sent to a worker."""

    condition: Condition
    item: Item
    input_hash: str | None
    decoded_key: str
    metrics: tuple[str, ...]
    max_seconds: float | None
    metric_options: dict[str, dict[str, str]] = field(default_factory=dict)
    run_id: str = ""
    # Whether the worker returns the decoded audio for the report's listening section.
    keep_audio: bool = False

    @property
    def identity(self) -> tuple:
        condition = self.condition
        return task_identity(
            condition.label, condition.bitrate, condition.nfe, condition.seed, self.item.id
        )


@dataclass(frozen=True)
class Plan:
    """The condition grid, and the requested (label, bitrate) pairs left out of it."""

    conditions: list[Condition]
    # {"label", "codec", "bitrate", "supported"} for each requested bitrate a codec lacks.
    skipped: list[dict] = field(default_factory=list)


def format_kbps(values: Iterable[float]) -> str:
    """Bitrates as "1.5, 6": repr, not :g, so that 6 and 6.0000001 read differently."""
    return ", ".join(repr(float(value)).removesuffix(".0") for value in values)


def codec_infos(settings: SweepSettings) -> dict[str, CodecInfo]:
    """What planning needs of each label's codec, read without building any network.

    Raises ``ValueError`` for an unknown codec (with "did you mean"), a label that is
    another codec's name, or options or a checkpoint the codec refuses.
    """
    infos = {}
    for label in settings.codecs:
        codec = CODECS.check(settings.codec_of(label))
        if label != codec and label in CODECS.names():
            raise ValueError(
                f"label {label!r} for codec {codec!r}: expected a label that is not another "
                f"codec's name, which would read as that codec in tables"
            )
        infos[label] = codec_info(codec, **settings.options_of(label))
    return infos


def _named(label: str, codec: str) -> str:
    """How errors name a condition: ``'opus'``, or ``'ours' (encodec)`` under a label."""
    return f"'{label}'" if label == codec else f"'{label}' ({codec})"


def _codec_spec(label: str, codec: str) -> str:
    """How ``--codec`` names a condition: ``opus``, or ``ours=encodec`` under a label."""
    return label if label == codec else f"{label}={codec}"


def _codec_bitrates(
    label: str, codec: CodecInfo, settings: SweepSettings
) -> tuple[tuple[float, ...], list[dict]]:
    """The codec's own values of the bitrates to run, and the requested ones it lacks.

    Bitrates given for this label alone must all be supported; of the bitrates given for
    every codec, each codec runs those it supports, and lacking all of them is an error,
    except for a codec of one fixed bitrate run beside others, which runs at that one.
    """
    own_bitrates = settings.codec_bitrates.get(label)
    if own_bitrates is None and settings.bitrates is None:
        return tuple(codec.bitrates), []
    requested = settings.bitrates if own_bitrates is None else own_bitrates
    matched: dict[float, float] = {}  # the codec's value -> the requested value matching it
    skipped = []
    for bitrate in requested:
        try:
            value = codec.check_bitrate(bitrate)
        except ValueError:
            if own_bitrates is not None:
                raise
            skipped.append(
                {
                    "label": label,
                    "codec": codec.name,
                    "bitrate": bitrate,
                    "supported": list(codec.bitrates),
                }
            )
            continue
        if value in matched:
            raise ValueError(
                f"bitrates {format_kbps([matched[value], bitrate])} both match {label}'s "
                f"{format_kbps([value])} kbps; expected each bitrate once"
            )
        matched[value] = bitrate
    if not matched and len(codec.bitrates) == 1 and len(settings.codecs) > 1:
        # A fixed-rate condition beside rate-swept codecs (the identity reference, a MUSHRA
        # anchor) has nothing to sweep: the requested rates are the other codecs', so it
        # runs at its one rate, and the skipped note says which that is.
        return tuple(codec.bitrates), skipped
    if not matched:
        raise ValueError(
            f"codec {_named(label, codec.name)} supports none of the requested bitrates "
            f"({format_kbps(requested)} kbps); supported bitrates (kbps): "
            f"{format_kbps(codec.bitrates)}. Give it bitrates of its own, e.g. "
            f"--codec {_codec_spec(label, codec.name)}:{format_kbps(codec.bitrates[:1])}"
        )
    return tuple(matched), skipped


def _codec_nfes(
    label: str, codec: CodecInfo, settings: SweepSettings, several: bool
) -> tuple[tuple[int | None, ...], list[dict]]:
    """The NFEs ``label`` decodes at, and the skipped ones (see :func:`_codec_bitrates`).

    Several iterative decoders in one sweep may spend NFE differently (a second-order solver
    calls the network twice per step): each runs the requested NFEs it can spend exactly and
    the rest are skipped with a note; one that can spend none of them is an error, as is any
    unsupported NFE of the only iterative decoder.
    """
    if codec.nfe_options is None:
        return (None,), []
    if settings.nfes is None:
        return (max(codec.nfe_options),), []
    supported = [nfe for nfe in settings.nfes if nfe in codec.nfe_options]
    if not several or not supported:
        for nfe in settings.nfes:
            codec.check_nfe(nfe)  # raises naming the NFEs it supports
    skipped = [
        {"label": label, "codec": codec.name, "nfe": nfe, "supported": list(codec.nfe_options)}
        for nfe in settings.nfes
        if nfe not in supported
    ]
    return tuple(supported), skipped


def plan(settings: SweepSettings, codecs: Mapping[str, CodecInfo]) -> Plan:
    """The condition grid over ``codecs`` (each label's :class:`CodecInfo`, or a codec
    object, which answers the same questions); raises ``ValueError`` naming valid values
    for bad choices."""
    conditions = []
    skipped = []
    iterative = [label for label, codec in codecs.items() if codec.nfe_options is not None]
    if settings.nfes is not None and not iterative:
        raise ValueError(
            f"--nfe applies to iterative decoders only; {', '.join(codecs)} "
            "decode in one shot. Drop --nfe or add an iterative codec."
        )
    for label, codec in codecs.items():
        bitrates, skipped_here = _codec_bitrates(label, codec, settings)
        skipped += skipped_here
        nfes, skipped_here = _codec_nfes(label, codec, settings, several=len(iterative) > 1)
        skipped += skipped_here
        for bitrate in bitrates:
            for nfe in nfes:
                for seed in settings.seeds:
                    conditions.append(
                        Condition(
                            label,
                            settings.codec_of(label),
                            float(bitrate),
                            nfe,
                            seed,
                            settings.options_of(label),
                        )
                    )
    return Plan(conditions, skipped)


def decoded_cache_key(
    checkpoint_hash: str, condition: Condition, input_hash: str, max_seconds: float | None
) -> str:
    """Keys decoded audio by what decides it: the codec (not the label: two labels of one
    codec, checkpoint and options share their audio), its weights, its options (a solver or
    a guidance scale changes the audio as much as the weights do), the condition and the
    input. The ``checkpoint`` option is left to the weights' hash, so two paths to one file
    share their audio."""
    return content_key(
        {
            "codec": condition.codec,
            "checkpoint": checkpoint_hash,
            "options": {
                name: value for name, value in condition.options.items() if name != "checkpoint"
            },
            "bitrate": condition.bitrate,
            "nfe": condition.nfe,
            "seed": condition.seed,
            "input": input_hash,
            "max_seconds": max_seconds,
            "preparation": PREPARATION_VERSION,
            "resampler": bench_audio.RESAMPLER,
        }
    )


def input_hashes(items: Iterable[Item]) -> dict[str, str | None]:
    """Each item's SHA-256, or ``None`` for a file that cannot be read."""
    hashes = {}
    for item in items:
        try:
            # Hashing a FIFO or a device (a manifest may name one) would never return.
            bench_audio.require_regular_file(item.path)
            hashes[item.id] = bench_audio.file_sha256(item.path)
        except (OSError, bench_audio.AudioError):
            hashes[item.id] = None  # the task reports the unreadable file as a NaN row
    return hashes


def _duration_seconds(item: Item) -> float:
    """The item's length from its header, or 0 for a file that cannot be read."""
    try:
        return soundfile.info(str(item.path)).duration
    except (OSError, RuntimeError, soundfile.LibsndfileError):
        return 0.0


def build_tasks(
    conditions: list[Condition],
    dataset: Dataset,
    codecs: Mapping[str, CodecInfo],
    hashes: dict[str, str | None],
    settings: SweepSettings,
    store: RunStore,
) -> list[Task]:
    """Every (condition, item) task of the run in ``store``, longest items first.

    A task scores the metrics valid for its item's content (no WER on music), and metrics
    on codes (``needs_codes``) only where its codec declares codebooks: a classic codec
    has no tokens to count, so its rows would be NaN by construction.
    """
    metrics = bind_metrics(settings.metrics, settings.metric_options)
    on_codes = {metric.name for metric in metrics if metric.spec.needs_codes}
    without_codes = {
        label for label, info in codecs.items() if info.description.get("num_codebooks") is None
    }
    listening = {item.id for item in listening_selection(dataset.items, settings.listening_items)}
    first_seed = settings.seeds[0]
    run_id = store.run_dir.name
    tasks = []
    # Item-major order: consecutive tasks share an input, which workers prepare once.
    # Longest items first, so that a pool does not end waiting on one long straggler.
    # An item without a hash is not a readable file: do not open it for its length.
    by_length = sorted(
        dataset.items,
        key=lambda item: _duration_seconds(item) if hashes[item.id] else 0.0,
        reverse=True,
    )
    for item in by_length:
        # Only the metrics valid for the item's content (no WER on music, say).
        names = tuple(metric.name for metric in metrics if metric.spec.applies_to(item.tags))
        options = {name: value for name, value in settings.metric_options.items() if name in names}
        for condition in conditions:
            task_names = names
            if condition.label in without_codes:
                task_names = tuple(name for name in names if name not in on_codes)
            input_hash = hashes[item.id]
            key = (
                decoded_cache_key(
                    codecs[condition.label].checkpoint_hash,
                    condition,
                    input_hash,
                    settings.max_seconds,
                )
                if input_hash
                else ""
            )
            keep_audio = (
                item.id in listening
                and condition.seed == first_seed
                and not store.decoded_audio_path(
                    condition.label, condition.bitrate, condition.nfe, item.id
                ).exists()
            )
            tasks.append(
                Task(
                    condition,
                    item,
                    input_hash,
                    key,
                    task_names,
                    settings.max_seconds,
                    options,
                    run_id,
                    keep_audio,
                )
            )
    return tasks


def run_identity(
    settings: SweepSettings, codecs: Mapping[str, CodecInfo], hashes: dict[str, str | None]
) -> str:
    """The run's config hash: its settings, every label's weights and every input file.

    How the run is executed (workers, executor) is not part of it, so a run continued on
    another machine or with another worker count keeps its identity.
    """
    return content_key(
        {
            "settings": settings.to_json(),
            "codecs": {label: codec.checkpoint_hash for label, codec in codecs.items()},
            "items": hashes,
        }
    )


def new_run_dir(out_root: Path, config_hash: str) -> Path:
    """A new run directory under ``out_root``: the time, then the config hash's start."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = out_root / f"{stamp}-{config_hash[:8]}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = out_root / f"{stamp}-{config_hash[:8]}-{suffix}"
    return run_dir


@dataclass(frozen=True)
class CodecChoice:
    """One condition named by a ``--codec`` value: its label, codec, its own bitrates (or
    ``None``) and codec options."""

    label: str
    codec: str
    bitrates: tuple[float, ...] | None = None
    options: dict = field(default_factory=dict)


def parse_codec_argument(value: str) -> list[CodecChoice]:
    """The conditions one ``--codec`` value names.

    ``NAME[,NAME...]`` names codecs, each labelled by its name. A value holding ``:`` or
    ``=`` names one condition: ``[LABEL=]NAME``, then ``:``-separated parts, each either
    ``KBPS[,KBPS...]`` (its own bitrates, at most once) or ``OPTION=VALUE`` (a keyword of the
    codec's constructor; a VALUE holds no ``:`` but in ``checkpoint=official:NAME``, the
    published weights NAME, and a bool option takes ``true`` or ``false``). Anything else
    (two names before a ``:``, a name after one) is refused with ``ValueError`` rather than
    guessed; so is an unknown codec or option.
    """
    if ":" not in value and "=" not in value:
        return [CodecChoice(CODECS.check(name), name) for name in parse_list(value, str, "--codec")]
    head, *parts = value.split(":")
    parts = _joined_official_names(parts)
    label, equals, codec = head.partition("=")
    if not equals:
        label = codec = head
    label, codec = label.strip(), codec.strip()
    if not codec or "," in head:
        raise ValueError(
            f"--codec {value!r}: expected one codec before ':', as in --codec opus:6,12; "
            "give each codec with a label, options or bitrates of its own a --codec of its own"
        )
    if equals:
        check_label(label)
    kinds = codec_option_kinds(CODECS.check(codec))
    bitrates = None
    options: dict = {}
    for part in parts:
        option, equals, text = part.partition("=")
        if not equals:
            if bitrates is not None:
                raise ValueError(f"--codec {value!r}: expected one list of bitrates, got two")
            try:
                bitrates = parse_list(part, float, f"--codec {head}:KBPS")
            except ValueError as error:
                raise ValueError(
                    f"{error}; expected --codec NAME:KBPS[,KBPS...], one codec per --codec "
                    "(--codec opus:6,12 --codec encodec:1.5,3)"
                ) from None
            continue
        name = option.strip().replace("-", "_")
        if name not in kinds:
            raise ValueError(
                f"--codec {value!r}: codec {codec!r} takes no option {option.strip()!r}; "
                f"expected one of: {', '.join(sorted(kinds)) or 'none'}"
            )
        if name in options:
            raise ValueError(f"--codec {value!r}: expected option {name!r} once, got it twice")
        options[name] = _option_value(kinds[name], text.strip(), f"--codec {head}:{name}")
    return [CodecChoice(label, codec, bitrates, options)]


def _joined_official_names(parts: list[str]) -> list[str]:
    """``[..., "checkpoint=official", "NAME", ...]`` with the two parts joined again: a
    ``checkpoint=official:NAME`` option that splitting on ``:`` cut in two."""
    joined: list[str] = []
    for part in parts:
        if joined and joined[-1].replace(" ", "").endswith("=official"):
            joined[-1] = f"{joined[-1]}:{part}"
        else:
            joined.append(part)
    return joined


def _option_value(kind: type | None, text: str, option: str) -> object:
    """``text`` as an option of ``kind`` (:func:`~bench.registry.codec_option_kinds`): a bool
    from ``true`` or ``false``, a number as a number, anything else the string itself."""
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{option}: expected true or false, got {text!r}")
        return text.lower() == "true"
    if not text:
        raise ValueError(f"{option}: expected a value, got none")
    if kind in (int, float):
        values = parse_list(text, kind, option)
        if len(values) > 1:
            raise ValueError(f"{option}: expected one number, got {text!r}")
        return values[0]
    return text

"""The result schema: one frozen :class:`Record` per (run, condition, item, metric), written
as one line of ``results.jsonl``, and the :class:`Decoding` facts of one coded item.

Schema versions of ``results.jsonl`` rows:

1. rows without a ``schema_version`` (bench before labelled conditions): no ``label``; the
   codec's name was the condition's name.
2. ``schema_version`` and ``label`` added; ``codec`` is the registered codec the label runs.

Readers accept version 2 and convert version 1 exactly (its label is its codec: a run could
name each codec once), and refuse any other version, naming the file, the line, the version
found and the one expected. Rows are built in one place, :func:`task_records`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

from bench.metrics import CodingStats

if TYPE_CHECKING:
    from bench.scoring import BoundMetric, MetricOutcome
    from bench.sweep.plan import Task

RESULTS_SCHEMA_VERSION = 2
# Rows written before the schema had a version; converted on read (see the module docstring).
UNVERSIONED_SCHEMA = 1


@dataclass(frozen=True)
class Decoding(CodingStats):
    """What coding one item measured, plus the decoded audio's rate and how the input was
    converted for the codec (resampling, downmix, clipping); cached beside the audio."""

    payload_bytes: int
    sample_rate: int
    input_notes: tuple[str, ...]

    def to_json(self) -> dict:
        return {**asdict(self), "input_notes": list(self.input_notes)}

    @classmethod
    def from_json(cls, data: object) -> Decoding:
        """``ValueError`` for anything else, such as a cache entry of an older layout."""
        try:
            return cls(**{**data, "input_notes": tuple(data["input_notes"])})
        except (TypeError, KeyError) as error:
            raise ValueError(f"expected decoding facts, got {data!r:.200} ({error})") from None


# The row fields of a decoding; absent from a row whose task failed before its codec ran.
DECODING_FIELDS = (
    "kbps_nominal",
    "kbps_actual",
    "encode_seconds",
    "decode_seconds",
    "audio_seconds",
    "input_notes",
    "decoded_from_cache",
)


@dataclass(frozen=True)
class Record:
    """One result row. ``value`` is ``None`` when the metric could not score the item, and
    ``failure`` then says why; the decoding fields are ``None`` when the codec never ran.

    ``identity`` names the task: (label, bitrate, nfe, seed, item).
    """

    run_id: str
    label: str
    codec: str
    bitrate: float
    nfe: int | None
    seed: int
    item: str
    tags: tuple[str, ...]
    speaker: str | None
    input_hash: str | None
    decoded_key: str
    metric: str
    metric_family: str
    value: float | None
    failure: str | None
    metric_note: str | None
    # A ratio metric's counts (e.g. WER's edits and reference words), pooled by reports.
    metric_counts: dict[str, int] | None
    metric_seconds: float
    metric_backend: str
    metric_backend_version: str
    kbps_nominal: float | None = None
    kbps_actual: float | None = None
    encode_seconds: float | None = None
    decode_seconds: float | None = None
    audio_seconds: float | None = None
    input_notes: tuple[str, ...] | None = None
    decoded_from_cache: bool | None = None
    schema_version: int = RESULTS_SCHEMA_VERSION

    def __post_init__(self) -> None:
        given = [name for name in DECODING_FIELDS if getattr(self, name) is not None]
        if given and len(given) != len(DECODING_FIELDS):
            raise ValueError(
                f"expected all of the decoding fields {list(DECODING_FIELDS)} or none, got "
                f"only {given}"
            )

    def check_values(self) -> None:
        """Raise ``TypeError`` unless the numbers a report reads are numbers: a value is a
        finite number or ``None`` with the failure that explains it (an edited row's
        ``"value": "0.9"`` would otherwise read as a NaN no one caused)."""
        if self.value is None:
            if not isinstance(self.failure, str) or not self.failure:
                raise TypeError("a row without a value must say why in 'failure'")
        elif not _is_finite_number(self.value):
            raise TypeError(f"value must be a finite number or null, got {self.value!r:.80}")
        numbers = ("bitrate", "metric_seconds", *NUMERIC_DECODING_FIELDS)
        for name in numbers:
            found = getattr(self, name)
            if found is not None and not _is_finite_number(found):
                raise TypeError(f"{name} must be a finite number, got {found!r:.80}")

    @property
    def identity(self) -> tuple:
        return task_identity(self.label, self.bitrate, self.nfe, self.seed, self.item)

    def to_json(self) -> dict:
        """The ``results.jsonl`` row (its field names are the schema's)."""
        # Shallow, field by field: asdict deep-copies, which made reading a large run slow.
        row = {name: getattr(self, name) for name in _RECORD_FIELDS}
        row["tags"] = list(self.tags)
        if self.kbps_nominal is None:
            for name in DECODING_FIELDS:
                del row[name]
        else:
            row["input_notes"] = list(self.input_notes)
        return row

    @classmethod
    def from_json(cls, row: dict) -> Record:
        """The record of a row of the current version or of version 1 (converted).

        ``ValueError`` for another version, or a missing or malformed field.
        """
        version = row.get("schema_version", UNVERSIONED_SCHEMA)
        if version == UNVERSIONED_SCHEMA:
            row = {**row, "label": row.get("codec"), "schema_version": RESULTS_SCHEMA_VERSION}
        elif version != RESULTS_SCHEMA_VERSION:
            raise ValueError(
                f"expected a result row of schema version {RESULTS_SCHEMA_VERSION} (or an "
                f"unversioned one, version {UNVERSIONED_SCHEMA}), got version {version!r}: "
                "written by another version of bench; read it with that version, or run the "
                "sweep again with this one (`bench run --config FILE` with its settings)"
            )
        try:
            record = cls(
                **{
                    **row,
                    "tags": tuple(row["tags"]),
                    "input_notes": None
                    if row.get("input_notes") is None
                    else tuple(row["input_notes"]),
                }
            )
            # The identity is what resuming matches on: its fields must have their types.
            if not (
                isinstance(record.label, str)
                and isinstance(record.item, str)
                and isinstance(record.metric_family, str)
            ):
                raise TypeError("label, item and metric_family must be strings")
            task_identity(record.label, record.bitrate, record.nfe, record.seed, record.item)
            record.check_values()
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"expected a result row, got one with a missing or malformed field "
                f"({type(error).__name__}: {error})"
            ) from None
        return record


_RECORD_FIELDS = tuple(field.name for field in fields(Record))
NUMERIC_DECODING_FIELDS = (
    "kbps_nominal",
    "kbps_actual",
    "encode_seconds",
    "decode_seconds",
    "audio_seconds",
)


def _is_finite_number(value: object) -> bool:
    # bool is an int to Python, but true is no bitrate.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def task_identity(label: str, bitrate: float, nfe: int | None, seed: int, item: str) -> tuple:
    """What names a task in a run: a condition (label, bitrate, NFE, seed) and an item."""
    return (label, float(bitrate), None if nfe is None else int(nfe), int(seed), item)


def task_records(
    task: Task,
    metric: BoundMetric,
    outcome: MetricOutcome,
    decoding: Decoding | None,
    decoded_from_cache: bool = False,
) -> list[Record]:
    """The records of one metric's outcome on one task: one per value the metric gives
    (a metric family such as DNSMOS gives several), each with the counts its aggregation
    puts on that value's row (:meth:`bench.metrics.PooledHistogram.row_counts`)."""
    condition = task.condition
    row_counts = _row_counts(metric, outcome)
    coding = {}
    if decoding is not None:
        coding = {
            "kbps_nominal": decoding.kbps_nominal,
            "kbps_actual": decoding.kbps_actual,
            "encode_seconds": decoding.encode_seconds,
            "decode_seconds": decoding.decode_seconds,
            "audio_seconds": decoding.audio_seconds,
            "input_notes": decoding.input_notes,
            "decoded_from_cache": decoded_from_cache,
        }
    return [
        Record(
            run_id=task.run_id,
            label=condition.label,
            codec=condition.codec,
            bitrate=condition.bitrate,
            nfe=condition.nfe,
            seed=condition.seed,
            item=task.item.id,
            tags=tuple(sorted(task.item.tags)),
            speaker=task.item.speaker,
            input_hash=task.input_hash,
            decoded_key=task.decoded_key,
            metric=name,
            metric_family=metric.name,
            value=value if value_failure is None else None,
            failure=outcome.failure or value_failure,
            metric_note=outcome.note,
            metric_counts=row_counts[name],
            metric_seconds=outcome.seconds,
            metric_backend=metric.spec.backend,
            metric_backend_version=metric.backend_version,
            **coding,
        )
        for name, value in outcome.values.items()
        for value_failure in [_value_failure(value)]
    ]


def _row_counts(metric: BoundMetric, outcome: MetricOutcome) -> dict[str, dict | None]:
    """The counts on the row of each value of ``outcome`` (``family`` or ``family.key``)."""
    aggregation = metric.spec.aggregation
    if aggregation is None:
        return {name: outcome.counts for name in outcome.values}
    keys = {
        name: None if name == metric.name else name.removeprefix(f"{metric.name}.")
        for name in outcome.values
    }
    by_key = aggregation.row_counts(list(keys.values()), outcome.counts)
    return {name: by_key[key] for name, key in keys.items()}


def _value_failure(value: object) -> str | None:
    """Why ``value`` cannot be a row's value, or ``None`` if it can. Every row without a
    value says why: a coding metric reports no failure of its own, and an RTF over zero
    audio seconds would be infinite."""
    return None if _is_finite_number(value) else f"the metric gave {value!r}, not a value"

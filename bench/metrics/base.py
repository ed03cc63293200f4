"""The metric contract: a pure function plus metadata, and a registry of them.

A metric is ``(reference, degraded, sample_rate, item, **options) -> float | dict | Score``
on ``(channels, samples)`` float32 audio at the rate the metric declares (``bench.audio``
resamples; the metric never does). Coding metrics (rates, real-time factors) read the
measured :class:`CodingStats` instead of audio. A metric that cannot score an item
raises :class:`CannotScore` with the reason; the harness records NaN and that reason.

Metrics with heavy state (models, JIT-compiled kernels) keep it in per-process caches and
declare a ``setup`` that builds it, which the harness calls once per worker, untimed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

from bench.registry import UnknownNameError, did_you_mean

# Content classes of items (tags); a metric made for one class is not run on the others.
CONTENT_TAGS = frozenset({"speech", "music", "audio"})
SPEECH_ONLY = frozenset({"speech"})


class CannotScore(Exception):
    """Raised by a metric that cannot score an item; the message is the recorded reason."""


@dataclass(frozen=True)
class CodingStats:
    """What the harness measured while coding one item, in seconds and kbps."""

    encode_seconds: float
    decode_seconds: float
    audio_seconds: float
    kbps_nominal: float
    kbps_actual: float


@dataclass(frozen=True)
class Score:
    """A metric's value with a note on how it was obtained, recorded in the result row
    (e.g. whether a WER was scored against the transcript or an ASR reference).

    ``counts`` are the item's counts behind a ratio metric's value (e.g. WER's edits and
    reference words), recorded in the row so reports can pool them over items.
    """

    value: float | dict[str, float]
    note: str
    counts: dict[str, int] | None = None


@dataclass(frozen=True)
class Ratio:
    """How a ratio metric is aggregated: the value of an item is ``numerator /
    denominator`` of the counts it reports (:attr:`Score.counts`), and a condition's value
    is the ratio of the counts summed over items, so an item weighs by its denominator
    (a corpus WER: a 60-word paragraph counts 30 times as much as a 2-word command)."""

    numerator: str
    denominator: str


AudioMetricFunction = Callable[..., "float | dict[str, float] | Score"]
CodingMetricFunction = Callable[[CodingStats], float]


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric and the metadata that drives runs, caching and reports.

    ``sample_rate`` is the rate the metric works at; ``None`` means the codec's own rate.
    ``version`` is the version of the metric's definition in this project and, with
    ``backend_version``, keys the metric cache: bump it when the definition changes.
    ``needs_reference=False`` marks a non-intrusive (no-reference) metric. ``content``
    names the content classes the metric is valid for (``None``: any); it is not run on
    items tagged with other classes only, e.g. PESQ on music, which peers report anyway.
    ``aligns_signals`` marks a full-reference metric that time-aligns the pair itself
    (PESQ, ViSQOL): it takes both signals as they are, of different lengths too. The
    others compare sample by sample, so a pair that differs in length is trimmed for them
    (see ``bench.scoring``).

    ``options`` names the keyword options ``function`` accepts (e.g. ``model`` for WER);
    ``setup(**options)`` builds per-process state once, before anything is timed; and
    ``describe_backend(**options)`` gives the backend version for those options (e.g.
    including a model's sha256), which replaces ``backend_version`` when set.

    ``optional_transcript`` marks a metric that uses the item's transcript when it has one
    and scores without it otherwise (WER falls back to a dWER). ``aggregation`` is how
    reports combine items: ``None`` averages their values; a :class:`Ratio` pools the
    counts each item reports (a single-valued metric only).
    ``max_seconds`` is the longest item the metric scores, for a backend that holds the
    whole signal in working memory many times its size, or that fails on long input
    (``max_seconds_reason`` says which); a longer item gets NaN naming both, before any
    work.
    """

    name: str
    function: Callable = field(repr=False)
    higher_is_better: bool
    needs_reference: bool
    needs_transcript: bool
    sample_rate: int | None
    backend: str
    backend_version: str
    inputs: Literal["audio", "coding"] = "audio"
    unit: str = ""
    version: int = 1
    description: str = ""
    content: frozenset[str] | None = None
    aligns_signals: bool = False
    options: tuple[str, ...] = ()
    setup: Callable[..., None] | None = field(default=None, repr=False)
    describe_backend: Callable[..., str] | None = field(default=None, repr=False)
    max_seconds: float | None = None
    max_seconds_reason: str = ""
    optional_transcript: bool = False
    aggregation: Ratio | None = None

    @property
    def uses_transcript(self) -> bool:
        """Whether the item's transcript can change the metric's value."""
        return self.needs_transcript or self.optional_transcript

    def applies_to(self, tags: frozenset[str]) -> bool:
        """Whether the metric is valid for an item with these tags (untagged: yes)."""
        item_content = tags & CONTENT_TAGS
        return self.content is None or not item_content or bool(item_content & self.content)

    def check_options(self, options: dict[str, str]) -> dict[str, str]:
        """Return ``options`` if this metric accepts them, else raise ``ValueError``."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            accepted = ", ".join(self.options) if self.options else "none"
            raise ValueError(
                f"metric {self.name!r} takes no option {', '.join(map(repr, unknown))}; "
                f"accepted options: {accepted}"
            )
        return options

    def backend_version_for(self, options: dict[str, str]) -> str:
        """The backend version that produced values under ``options``."""
        if self.describe_backend is None:
            return self.backend_version
        return self.describe_backend(**options)

    def metadata(self) -> dict:
        """Everything but the callables, as recorded in a run's provenance."""
        data = asdict(self)
        for name in ("function", "setup", "describe_backend"):
            data.pop(name)
        data["content"] = sorted(self.content) if self.content is not None else None
        return data


_METRICS: dict[str, MetricSpec] = {}


def register_metric(spec: MetricSpec) -> MetricSpec:
    if spec.name in _METRICS:
        raise ValueError(f"metric {spec.name!r} is already registered")
    _METRICS[spec.name] = spec
    return spec


def metric_names() -> list[str]:
    return sorted(_METRICS)


def get_metric(name: str) -> MetricSpec:
    if name not in _METRICS:
        raise UnknownNameError(did_you_mean("metric", name, list(_METRICS)))
    return _METRICS[name]

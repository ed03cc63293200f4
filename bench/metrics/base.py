"""The metric contract: a pure function plus metadata, registered with the ``@metric``
decorator.

A metric is ``(reference, degraded, sample_rate, item, **options) -> float | dict | Score``
on ``(channels, samples)`` float32 audio at the rate the metric declares (``bench.audio``
resamples; the metric never does). A metric on tokens (``needs_codes``) receives the
codec's :class:`~bench.codecs.base.Encoded` as the keyword ``encoded`` as well. Coding
metrics (rates, real-time factors) read the measured :class:`CodingStats` instead of audio.
A metric that cannot score an item raises :class:`CannotScore` with the reason; the harness
records NaN and that reason.

Metrics with heavy state (models, JIT-compiled kernels) keep it in per-process caches and
declare a ``setup`` that builds it, which the harness calls once per worker, untimed.

Every module of this package is imported at the first look-up of a metric
(:data:`bench.registry.METRICS`), so a new built-in metric is one module; third-party
packages add theirs through the ``bench.metrics`` entry-point group, naming the decorated
function (``toy = "mypackage.metrics:toy"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

from bench.metrics import histograms
from bench.registry import METRICS

# Content classes of items (tags); a metric made for one class is not run on the others.
CONTENT_TAGS = frozenset({"speech", "music", "audio"})
SPEECH_ONLY = frozenset({"speech"})
F = TypeVar("F", bound=Callable[..., Any])


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

    ``counts`` are the item's counts behind a pooled metric's value (e.g. WER's edits and
    reference words, or a histogram of codes), recorded in the row so reports can pool
    them over items (see :attr:`MetricSpec.aggregation`).
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

    def check_counts(self, counts: dict[str, int] | None) -> None:
        """Raise ``TypeError`` unless ``counts`` has both integer counts."""
        wanted = (self.numerator, self.denominator)
        if counts is None or any(not isinstance(counts.get(name), int) for name in wanted):
            raise TypeError(f"a ratio metric must report integer counts {wanted}, got {counts!r}")

    def row_counts(
        self, keys: Sequence[str | None], counts: dict[str, int] | None
    ) -> dict[str | None, dict[str, int] | None]:
        """The counts each value's row carries (``keys``: see
        :meth:`PooledHistogram.row_counts`): all of them."""
        return {key: counts for key in keys}

    def describe(self) -> str:
        """What a report's pooled value is."""
        return f"total {self.numerator} / total {self.denominator} over items"


@dataclass(frozen=True)
class PooledHistogram:
    """How a metric on codes is aggregated: each item reports the histogram of its codes as
    counts (see :mod:`bench.metrics.histograms` for the keys), and a condition's value is
    ``statistic`` of the histograms summed over its items, not a mean of the items' values:
    a code used in any item counts as used, and rare codes pool into a stable entropy.
    An item's own value is the statistic of its own histogram.

    ``statistic`` names one of :data:`bench.metrics.histograms.STATISTICS` (``"usage"``,
    ``"entropy"``, ``"entropy_kbps"``), which are part of bench, so a report rebuilt where
    the metric's plug-in is not installed still pools it.

    A metric with several values keys them ``L{level}`` per level plus summary keys
    (``overall``, ``mean``, ...). So that rows stay small, the row of ``L{level}`` carries
    that level's bins and the other rows none (only ``samples`` and the constants): a
    report computes a summary key from the pooled bins of the metric's level rows. The
    row of a single-valued metric carries every bin.
    """

    statistic: str

    def __post_init__(self) -> None:
        if self.statistic not in histograms.STATISTICS:
            raise ValueError(
                f"PooledHistogram: expected a statistic among "
                f"{', '.join(histograms.STATISTICS)}, got {self.statistic!r}"
            )

    def check_counts(self, counts: dict[str, int] | None) -> None:
        """Raise ``TypeError`` unless ``counts`` is a histogram of integer counts with at
        least one code and the samples it covers."""
        wanted = (
            "a pooled-histogram metric must report integer counts of its codes "
            f"('L<level>:<code>') and 'samples', got {counts!r:.200}"
        )
        if (
            not isinstance(counts, dict)
            or not all(isinstance(value, int) for value in counts.values())
            or not isinstance(counts.get(histograms.SAMPLES), int)
            or not any(histograms.is_bin(key) for key in counts)
        ):
            raise TypeError(wanted)
        try:
            for key in counts:
                histograms.split_bin(key)
        except ValueError as error:
            raise TypeError(f"{wanted}: {error}") from None

    def row_counts(
        self, keys: Sequence[str | None], counts: dict[str, int] | None
    ) -> dict[str | None, dict[str, int] | None]:
        """The counts the row of each value carries, by the value's key (``"L3"`` of
        ``family.L3``; ``None`` for a single-valued metric): a level row its level's bins,
        a summary row no bins, and every row ``samples`` and the constants; the row of a
        single-valued metric all the counts."""
        if counts is None:
            return {key: None for key in keys}
        context: dict[str, int] = {}
        bins: dict[str, dict[str, int]] = {}  # by the level's digits
        for name, value in counts.items():
            if histograms.is_bin(name):
                bins.setdefault(name[1 : name.index(":")], {})[name] = value
            else:
                context[name] = value
        rows: dict[str | None, dict[str, int] | None] = {}
        for key in keys:
            if key is None:
                rows[key] = counts
                continue
            level = histograms.level_of_name(key)
            own = bins.get(str(level), {}) if level is not None else {}
            rows[key] = {**own, **context}
        return rows

    def pools_levels(self, key: str | None) -> bool:
        """Whether the row of ``key`` is pooled from the metric's level rows (a summary
        key) rather than from its own rows (a level key, or a single-valued metric)."""
        return key is not None and histograms.level_of_name(key) is None

    def describe(self) -> str:
        """What a report's pooled value is."""
        return histograms.STATISTICS[self.statistic][1]


Aggregation = Ratio | PooledHistogram


def aggregation_of(metadata: dict | None) -> Aggregation | None:
    """The aggregation a run's config.json records (``MetricSpec.metadata()``), rebuilt:
    a :class:`Ratio` from ``numerator`` and ``denominator``, a :class:`PooledHistogram`
    from ``statistic``; ``None`` for a metric averaged over items."""
    if not metadata:
        return None
    if "statistic" in metadata:
        return PooledHistogram(metadata["statistic"])
    return Ratio(metadata["numerator"], metadata["denominator"])


@dataclass(frozen=True)
class Tolerance:
    """How far a mean may move in the worse direction before `bench compare` calls it a
    regression.

    The allowed change is the larger of ``absolute`` and ``relative`` times the
    baseline's magnitude. A metric's is about the smallest change a codec researcher would
    act on, and well above the run-to-run drift of deterministic decoding on one machine
    (which is zero) or across BLAS builds (last digits).
    """

    absolute: float = 0.0
    relative: float = 0.0

    def allowed(self, baseline: float) -> float:
        return max(self.absolute, self.relative * abs(baseline))

    def describe(self) -> str:
        parts = []
        if self.absolute:
            parts.append(f"±{self.absolute:g}")
        if self.relative:
            parts.append(f"±{self.relative:.0%}")
        return " or ".join(parts) or "exact"


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric and the metadata that drives runs, caching and reports.

    ``sample_rate`` is the rate the metric works at; ``None`` means the codec's own rate.
    ``version`` is the version of the metric's definition in this project and, with
    ``backend_version``, keys the metric cache: bump it when the definition changes.
    ``tolerance`` is the regression gate of `bench compare` (a ``--tolerance`` file may
    override it); every metric declares one, as there is no default that suits every scale.

    What the metric needs: ``needs_reference=False`` marks a non-intrusive (no-reference)
    metric; ``needs_transcript`` (and ``optional_transcript``, below) the item's
    transcript; ``needs_codes`` the codec's ``Encoded`` (payload and codes), passed as the
    keyword ``encoded``, so a metric on tokens (codebook usage) scores a codec run only,
    never a pair of files. ``content`` names the content classes the metric is valid for
    (``None``: any); it is not run on items tagged with other classes only, e.g. PESQ on
    music, which peers report anyway.
    ``needs_equal_lengths`` marks a metric that compares the pair sample by sample, so a
    pair that differs in length is trimmed for it (see ``bench.scoring``). It defaults to
    ``needs_reference``; a full-reference metric that time-aligns the pair itself (PESQ,
    ViSQOL) sets it to ``False`` and takes both signals as they are.

    ``options`` names the keyword options ``function`` accepts (e.g. ``model`` for WER);
    ``setup(**options)`` builds per-process state once, before anything is timed; and
    ``describe_backend(**options)`` gives the backend version for those options (e.g.
    including a model's sha256), which replaces ``backend_version`` when set.

    ``optional_transcript`` marks a metric that uses the item's transcript when it has one
    and scores without it otherwise (WER falls back to a dWER). ``aggregation`` is how
    reports combine items: ``None`` averages their values; a :class:`Ratio` pools the
    counts each item reports (a single-valued metric only); a :class:`PooledHistogram`
    sums the code histograms each item reports and takes a statistic of the sum.
    ``max_seconds`` is the longest item the metric scores, for a backend that holds the
    whole signal in working memory many times its size, or that fails on long input
    (``max_seconds_reason`` says which); a longer item gets NaN naming both, before any
    work. ``mono_mix`` marks a metric that scores the mean of the channels (it mixes each
    signal to mono first), naming the precision it mixes in ("float32" or "float64"): the
    harness then hands it that mix, one channel of that dtype, made from the resampled
    channels as numpy's mean makes it, so the metric's own mix leaves it unchanged, and no
    multi-channel pair at the metric's rate is held.

    A metric that returns a dict of known keys names them in ``subvalues``; one of them
    may be its ``primary`` value, recorded under the metric's own name (DNSMOS: OVRL as
    ``dnsmos``, then ``dnsmos.sig``, ``dnsmos.bak``, ``dnsmos.p808``), the others as
    ``name.key``. Where it cannot score, every one of those names is NaN with the reason.
    """

    name: str
    function: Callable = field(repr=False)
    higher_is_better: bool
    needs_reference: bool
    needs_transcript: bool
    sample_rate: int | None
    backend: str
    backend_version: str
    tolerance: Tolerance
    inputs: Literal["audio", "coding"] = "audio"
    unit: str = ""
    version: int = 1
    description: str = ""
    content: frozenset[str] | None = None
    needs_codes: bool = False
    needs_equal_lengths: bool | None = None
    options: tuple[str, ...] = ()
    setup: Callable[..., None] | None = field(default=None, repr=False)
    describe_backend: Callable[..., str] | None = field(default=None, repr=False)
    max_seconds: float | None = None
    max_seconds_reason: str = ""
    optional_transcript: bool = False
    aggregation: Aggregation | None = None
    mono_mix: Literal["float32", "float64"] | None = None
    subvalues: tuple[str, ...] = ()
    primary: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.tolerance, Tolerance):
            raise TypeError(
                f"metric {self.name!r}: expected tolerance=Tolerance(absolute=..., "
                f"relative=...), the change `bench compare` allows before a regression, "
                f"got {self.tolerance!r}"
            )
        if self.needs_equal_lengths is None:
            object.__setattr__(self, "needs_equal_lengths", self.needs_reference)
        if self.needs_equal_lengths and not self.needs_reference:
            raise ValueError(
                f"metric {self.name!r}: needs_equal_lengths applies to a reference and "
                "a degraded signal; expected needs_reference=True with it"
            )
        if isinstance(self.aggregation, PooledHistogram) and not self.needs_codes:
            raise ValueError(
                f"metric {self.name!r}: a PooledHistogram pools histograms of codes; "
                "expected needs_codes=True with it"
            )
        if self.primary is not None and self.primary not in self.subvalues:
            raise ValueError(
                f"metric {self.name!r}: its primary value must be one of its subvalues "
                f"{self.subvalues}, got {self.primary!r}"
            )
        if self.needs_codes and self.inputs != "audio":
            raise ValueError(
                f"metric {self.name!r}: needs_codes is for metrics of a decoded signal; "
                f"expected inputs='audio', got {self.inputs!r}"
            )

    def value_name(self, key: str) -> str:
        """The recorded name of the value ``key`` of a dict-valued metric."""
        return self.name if key == self.primary else f"{self.name}.{key}"

    @property
    def value_names(self) -> tuple[str, ...]:
        """The names a metric of known values records (:attr:`subvalues`), else its own."""
        return tuple(self.value_name(key) for key in self.subvalues) or (self.name,)

    @property
    def scores_files(self) -> bool:
        """Whether the metric can score a pair of audio files alone, with no codec run."""
        return self.inputs == "audio" and not self.needs_codes

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


def metric(**metadata: Any) -> Callable[[F], F]:
    """Register the decorated function as a metric: ``metadata`` is every
    :class:`MetricSpec` field but ``function``, and ``name`` defaults to the function's.

    The function is returned unchanged, for direct calls. ``tolerance`` is required: a
    metric without one is refused here, not gated by a guess.
    """

    def register(function: F) -> F:
        module, attribute = function.__module__, function.__qualname__
        spec = MetricSpec(function=function, **{"name": function.__name__, **metadata})
        METRICS.register(spec.name, spec, source=module, path=f"{module}:{attribute}")
        return function

    if "tolerance" not in metadata:
        raise TypeError(
            f"@metric(...) needs tolerance=Tolerance(absolute=..., relative=...): the change "
            f"`bench compare` allows before a regression; got only {', '.join(sorted(metadata))}"
        )
    return register


def metric_names() -> list[str]:
    return METRICS.names()


def get_metric(name: str) -> MetricSpec:
    spec = METRICS.factory(name)
    if not isinstance(spec, MetricSpec):
        raise TypeError(
            f"metric {name!r} from {METRICS.source(name)} is a {type(spec).__name__}; "
            "expected a function decorated with bench.metrics.metric (a MetricSpec)"
        )
    return spec

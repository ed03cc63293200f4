"""The metric contract: a pure function plus metadata, and a registry of them.

A metric is ``(reference, degraded, sample_rate, item) -> float | dict[str, float]`` on
``(channels, samples)`` float32 audio at the rate the metric declares (``bench.audio``
resamples; the metric never does). Coding metrics (rates, real-time factors) read the
measured :class:`CodingStats` instead of audio. A metric that cannot score an item
raises :class:`CannotScore` with the reason; the harness records NaN and that reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

from bench.data.item import Item
from bench.registry import UnknownNameError, did_you_mean


class CannotScore(Exception):
    """Raised by a metric that cannot score an item; the message is the recorded reason."""


@dataclass(frozen=True)
class CodingStats:
    """What the harness measured while coding one item, in seconds and kbps."""

    encode_seconds: float
    decode_seconds: float
    audio_seconds: float
    nominal_kbps: float
    actual_kbps: float


AudioMetricFunction = Callable[[torch.Tensor, torch.Tensor, int, Item], "float | dict[str, float]"]
CodingMetricFunction = Callable[[CodingStats], float]


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric and the metadata that drives runs, caching and reports.

    ``sample_rate`` is the rate the metric works at; ``None`` means the codec's own rate.
    ``version`` is the version of the metric's definition in this project and, with
    ``backend_version``, keys the metric cache: bump it when the definition changes.
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

    def metadata(self) -> dict:
        """Everything but the function, as recorded in a run's provenance."""
        data = asdict(self)
        data.pop("function")
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

"""Metrics with metadata, one module per family, all reachable through one registry."""

from bench.metrics import (  # noqa: F401  (importing registers the metrics)
    asr,
    coding,
    dnsmos,
    intelligibility,
    pesq,
    signal,
    speaker,
    visqol,
)
from bench.metrics.base import (
    CannotScore,
    CodingStats,
    MetricSpec,
    Ratio,
    Score,
    get_metric,
    metric_names,
    register_metric,
)

__all__ = [
    "CannotScore",
    "CodingStats",
    "MetricSpec",
    "Ratio",
    "Score",
    "get_metric",
    "metric_names",
    "register_metric",
]

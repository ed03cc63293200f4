"""Metrics with metadata, one module per family, each registered with ``@metric``.

Every module of this package is imported at the first look-up (``metric_names``,
``get_metric``), so adding a metric module needs no edit here.
"""

from bench.metrics.base import (
    CannotScore,
    CodingStats,
    MetricSpec,
    PooledHistogram,
    Ratio,
    Score,
    Tolerance,
    get_metric,
    metric,
    metric_names,
)

__all__ = [
    "CannotScore",
    "CodingStats",
    "MetricSpec",
    "PooledHistogram",
    "Ratio",
    "Score",
    "Tolerance",
    "get_metric",
    "metric",
    "metric_names",
]

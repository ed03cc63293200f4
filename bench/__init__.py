"""A benchmark harness for neural audio codecs: sweeps, metrics, reports."""

__version__ = "0.1.0"

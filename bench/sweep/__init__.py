"""Sweeps: codec condition x item -> result records.

``plan`` (settings, the condition grid, tasks, run naming), ``evaluate`` (one task: code,
decode, score; the worker's state), ``records`` (the result schema) and ``run``
(orchestration, resume, provenance, writing). Tasks run on an executor from
:mod:`bench.executors`.
"""

from bench.sweep.evaluate import Evaluator, ListeningAudio, TaskResult
from bench.sweep.plan import (
    Condition,
    Plan,
    SweepSettings,
    Task,
    format_kbps,
    listening_selection,
    parse_list,
    plan,
    refuse_duplicates,
)
from bench.sweep.records import RESULTS_SCHEMA_VERSION, Decoding, Record
from bench.sweep.run import DEFAULT_CACHE_DIR, RunInterrupted, RunSummary, run_sweep

__all__ = [
    "DEFAULT_CACHE_DIR",
    "RESULTS_SCHEMA_VERSION",
    "Condition",
    "Decoding",
    "Evaluator",
    "ListeningAudio",
    "Plan",
    "Record",
    "RunInterrupted",
    "RunSummary",
    "SweepSettings",
    "Task",
    "TaskResult",
    "format_kbps",
    "listening_selection",
    "parse_list",
    "plan",
    "refuse_duplicates",
    "run_sweep",
]

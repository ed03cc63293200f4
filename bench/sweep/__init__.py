"""Sweeps: codec condition x item -> result records.

``settings`` (what determines a run's results), ``plan`` (the condition grid, tasks, run
naming), ``evaluate`` (one task: code, decode, score; the worker's state), ``records`` (the
result schema) and ``run`` (orchestration, resume, provenance, writing). Tasks run on an
executor from :mod:`bench.executors`.

The settings load with the package; the rest, which needs torch, on first use (PEP 562), so
that the command line can read the settings' defaults and start without torch.
"""

import importlib

from bench.sweep.settings import SweepSettings, parse_list, refuse_duplicates

# The names the package offers from its other modules, by module.
_LAZY_NAMES = {
    "evaluate": ("Evaluator", "ListeningAudio", "TaskResult"),
    "plan": ("Condition", "Plan", "Task", "format_kbps", "listening_selection"),
    "records": ("RESULTS_SCHEMA_VERSION", "Decoding", "Record"),
    "run": ("DEFAULT_CACHE_DIR", "RunInterrupted", "RunSummary", "run_sweep"),
}
_MODULE_OF = {name: module for module, names in _LAZY_NAMES.items() for name in names}


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


__all__ = ["SweepSettings", "parse_list", "refuse_duplicates", *_MODULE_OF]

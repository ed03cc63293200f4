"""The measured cost of each metric, in compute seconds per second of audio.

``benchmarks/metric_costs.py`` measures them on the machine it runs on and saves them in
the cache folder, where ``bench metrics`` reads the last measurement. Without one, it
shows the figures shipped with the package (``measured_costs.json``), measured on the
project's reference machine and labelled as such.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

from bench.store import DEFAULT_CACHE_DIR

COSTS_FILE_NAME = "metric_costs.json"
SHIPPED_COSTS = files("bench.metrics").joinpath("measured_costs.json")


def local_costs_path(cache_dir: str | Path = DEFAULT_CACHE_DIR) -> Path:
    return Path(cache_dir) / COSTS_FILE_NAME


def save_costs(measurement: dict, cache_dir: str | Path = DEFAULT_CACHE_DIR) -> Path:
    """Store a measurement (``{"costs": {metric: s_per_s}, "device": ..., ...}``)."""
    path = local_costs_path(cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(measurement, indent=2))
    return path


def load_costs(cache_dir: str | Path = DEFAULT_CACHE_DIR) -> tuple[dict[str, float], str]:
    """The last measured costs and a line saying where and when they were measured."""
    for path, origin in (
        (local_costs_path(cache_dir), "this machine"),
        (SHIPPED_COSTS, "the project's reference machine"),
    ):
        if path.is_file():
            measurement = json.loads(path.read_text())
            device = measurement.get("device", {})
            where = f"{origin} ({device.get('cpu_model', 'unknown CPU')}, 1 thread)"
            return (
                measurement["costs"],
                f"cost: s per audio-second, measured on {where} "
                f"at {measurement.get('measured', 'an unknown time')}",
            )
    return {}, "cost: not measured yet (run benchmarks/metric_costs.py)"

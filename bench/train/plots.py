"""The loss curves of a training run, drawn from its JSONL log."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path


def plot_training_log(log_path: Path, out_path: Path, losses: Sequence[str]) -> Path:
    """``losses`` against step, one panel per loss the log holds, log scale where positive."""
    import pandas as pd
    from matplotlib.figure import Figure

    log = pd.read_json(log_path, lines=True)
    names = [name for name in losses if name in log]
    figure = Figure(figsize=(10, 2.2 * math.ceil(len(names) / 2)), layout="constrained")
    axes = figure.subplots(math.ceil(len(names) / 2), 2, squeeze=False).ravel()
    for panel, name in zip(axes, names, strict=False):
        values = log[["step", name]].dropna()
        panel.plot(values["step"], values[name], linewidth=0.6, alpha=0.4)
        smoothed = values[name].rolling(max(1, len(values) // 50), min_periods=1).mean()
        panel.plot(values["step"], smoothed, linewidth=1.5)
        panel.set_title(f"{name} loss")
        panel.set_xlabel("step")
        if (values[name] > 0).all():
            panel.set_yscale("log")
    for panel in axes[len(names) :]:
        panel.set_visible(False)
    figure.savefig(out_path, dpi=120)
    return out_path

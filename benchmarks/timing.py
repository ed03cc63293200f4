"""What the codec speed benchmarks share: held-out speech of a given length, a median wall
time, and the provenance a speed report carries."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from bench import audio as bench_audio
from bench.data import load_dataset
from bench.provenance import backend_versions, device_fingerprint, git_state


def speech(seconds: float, sample_rate: int) -> torch.Tensor:
    """``seconds`` of the embedded corpus's LibriVox utterance (held out from training),
    repeated as needed, mono at ``sample_rate``."""
    item = next(
        item for item in load_dataset("embedded", tags=("speech",)).items if "librivox" in item.id
    )
    audio, _ = bench_audio.prepare(bench_audio.load_audio(item.path), sample_rate, 1)
    repeats = int(np.ceil(seconds * sample_rate / audio.shape[-1]))
    return audio.repeat(1, repeats)[:, : int(seconds * sample_rate)]


def median_seconds(function: Callable[[], object], rounds: int) -> float:
    """The median wall time of ``rounds`` calls of ``function``."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def provenance(threads: int) -> dict:
    """The device (with up to ``threads`` threads), the backends' versions and the commit."""
    return {
        "device": device_fingerprint(threads),
        "versions": backend_versions(),
        "git": git_state(),
    }

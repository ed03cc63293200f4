"""What a solver is: one model family's training, run by the loop in :mod:`bench.train.loop`.

After audiocraft's ``StandardSolver``: the solver builds its networks and optimisers from its
settings, owns its batches, losses and what it exports; the loop owns steps, resume, the log,
progress, checkpoints, Ctrl-C and DDP, identically for every solver.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from bench.codecs.checkpoint import Checkpoint
from bench.train.data import SegmentSampler
from bench.train.settings import SolverSettings


def step_seed(seed: int, step: int) -> int:
    """The seed of every random draw at ``step``: what makes a resumed run continue exactly."""
    return seed * 1_000_003 + step


class Solver(ABC):
    """One model family's training.

    A solver draws every random number of step ``s`` from ``step_seed(seed, s)``, so that a run
    resumed from its saved state continues exactly as if it had never stopped.
    """

    # The run folder's files: the resumable state, the exported model and the JSONL log.
    last_checkpoint: ClassVar[str] = "last.pt"
    model_checkpoint: ClassVar[str] = "model.pt"
    log_file: ClassVar[str] = "train_log.jsonl"

    # Set by every solver's constructor: what the progress bar and the resumable state's
    # `codec` field say, and the rate (Hz) and channel count of its training audio.
    name: str
    sample_rate: int
    channels: int

    def __init__(self, settings: SolverSettings, device: torch.device | None = None) -> None:
        self.settings = settings
        self.device = device or torch.device("cpu")
        self.sampler: SegmentSampler | None = None
        # Set by `wrap_for_workers`: this worker's rank among `world_size`.
        self.rank, self.world_size = 0, 1

    @abstractmethod
    def networks(self) -> dict[str, tuple[dict, nn.Module]]:
        """The networks a resumable state holds, by name: (the config that built it, module)."""

    @abstractmethod
    def training_state(self) -> dict[str, dict]:
        """The optimisers' (and any other) state a resumed run needs beside the networks."""

    @abstractmethod
    def load_training_state(self, state: dict[str, dict]) -> None:
        """Restore what :meth:`training_state` returned."""

    @abstractmethod
    def run_step(self, step: int) -> dict:
        """Train step ``step`` (from ``step`` to ``step + 1``); returns the values to log."""

    @abstractmethod
    def export(self, path: Path, step: int, metadata: dict) -> None:
        """Write the trained model, what a codec loads, to ``path``."""

    def progress(self, log: dict) -> dict[str, str]:
        """The figures the progress bar shows after a step that logged ``log``."""
        return {}

    def metadata(self) -> dict:
        """What the solver adds to every checkpoint's metadata (the codec trained on, say)."""
        return {}

    def check_resumable(self, checkpoint: Checkpoint) -> None:  # noqa: B027 - optional hook
        """Refuse (``ValueError``) a saved state this solver cannot continue, beyond the
        settings and networks the loop compares."""

    def wrap_for_workers(self, rank: int, world_size: int) -> None:
        """Join ``world_size`` workers as ``rank``: wrap what averages gradients in DDP."""
        self.rank, self.world_size = rank, world_size

    def use_data(self, sampler: SegmentSampler | None = None) -> None:
        """Draw batches from ``sampler``; by default, segments of the settings' data."""
        settings = self.settings
        self.sampler = sampler or SegmentSampler(
            settings.data,
            self.sample_rate,
            self.channels,
            settings.segment_seconds,
            settings.data_limit,
        )

    def finish(self, out_dir: Path) -> None:  # noqa: B027 - optional hook
        """After the export: anything else the run folder gets (the loss plot, say)."""

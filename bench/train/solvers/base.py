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
from torch.nn.parallel import DistributedDataParallel

from bench.codecs.checkpoint import Checkpoint
from bench.train.data import SegmentSampler
from bench.train.settings import SolverSettings


def data_parallel(module: nn.Module, device: torch.device) -> DistributedDataParallel:
    """``module`` wrapped for gradient averaging over the workers, on ``device``."""
    return DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None
    )


def discriminator_config(settings: SolverSettings) -> dict:
    """What a checkpoint records of a solver's discriminators: families and width."""
    return {"families": list(settings.discriminators), "filters": settings.discriminator_filters}


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

    def training_parts(self) -> dict[str, object | None]:
        """What a resumed run restores beside the networks, by name: the optimisers, a loss
        balancer (each with ``state_dict`` and ``load_state_dict``; ``None`` where this run
        has none). A solver gives these, or overrides the two methods below."""
        return {}

    def training_state(self) -> dict[str, dict]:
        """The state of every part of :meth:`training_parts`."""
        return {
            name: part.state_dict()
            for name, part in self.training_parts().items()
            if part is not None
        }

    def load_training_state(self, state: dict[str, dict]) -> None:
        """Restore what :meth:`training_state` returned."""
        for name, part in self.training_parts().items():
            if part is not None:
                part.load_state_dict(state[name])

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

    def use_data(self, sampler: SegmentSampler | None = None, progress: bool = True) -> None:
        """Draw batches from ``sampler``; by default, segments of the settings' data
        (``progress``: with a bar while they load)."""
        settings = self.settings
        self.sampler = sampler or SegmentSampler(
            settings.data,
            self.sample_rate,
            self.channels,
            settings.segment_seconds,
            settings.data_limit,
            progress,
        )

    def finish(self, out_dir: Path) -> None:  # noqa: B027 - optional hook
        """After the export: anything else the run folder gets (the loss plot, say)."""

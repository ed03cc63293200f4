"""What `bench listen export` is asked for: :class:`ExportSettings`.

This module imports no torch: the command line takes its defaults from here when it starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ExportSettings:
    """What `bench listen export` was asked for."""

    items: int = 10
    conditions: tuple[str, ...] | None = None
    target_lufs: float = -23.0
    max_seconds: float = 10.0
    selection_metric: str | None = None
    test_id: str | None = None

    def __post_init__(self) -> None:
        # Imported here: the stimuli bring torch, and the command line reads this class's
        # defaults at start-up.
        from bench.listen.stimuli import LOUDNESS_BLOCK_SECONDS

        if self.items < 1:
            raise ValueError(f"--items: expected at least 1, got {self.items}")
        if not math.isfinite(self.max_seconds) or self.max_seconds < LOUDNESS_BLOCK_SECONDS:
            raise ValueError(
                f"--max-seconds: expected at least {LOUDNESS_BLOCK_SECONDS:g} (one BS.1770 "
                f"loudness block), got {self.max_seconds}"
            )
        if not math.isfinite(self.target_lufs):
            raise ValueError(f"--loudness: expected a finite LUFS value, got {self.target_lufs}")

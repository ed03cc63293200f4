"""Training data for the solvers: random fixed-length segments of a dataset, drawn as a pure
function of (seed, step) so that a resumed run draws what an uninterrupted one would."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from bench import audio as bench_audio
from bench.data import DatasetError, load_dataset


class SegmentSampler:
    """Random fixed-length segments of a dataset, a pure function of (seed, step).

    Items are loaded once, converted to the model's rate and channel count; items shorter
    than a segment are zero-padded, as short sentences would be. A file that cannot be
    used (too short to evaluate, unreadable) is skipped with a printed note naming it, so
    that one bad file among thousands neither stops training nor goes unnoticed.
    """

    def __init__(
        self,
        spec: str,
        sample_rate: int,
        channels: int,
        seconds: float,
        limit: int | None = None,
        progress: bool = True,
    ) -> None:
        dataset = load_dataset(spec, limit=limit)
        self.segment = int(round(seconds * sample_rate))
        self.clips: list[torch.Tensor] = []
        self.skipped = list(dataset.skipped)
        for item in tqdm(
            dataset.items, desc="loading training audio", unit="item", disable=not progress
        ):
            try:
                loaded = bench_audio.load_audio(item.path)
            except bench_audio.AudioError as error:
                self.skipped.append(f"{item.path}: {error}")
                continue
            audio, _ = bench_audio.prepare(loaded, sample_rate, channels)
            self.clips.append(audio)
        for note in self.skipped:
            tqdm.write(f"note: training data: skipped {note}")
        if not self.clips:
            raise DatasetError(
                f"training data {spec!r}: no usable item; skipped: {'; '.join(self.skipped)}"
            )
        self.durations = np.array([clip.shape[-1] for clip in self.clips], dtype=float)
        self.seconds = float(self.durations.sum() / sample_rate)

    def batch(self, seed: int, step: int, batch_size: int, stream: int = 0) -> torch.Tensor:
        """Segments for ``step``; ``stream`` separates draws for other purposes (init)."""
        rng = np.random.default_rng([seed, step, stream])
        # Longer items hold more distinct segments: sample them in proportion.
        chosen = rng.choice(
            len(self.clips), size=batch_size, p=self.durations / self.durations.sum()
        )
        segments = []
        for index in chosen:
            clip = self.clips[index]
            start = int(rng.integers(0, max(1, clip.shape[-1] - self.segment + 1)))
            segment = clip[..., start : start + self.segment]
            segments.append(nn.functional.pad(segment, (0, self.segment - segment.shape[-1])))
        return torch.stack(segments)

"""Histograms of a codec's discrete codes, carried as a metric's integer counts, and the
statistics computed from them: codebook usage, unigram entropy and perplexity, and the rate
of an ideal entropy coder (the token statistics of codecscope and Codec-SUPERB).

A metric aggregated as :class:`bench.metrics.PooledHistogram` reports its item's histogram
in :attr:`bench.metrics.Score.counts`, keyed as follows (JSON-friendly, sparse: only codes
that occur):

- ``"L{level}:{code}"``: how often ``code`` occurs at ``level`` (row ``level`` of
  ``Encoded.codes``); only these keys start with ``L``;
- ``"samples"``: the audio samples the codes cover, summed when items are pooled;
- any other key is a constant of the condition, equal for every item (``"sample_rate"``,
  ``"codebook_size"``, which is absent where the codec does not state it).

One statistic function serves an item and a condition alike: a report sums the items'
histograms and applies the statistic the metric applied to one item, so a condition's value
is the statistic of its pooled codes, not a mean of per-item values. The functions take
:class:`CodeHistograms` whose arrays may have leading batch axes (bootstrap resamples).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import xlogy

if TYPE_CHECKING:  # only annotations: reports pool counts without loading torch
    import torch

SAMPLES = "samples"
SAMPLE_RATE = "sample_rate"
CODEBOOK_SIZE = "codebook_size"
_BIN = re.compile(r"L(\d+):(\d+)")
_LEVEL = re.compile(r"L(\d+)")
# Marks a key not seen before in CodeHistograms.of_items.
_UNSEEN = object()


def bin_key(level: int, code: int) -> str:
    return f"L{level}:{code}"


def is_bin(key: str) -> bool:
    """Whether ``key`` is a histogram bin's (the counts a metric reports were checked by
    :meth:`bench.metrics.PooledHistogram.check_counts`, so the prefix tells)."""
    return key[:1] == "L"


def split_bin(key: str) -> tuple[int, int] | None:
    """``(level, code)`` of a histogram bin's key (``"L3:17"`` -> (3, 17)), ``None`` for
    other keys; ``ValueError`` for a key that starts with ``L`` and is not a bin's."""
    if not is_bin(key):
        return None
    match = _BIN.fullmatch(key)
    if match is None:
        raise ValueError(f"expected a histogram bin's key 'L<level>:<code>', got {key!r}")
    return int(match[1]), int(match[2])


def level_of_name(key: str) -> int | None:
    """The level a sub-metric's key names (``"L3"`` -> 3), ``None`` for other keys."""
    match = _LEVEL.fullmatch(key)
    return int(match[1]) if match else None


def code_counts(
    codes: torch.Tensor, *, samples: int, sample_rate: int, codebook_size: int | None
) -> dict[str, int]:
    """The histogram of ``codes`` ``(levels, frames)`` as counts (see the module docstring).

    ``samples`` at ``sample_rate`` is the audio the codes cover; ``codebook_size``
    (``None``: unknown) is recorded for usage.
    """
    if codes.dim() != 2 or codes.is_floating_point():
        raise ValueError(
            f"expected integer codes shaped (levels, frames), got {codes.dtype} codes "
            f"shaped {tuple(codes.shape)}"
        )
    counts: dict[str, int] = {}
    for level, row in enumerate(codes.detach().cpu().numpy()):
        values, occurrences = np.unique(row, return_counts=True)
        counts.update(
            (bin_key(level, int(code)), int(count))
            for code, count in zip(values, occurrences, strict=True)
        )
    counts[SAMPLES] = int(samples)
    counts[SAMPLE_RATE] = int(sample_rate)
    if codebook_size is not None:
        counts[CODEBOOK_SIZE] = int(codebook_size)
    return counts


@dataclass(frozen=True)
class CodeHistograms:
    """Code histograms of one or more items, ``(..., codes)`` per level.

    ``levels`` maps a level to the counts of the codes that occur at it in any item (the
    columns of all items share one order); ``samples`` is shaped like the leading axes;
    ``constants`` holds the condition's constants (``sample_rate``, ``codebook_size``).
    """

    levels: dict[int, np.ndarray]
    samples: np.ndarray
    constants: dict[str, int]

    @classmethod
    def of_items(cls, items: Sequence[dict[str, float]]) -> CodeHistograms:
        """One row per item, from each item's counts (a sparse dict as above).

        Raises ``ValueError`` where two items disagree on a constant.
        """
        constants: dict[str, int] = {}
        # Each key is parsed once: a bin's key maps to its level and its column there.
        places: dict[str, tuple[int, int] | None] = {}
        widths: dict[int, int] = {}
        cells: dict[int, tuple[list, list, list]] = {}
        for row, counts in enumerate(items):
            for key, value in counts.items():
                place = places.get(key, _UNSEEN)
                if place is _UNSEEN:
                    place = split_bin(key)
                    if place is not None:
                        level = place[0]
                        place = places[key] = (level, widths.get(level, 0))
                        widths[level] = place[1] + 1
                    places[key] = place
                if place is not None:
                    rows, columns, values = cells.setdefault(place[0], ([], [], []))
                    rows.append(row)
                    columns.append(place[1])
                    values.append(value)
                elif key != SAMPLES and constants.setdefault(key, value) != value:
                    raise ValueError(
                        f"the items pooled disagree on {key}: {constants[key]} and {value}"
                    )
        levels = {}
        for level in sorted(widths):
            levels[level] = np.zeros((len(items), widths[level]))
            rows, columns, values = cells[level]
            levels[level][rows, columns] = values
        samples = np.array([counts.get(SAMPLES, 0) for counts in items], dtype=float)
        return cls(levels, samples, constants)

    def pooled(self, weights: np.ndarray | None = None) -> CodeHistograms:
        """The histograms summed over items (the last leading axis), each item weighted by
        ``weights`` ``(..., items)`` if given (a bootstrap resample's draw counts)."""
        if weights is None:
            weights = np.ones(self.samples.shape[-1])
        return CodeHistograms(
            {level: weights @ counts for level, counts in self.levels.items()},
            weights @ self.samples,
            self.constants,
        )


def _entropies(histograms: CodeHistograms) -> dict[int, np.ndarray]:
    """Each level's unigram entropy in bits per code (NaN for a level without codes)."""
    entropies = {}
    for level, counts in histograms.levels.items():
        total = counts.sum(axis=-1)
        # H = log N - sum(c log c) / N, with 0 log 0 = 0 (xlogy): one pass over the
        # counts, which matters when a bootstrap holds thousands of resampled histograms.
        with np.errstate(divide="ignore", invalid="ignore"):
            nats = np.log(total) - xlogy(counts, counts).sum(axis=-1) / total
        entropies[level] = np.where(total > 0, np.maximum(nats, 0.0) / np.log(2), np.nan)
    return entropies


def usage(histograms: CodeHistograms) -> dict[str, np.ndarray]:
    """The share of each level's codebook that occurs (``L{level}``), and of all levels'
    codebooks together (``overall``); NaN where the codebook size is unknown."""
    size = histograms.constants.get(CODEBOOK_SIZE)
    size = np.nan if size is None else float(size)
    used = {level: (counts > 0).sum(axis=-1) for level, counts in histograms.levels.items()}
    shares = {f"L{level}": count / size for level, count in used.items()}
    shares["overall"] = sum(used.values()) / (len(used) * size) if used else np.nan
    return shares


def entropy(histograms: CodeHistograms) -> dict[str, np.ndarray]:
    """Each level's unigram entropy in bits per code (``L{level}``), their mean over
    levels (``mean``) and the perplexity ``2 ** mean`` (``perplexity``: the number of
    equally likely codes with that entropy, the geometric mean of the levels')."""
    entropies = _entropies(histograms)
    values = {f"L{level}": value for level, value in entropies.items()}
    values["mean"] = sum(entropies.values()) / len(entropies) if entropies else np.nan
    values["perplexity"] = 2.0 ** values["mean"]
    return values


def entropy_kbps(histograms: CodeHistograms) -> np.ndarray:
    """The rate in kbps of an ideal entropy coder that knows each level's unigram
    distribution: the sum over levels of entropy (bits per code) times codes per second,
    the codes counted over the audio they cover (so the frame rate is the one the payload
    pays for, padding frames included). The cost of sending the distributions is left out."""
    seconds = histograms.samples / histograms.constants.get(SAMPLE_RATE, np.nan)
    bits = sum(
        value * histograms.levels[level].sum(axis=-1)
        for level, value in _entropies(histograms).items()
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return bits / seconds / 1000.0 if histograms.levels else np.nan * seconds


# The statistics a PooledHistogram may name, with what a report says its value is.
STATISTICS: dict[str, tuple[Callable[[CodeHistograms], object], str]] = {
    "usage": (usage, "share of the codebook used in any item (codes pooled over items)"),
    "entropy": (entropy, "entropy of the code histogram summed over items"),
    "entropy_kbps": (entropy_kbps, "entropy-coder rate of the code histogram summed over items"),
}

"""Token statistics: metrics on a codec's discrete codes (``Encoded.codes``), as codecscope
and Codec-SUPERB measure tokenisers: codebook usage, unigram entropy and perplexity per
level, and the rate an ideal entropy coder would reach with those unigram statistics.

Each metric reports its item's code histogram as counts and is aggregated as a
:class:`~bench.metrics.PooledHistogram`: a row's value is the item's own statistic, and a
report's value for a condition is the statistic of the histogram summed over the
condition's items (a code used in any item counts as used). The statistics are in
:mod:`bench.metrics.histograms`. A codec without codes (Opus, MP3) gives NaN with the reason.
"""

from __future__ import annotations

import numpy as np
import torch

from bench import __version__ as bench_version
from bench.codecs.base import Encoded
from bench.data.item import Item
from bench.metrics import histograms
from bench.metrics.base import CannotScore, PooledHistogram, Score, Tolerance, metric

TOKENS = {
    "needs_reference": False,
    "needs_transcript": False,
    "needs_codes": True,
    "sample_rate": None,
    "backend": "bench (numpy)",
    "backend_version": f"{bench_version}/numpy {np.__version__}",
}
NO_CODES = "the codec has no discrete codes (Encoded.codes is None)"


def _histograms(encoded: Encoded, *, needs_codebook_size: bool = False) -> dict[str, int]:
    """The item's code counts; :class:`CannotScore` where there is nothing to count."""
    if encoded.codes is None:
        raise CannotScore(NO_CODES)
    if encoded.codes.numel() == 0:
        raise CannotScore(f"no codes: the codes are shaped {tuple(encoded.codes.shape)}")
    if needs_codebook_size and encoded.codebook_size is None:
        raise CannotScore("the codec does not state its codebook size (Encoded.codebook_size)")
    return histograms.code_counts(
        encoded.codes,
        samples=encoded.num_samples,
        sample_rate=encoded.sample_rate,
        codebook_size=encoded.codebook_size,
    )


def _score(counts: dict[str, int], statistic: str, note: str) -> Score:
    """The item's own value of ``statistic`` with its counts, for the report to pool."""
    function = histograms.STATISTICS[statistic][0]
    value = function(histograms.CodeHistograms.of_items([counts]).pooled())
    if isinstance(value, dict):
        value = {key: float(entry) for key, entry in value.items()}
    else:
        value = float(value)
    return Score(value, note, counts)


@metric(
    **TOKENS,
    higher_is_better=True,
    unit="share",
    description=(
        "share of each level's codebook used (L<level>) and of all levels' (overall), "
        "pooled over a condition's items"
    ),
    tolerance=Tolerance(absolute=0.02),
    aggregation=PooledHistogram("usage"),
)
def codebook_usage(
    reference: torch.Tensor,
    degraded: torch.Tensor,
    sample_rate: int,
    item: Item,
    *,
    encoded: Encoded,
) -> Score:
    """The share of codes of each level's codebook that occur in the item.

    A row holds the item's own share; a report's condition value counts a code used if any
    item of the condition uses it.
    """
    counts = _histograms(encoded, needs_codebook_size=True)
    note = f"codebooks of {encoded.codebook_size} codes; the row's value is this item's own"
    return _score(counts, "usage", note)


@metric(
    **TOKENS,
    higher_is_better=True,
    unit="bits (perplexity: codes)",
    description=(
        "unigram entropy of each level's codes in bits (L<level>), its mean over levels "
        "(mean) and 2**mean (perplexity), of the histogram pooled over a condition's items"
    ),
    tolerance=Tolerance(absolute=0.1),
    aggregation=PooledHistogram("entropy"),
)
def token_entropy(
    reference: torch.Tensor,
    degraded: torch.Tensor,
    sample_rate: int,
    item: Item,
    *,
    encoded: Encoded,
) -> Score:
    """Each level's unigram entropy in bits per code, their mean and the perplexity.

    On one item the plug-in estimate is biased low (a short item cannot show a code
    distribution's tail); the pooled histogram of a condition is the figure to report.
    """
    note = "the row's value is this item's own; the condition's is of the pooled codes"
    return _score(_histograms(encoded), "entropy", note)


@metric(
    **TOKENS,
    higher_is_better=False,
    unit="kbps",
    description=(
        "rate of an ideal entropy coder with each level's unigram statistics: entropy "
        "(bits/code) x codes/s summed over levels, pooled over a condition's items"
    ),
    tolerance=Tolerance(relative=0.02),
    aggregation=PooledHistogram("entropy_kbps"),
)
def kbps_entropy_bound(
    reference: torch.Tensor,
    degraded: torch.Tensor,
    sample_rate: int,
    item: Item,
    *,
    encoded: Encoded,
) -> Score:
    """The kbps a memoryless entropy coder would reach on these codes if it knew each
    level's unigram distribution: to set beside the nominal, actual and LM-coded kbps.

    Not a bound on a coder with context (EnCodec's LM predicts a code from the previous
    frames and may go below it); the cost of sending the distributions is left out.
    """
    note = "the row's value is this item's own; the condition's is of the pooled codes"
    return _score(_histograms(encoded), "entropy_kbps", note)

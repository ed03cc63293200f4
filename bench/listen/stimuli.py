"""Stimulus processing for MUSHRA listening tests (ITU-R BS.1534-3).

Turns a reference and its decoded conditions into the stimuli of one trial: a common
listening rate, codec delay removed, the BS.1534-3 low-pass anchors, an excerpt of at most
the recommended length with short fades, and equal integrated loudness (ITU-R BS.1770 /
EBU R128, measured with pyloudnorm). It also chooses which items go into the test.
Audio is float32 ``(channels, samples)`` throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyloudnorm
import torch
from scipy import signal

from bench.codecs.base import fit_length
from bench.registry import create_codec

LISTENING_RATE = 48_000
"""Hz: the rate stimuli are played at, unless the reference itself is at a lower one."""

ANCHOR_CODECS: dict[str, str] = {"anchor35": "lowpass3k5", "anchor70": "lowpass7k"}
"""The BS.1534-3 anchors, by their names in the codec registry: low-passes of the reference
at 3.5 kHz (low) and 7 kHz (mid)."""

EXCERPT_SEARCH_STEP_SECONDS = 0.25

LOUDNESS_BLOCK_SECONDS = 0.4
"""The gating block of BS.1770 loudness: a shorter stimulus cannot be levelled."""

MAX_LISTENING_CHANNELS = 2
"""Stimuli are mono or stereo; references with more channels are downmixed to mono."""


@dataclass(frozen=True)
class LoudnessResult:
    """The stimuli of one trial brought to one integrated loudness.

    ``gains_db`` and ``measured_lufs`` (before the gain) are per stimulus; ``target_lufs`` is
    the loudness every stimulus now has, which is the requested target minus
    ``lowered_by_db`` when the requested one would have clipped.
    """

    stimuli: dict[str, torch.Tensor]
    gains_db: dict[str, float]
    measured_lufs: dict[str, float]
    target_lufs: float
    lowered_by_db: float


def _check_audio(audio: torch.Tensor, what: str) -> None:
    if not isinstance(audio, torch.Tensor) or audio.dim() != 2 or audio.shape[-1] == 0:
        shape = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
        raise ValueError(f"expected {what} as a non-empty (channels, samples) tensor, got {shape}")


def _check_rate(sample_rate: int) -> None:
    if sample_rate <= 0:
        raise ValueError(f"expected a positive sample rate in Hz, got {sample_rate}")


def listening_rate(reference_rate: int) -> int:
    """The rate in Hz to play a trial at: 48 kHz, or the reference's rate if that is lower.

    Upsampling a narrower reference would add no content, only larger files.
    """
    _check_rate(reference_rate)
    return min(LISTENING_RATE, int(reference_rate))


def listening_channels(channels: int) -> int:
    """The channel count to play a reference with ``channels`` at: its own, up to stereo.

    More channels are downmixed to mono (the harness's downmix, as mono codecs get them):
    a headphone test has no layout for them, and BS.1770 loudness as pyloudnorm measures it
    takes at most the five channels of a 5.0 layout.
    """
    if channels < 1:
        raise ValueError(f"expected at least one channel, got {channels}")
    return channels if channels <= MAX_LISTENING_CHANNELS else 1


def unplayable_reason(sample_rate: int, seconds: float) -> str | None:
    """Why a reference of this rate and excerpt length cannot make a MUSHRA trial, or None.

    Both anchors must exist at the listening rate (a 7 kHz low-pass needs content above
    7 kHz; upsampling would only make it equal the reference), and the excerpt must be at
    least one BS.1770 loudness block long.
    """
    rate = listening_rate(sample_rate)
    for name, codec_name in ANCHOR_CODECS.items():
        try:
            create_codec(codec_name, sample_rate=rate)
        except ValueError as error:
            return (
                f"sample rate {sample_rate} Hz is too low for the {name} low-pass anchor: {error}"
            )
    if seconds < LOUDNESS_BLOCK_SECONDS:
        return (
            f"{seconds:.3g} s long, shorter than the {LOUDNESS_BLOCK_SECONDS:g} s block "
            "that BS.1770 loudness is measured in, so it cannot be levelled with the others"
        )
    return None


def align_to_reference(
    reference: torch.Tensor,
    degraded: torch.Tensor,
    sample_rate: int,
    max_shift_seconds: float = 0.05,
) -> tuple[torch.Tensor, int]:
    """Undo a codec's delay: returns ``degraded`` aligned and trimmed to the reference's length.

    The delay is the lag, within +-``max_shift_seconds``, that maximises the cross-correlation
    of the two mono mixes. The returned shift is in samples, positive when ``degraded``
    lagged the reference. A silent signal has no delay to find and gives a shift of 0.
    """
    _check_audio(reference, "the reference")
    _check_audio(degraded, "the degraded signal")
    _check_rate(sample_rate)
    if degraded.shape[0] != reference.shape[0]:
        raise ValueError(
            f"expected the degraded signal to have the reference's {reference.shape[0]} "
            f"channel(s), got {degraded.shape[0]}"
        )
    if max_shift_seconds < 0:
        raise ValueError(f"expected max_shift_seconds >= 0, got {max_shift_seconds}")
    num_samples = reference.shape[-1]
    reference_mono = reference.double().mean(dim=0).numpy()
    degraded_mono = degraded.double().mean(dim=0).numpy()
    if not np.any(reference_mono) or not np.any(degraded_mono):
        return fit_length(degraded, num_samples), 0

    # correlate(degraded, reference) peaks at lag d when degraded[n + d] matches reference[n].
    correlation = signal.correlate(degraded_mono, reference_mono, mode="full", method="fft")
    lags = signal.correlation_lags(degraded_mono.size, reference_mono.size, mode="full")
    max_shift = int(round(max_shift_seconds * sample_rate))
    allowed = np.abs(lags) <= max_shift
    shift = int(lags[allowed][np.argmax(correlation[allowed])])

    if shift >= 0:
        aligned = degraded[:, shift:]
    else:
        aligned = torch.nn.functional.pad(degraded, (-shift, 0))
    return fit_length(aligned, num_samples), shift


def anchors(reference: torch.Tensor, sample_rate: int) -> dict[str, torch.Tensor]:
    """The BS.1534-3 low-pass anchors of ``reference``: ``anchor35`` and ``anchor70``.

    Built by the registered anchor codecs (``lowpass3k5``, ``lowpass7k``), so a listening
    test uses exactly the filter the objective runs scored; they are zero phase and keep the
    reference's length.
    """
    _check_audio(reference, "the reference")
    _check_rate(sample_rate)
    made = {}
    for name, codec_name in ANCHOR_CODECS.items():
        codec = create_codec(codec_name, sample_rate=sample_rate, channels=reference.shape[0])
        made[name] = codec.decode(codec.encode(reference, codec.bitrates[0]))
    return made


def normalise_loudness(
    stimuli: dict[str, torch.Tensor],
    sample_rate: int,
    target_lufs: float = -23.0,
    peak_ceiling_dbfs: float = -1.0,
) -> LoudnessResult:
    """Give every stimulus of a trial the same integrated loudness (BS.1770, EBU R128).

    Equal loudness keeps listeners from rating level instead of quality. The default target
    is EBU R128's -23 LUFS; the sample peak of every stimulus stays at or below
    ``peak_ceiling_dbfs``. Raises ValueError naming a stimulus too short or too quiet to
    measure.
    """
    if not stimuli:
        raise ValueError("expected at least one stimulus, got none")
    _check_rate(sample_rate)
    meter = pyloudnorm.Meter(sample_rate)
    measured_lufs: dict[str, float] = {}
    peak_dbfs: dict[str, float] = {}
    for name, audio in stimuli.items():
        _check_audio(audio, f"stimulus '{name}'")
        samples = audio.detach().cpu().double().numpy().T
        try:
            loudness = float(meter.integrated_loudness(samples))
        except ValueError as error:  # pyloudnorm refuses audio shorter than one 400 ms block
            raise ValueError(
                f"cannot measure the loudness of stimulus '{name}': {error}"
            ) from error
        if not np.isfinite(loudness):
            raise ValueError(
                f"cannot measure the loudness of stimulus '{name}': expected audio above the "
                f"BS.1770 gate, got {loudness} LUFS (silent or too quiet)"
            )
        measured_lufs[name] = loudness
        peak_dbfs[name] = 20.0 * np.log10(float(np.abs(samples).max()))

    # Lower the whole set rather than limit the loud stimulus: a limiter would add
    # distortion that no codec made, and lowering only one would break equal loudness.
    peak_at_target = max(peak_dbfs[name] + target_lufs - measured_lufs[name] for name in stimuli)
    lowered_by_db = max(0.0, peak_at_target - peak_ceiling_dbfs)
    effective_target = target_lufs - lowered_by_db

    gains_db = {name: effective_target - measured_lufs[name] for name in stimuli}
    normalised = {
        name: (audio * 10.0 ** (gains_db[name] / 20.0)).to(torch.float32)
        for name, audio in stimuli.items()
    }
    return LoudnessResult(normalised, gains_db, measured_lufs, effective_target, lowered_by_db)


def excerpt_bounds(
    reference: torch.Tensor, sample_rate: int, max_seconds: float = 10.0
) -> tuple[int, int]:
    """Sample bounds ``(start, stop)`` of the excerpt to play: at most ``max_seconds`` long.

    BS.1534-3 recommends excerpts of no more than about 10 s, since listeners cannot hold
    longer ones in memory while comparing. A longer signal gives the window with the most
    energy, searched in steps of 0.25 s (the first one on a tie), so that the excerpt is
    not a quiet lead-in.
    """
    _check_audio(reference, "the reference")
    _check_rate(sample_rate)
    window = int(round(max_seconds * sample_rate))
    if window < 1:
        raise ValueError(f"expected max_seconds of at least one sample, got {max_seconds}")
    num_samples = reference.shape[-1]
    if num_samples <= window:
        return 0, num_samples
    step = max(1, int(round(EXCERPT_SEARCH_STEP_SECONDS * sample_rate)))
    # The last start is always tried, so that a loud ending can be reached.
    starts = np.unique(
        np.append(np.arange(0, num_samples - window + 1, step), num_samples - window)
    )
    energy = np.concatenate(([0.0], np.cumsum((reference.double() ** 2).sum(dim=0).numpy())))
    start = int(starts[np.argmax(energy[starts + window] - energy[starts])])
    return start, start + window


def cut_excerpt(
    audio: torch.Tensor, start: int, stop: int, sample_rate: int, fade_seconds: float = 0.02
) -> torch.Tensor:
    """``audio[:, start:stop]`` with raised-cosine (half-Hann) fades that start and end at 0.

    Use the same bounds for every condition of a trial (from :func:`excerpt_bounds` on the
    reference) so that all stimuli cover the same content; the fades avoid clicks at the cut.
    """
    _check_audio(audio, "the audio")
    _check_rate(sample_rate)
    if not 0 <= start < stop <= audio.shape[-1]:
        raise ValueError(
            f"expected bounds 0 <= start < stop <= {audio.shape[-1]} samples, "
            f"got start={start}, stop={stop}"
        )
    fade = int(round(fade_seconds * sample_rate))
    if fade < 0 or 2 * fade > stop - start:
        raise ValueError(
            f"expected fades of 0 to {(stop - start) / 2 / sample_rate:g} s for a "
            f"{(stop - start) / sample_rate:g} s excerpt, got fade_seconds={fade_seconds}"
        )
    excerpt = audio[:, start:stop].clone()
    if fade:
        # A symmetric Hann window of 2 * fade + 1 points is 0 at both ends and 1 in the
        # middle: its halves are the fade-in and fade-out.
        hann = torch.from_numpy(signal.windows.hann(2 * fade + 1)).to(excerpt.dtype)
        excerpt[:, :fade] *= hann[:fade]
        excerpt[:, -fade:] *= hann[fade + 1 :]
    return excerpt


def _allocate(sizes: pd.Series, count: int) -> dict[str, int]:
    """Items per tag: proportional to the tag's size, at least one per tag while count allows."""
    allocation = {tag: 1 if count >= len(sizes) else 0 for tag in sizes.index}
    total = sizes.sum()
    while sum(allocation.values()) < count:
        # Give the next item to the tag furthest below its proportional share; ties go to
        # the larger tag, then the first by name, so the choice is deterministic.
        open_tags = [tag for tag in sizes.index if allocation[tag] < sizes[tag]]
        tag = min(
            open_tags,
            key=lambda t: (allocation[t] - count * sizes[t] / total, -sizes[t], t),
        )
        allocation[tag] += 1
    return allocation


def _spread_ranks(available: int, wanted: int) -> np.ndarray:
    """Evenly spaced ranks in ``range(available)``: both ends for two or more, else the median."""
    if wanted == 1:
        return np.array([(available - 1) // 2])
    # Round half up: with a spacing of at least 1 the ranks stay distinct.
    return np.floor(np.linspace(0, available - 1, wanted) + 0.5).astype(int)


def select_items(scores: pd.DataFrame, count: int) -> tuple[list[str], str]:
    """Choose ``count`` items for a listening test; returns their ids and how they were chosen.

    ``scores`` has one row per item with columns ``item``, ``tag`` (its primary content tag)
    and ``value`` (an objective metric averaged over the run's conditions). Items are
    stratified by tag in proportion to each tag's share, at least one per tag while
    ``count`` allows, and within a tag spread over the metric's range (evenly spaced ranks
    after sorting by value), so the test covers both easy and hard material. Deterministic.
    """
    missing = {"item", "tag", "value"} - set(scores.columns)
    if missing:
        raise ValueError(
            f"expected columns item, tag and value, got {list(scores.columns)} "
            f"(missing {sorted(missing)})"
        )
    if count < 1:
        raise ValueError(f"expected at least 1 item to select, got count={count}")
    if scores.empty:
        raise ValueError("expected at least one scored item, got an empty table")
    duplicated = sorted(scores.loc[scores["item"].duplicated(), "item"].astype(str).unique())
    if duplicated:
        raise ValueError(f"expected one row per item, got repeated items {duplicated}")
    unscored = sorted(scores.loc[scores["value"].isna(), "item"].astype(str))
    if unscored:
        raise ValueError(f"expected a value for every item, got none for {unscored}")

    table = scores.assign(item=scores["item"].astype(str), tag=scores["tag"].astype(str))
    table = table.sort_values(["tag", "value", "item"], kind="stable")
    sizes = table.groupby("tag", sort=True).size()

    if count >= len(table):
        described = ", ".join(f"{tag} {size}" for tag, size in sizes.items())
        note = "" if count == len(table) else f" ({count} were asked for)"
        return table["item"].tolist(), (
            f"All {len(table)} scored items were used{note}: {described}."
        )

    allocation = _allocate(sizes, count)
    chosen: list[str] = []
    per_tag: list[str] = []
    for tag, group in table.groupby("tag", sort=True):
        wanted = allocation[tag]
        if wanted == 0:
            continue
        picked = group.iloc[_spread_ranks(len(group), wanted)]
        chosen.extend(picked["item"])
        per_tag.append(
            f"{tag} {wanted} of {len(group)} (values {picked['value'].min():.3g} to "
            f"{picked['value'].max():.3g}, tag range {group['value'].min():.3g} to "
            f"{group['value'].max():.3g})"
        )
    left_out = [tag for tag, wanted in allocation.items() if wanted == 0]
    description = (
        f"{count} of {len(table)} scored items, stratified by content tag in proportion to "
        f"each tag's share of the items"
        + (
            f"; only {count} of {len(sizes)} tags fit, the largest were kept "
            f"(left out: {', '.join(left_out)})"
            if left_out
            else ", at least one per tag"
        )
        + ". Within each tag the items were sorted by the objective metric (averaged over "
        "the run's conditions) and taken at evenly spaced ranks, so that they span its range "
        "from easiest to hardest: " + "; ".join(per_tag) + "."
    )
    return chosen, description

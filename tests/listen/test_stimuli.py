"""Tests of the MUSHRA stimulus primitives: alignment, anchors, loudness, excerpts, items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyloudnorm
import pytest
import torch
from scipy import signal

from bench.audio import load_audio, resample
from bench.data.embedded import EMBEDDED_DIR
from bench.listen.stimuli import (
    LISTENING_RATE,
    align_to_reference,
    anchors,
    cut_excerpt,
    excerpt_bounds,
    listening_channels,
    listening_rate,
    normalise_loudness,
    select_items,
    unplayable_reason,
)

SPEECH_RATE = 16_000


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    """Real speech, mono at 16 kHz, cut to 4 s to keep the tests fast."""
    audio = load_audio(EMBEDDED_DIR / "librivox_0880.flac").audio
    return audio[:1, : 4 * SPEECH_RATE]


def noise(seconds: float, rate: int, seed: int = 0, scale: float = 0.1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(1, int(seconds * rate), generator=generator)


def loudness(audio: torch.Tensor, rate: int) -> float:
    return pyloudnorm.Meter(rate).integrated_loudness(audio.double().numpy().T)


def test_listening_rate_is_48k_unless_the_reference_is_lower():
    assert listening_rate(44_100) == 44_100
    assert listening_rate(96_000) == LISTENING_RATE == 48_000
    with pytest.raises(ValueError, match="positive sample rate"):
        listening_rate(0)


def test_a_trial_needs_both_anchors_and_one_loudness_block():
    assert "too low for the anchor35 low-pass anchor" in unplayable_reason(8_000, 2.0)
    assert "too low for the anchor70 low-pass anchor" in unplayable_reason(11_025, 2.0)
    assert unplayable_reason(16_000, 2.0) is None
    assert unplayable_reason(16_000, 0.4) is None
    assert "0.399 s long" in unplayable_reason(96_000, 0.399)


def test_stimuli_are_mono_or_stereo():
    assert [listening_channels(count) for count in (1, 2, 3, 6)] == [1, 2, 1, 1]
    with pytest.raises(ValueError, match="at least one channel, got 0"):
        listening_channels(0)


@pytest.mark.parametrize("delay", [37, -23])
def test_a_known_codec_delay_is_recovered_exactly(speech, delay):
    if delay > 0:  # the codec output lags: leading silence, the end cut off
        delayed = torch.nn.functional.pad(speech, (delay, 0))[:, : speech.shape[-1]]
    else:  # the codec output leads: the start is lost
        delayed = speech[:, -delay:]
    degraded = (
        delayed
        + noise(delayed.shape[-1] / SPEECH_RATE + 1, SPEECH_RATE, scale=0.003)[
            :, : delayed.shape[-1]
        ]
    )

    aligned, shift = align_to_reference(speech, degraded, SPEECH_RATE)

    assert shift == delay
    assert aligned.shape == speech.shape
    overlap = slice(abs(delay), speech.shape[-1] - abs(delay))
    residual = (aligned[:, overlap] - speech[:, overlap]).abs().max()
    assert residual < 0.02  # only the added noise is left


def test_alignment_pads_to_the_reference_length_and_ignores_silence(speech):
    longer = torch.nn.functional.pad(speech, (0, 500))
    aligned, shift = align_to_reference(speech, longer, SPEECH_RATE)
    assert (shift, aligned.shape) == (0, speech.shape)

    aligned, shift = align_to_reference(speech, torch.zeros(1, 1000), SPEECH_RATE)
    assert (shift, aligned.shape) == (0, speech.shape)
    assert not aligned.any()

    with pytest.raises(ValueError, match="1 channel"):
        align_to_reference(speech, speech.repeat(2, 1), SPEECH_RATE)


def test_alignment_searches_only_within_the_maximum_shift(speech):
    delayed = torch.nn.functional.pad(speech, (200, 0))
    _, shift = align_to_reference(speech, delayed, SPEECH_RATE, max_shift_seconds=0.005)
    assert abs(shift) <= 80  # 5 ms at 16 kHz: the true 200 samples are out of reach


def band_psd_db(audio: torch.Tensor, rate: int) -> tuple[np.ndarray, np.ndarray]:
    frequencies, psd = signal.welch(audio[0].double().numpy(), fs=rate, nperseg=4096)
    return frequencies, 10 * np.log10(psd + 1e-30)


@pytest.mark.parametrize(("name", "cutoff_hz"), [("anchor35", 3500.0), ("anchor70", 7000.0)])
def test_anchors_remove_the_band_above_their_cut_off(name, cutoff_hz):
    reference = noise(4.0, LISTENING_RATE, seed=1)
    anchor = anchors(reference, LISTENING_RATE)[name]
    assert anchor.shape == reference.shape

    frequencies, reference_db = band_psd_db(reference, LISTENING_RATE)
    _, anchor_db = band_psd_db(anchor, LISTENING_RATE)
    # The Butterworth anchors are designed for 50 dB from cut-off + 500 Hz (48 dB allows
    # for Welch leakage at the band edge); 1.3x the cut-off is well past that.
    for band_start_hz, attenuation_db in ((cutoff_hz + 500, 48.0), (1.3 * cutoff_hz, 40.0)):
        stop_band = (frequencies >= band_start_hz) & (frequencies <= 20_000)
        assert np.max(anchor_db[stop_band] - reference_db[stop_band]) <= -attenuation_db
    pass_band = frequencies <= 0.5 * cutoff_hz
    assert np.max(np.abs(anchor_db[pass_band] - reference_db[pass_band])) < 0.5


def test_anchors_of_real_speech_at_48k(speech):
    reference = resample(speech, SPEECH_RATE, LISTENING_RATE)
    made = anchors(reference, LISTENING_RATE)
    assert set(made) == {"anchor35", "anchor70"}
    frequencies, reference_db = band_psd_db(reference, LISTENING_RATE)
    _, anchor_db = band_psd_db(made["anchor35"], LISTENING_RATE)
    band = (frequencies >= 1.3 * 3500) & (frequencies <= 7500)  # speech at 16 kHz stops at 8 kHz
    assert np.max(anchor_db[band] - reference_db[band]) <= -40.0


def test_every_stimulus_gets_the_target_loudness(speech):
    stimuli = {
        "reference": speech,
        "quiet": 0.05 * speech,
        "noise": noise(4.0, SPEECH_RATE, seed=2),
        **anchors(speech, SPEECH_RATE),
    }
    result = normalise_loudness(stimuli, SPEECH_RATE)

    assert result.lowered_by_db == 0.0
    assert result.target_lufs == -23.0
    assert set(result.stimuli) == set(stimuli)
    for name, audio in result.stimuli.items():
        assert audio.shape == stimuli[name].shape and audio.dtype == torch.float32
        assert abs(loudness(audio, SPEECH_RATE) - result.target_lufs) < 0.5, name
        assert result.measured_lufs[name] == pytest.approx(loudness(stimuli[name], SPEECH_RATE))
        assert result.gains_db[name] == pytest.approx(-23.0 - result.measured_lufs[name])
    assert result.gains_db["quiet"] == pytest.approx(result.gains_db["reference"] + 26.02, abs=0.01)


def test_a_stimulus_that_would_clip_lowers_the_target_for_all(speech):
    # Quiet noise with a few full-scale clicks: a peak far above its loudness.
    clicky = noise(4.0, SPEECH_RATE, seed=3, scale=0.01)
    clicky[0, ::8000] = 1.0
    stimuli = {"reference": speech, "clicky": clicky}
    ceiling = -1.0

    result = normalise_loudness(stimuli, SPEECH_RATE, target_lufs=-23.0, peak_ceiling_dbfs=ceiling)

    assert result.lowered_by_db > 0.0
    assert result.target_lufs == pytest.approx(-23.0 - result.lowered_by_db)
    peaks_dbfs = {
        name: 20 * np.log10(audio.abs().max().item()) for name, audio in result.stimuli.items()
    }
    assert max(peaks_dbfs.values()) <= ceiling + 1e-3
    assert peaks_dbfs["clicky"] == pytest.approx(ceiling, abs=1e-3)  # lowered just enough
    for name, audio in result.stimuli.items():
        assert abs(loudness(audio, SPEECH_RATE) - result.target_lufs) < 0.5, name
        assert result.gains_db[name] == pytest.approx(
            result.target_lufs - result.measured_lufs[name]
        )


@pytest.mark.parametrize(
    ("audio", "expected"),
    [(torch.zeros(1, SPEECH_RATE), "silent or too quiet"), (0.1 * torch.ones(1, 1000), "block")],
)
def test_unmeasurable_stimuli_are_named(speech, audio, expected):
    with pytest.raises(ValueError, match=f"'broken'.*{expected}"):
        normalise_loudness({"reference": speech, "broken": audio}, SPEECH_RATE)


def test_excerpt_is_the_loud_window_of_at_most_max_seconds():
    rate = 8000
    quiet = noise(30.0, rate, seed=4, scale=0.001)
    quiet[:, 17 * rate : 23 * rate] *= 300
    start, stop = excerpt_bounds(quiet, rate, max_seconds=10.0)
    assert stop - start == 10 * rate
    assert start <= 17 * rate and stop >= 23 * rate

    # A loud ending off the 0.25 s grid is still reachable.
    ending = noise(30.1, rate, seed=5, scale=0.001)
    ending[:, -3 * rate :] *= 300
    assert excerpt_bounds(ending, rate, max_seconds=10.0)[1] == ending.shape[-1]

    assert excerpt_bounds(quiet[:, : 9 * rate], rate, max_seconds=10.0) == (0, 9 * rate)


def test_cut_excerpt_fades_to_zero_and_gives_equal_lengths(speech):
    rate = SPEECH_RATE
    start, stop = excerpt_bounds(speech, rate, max_seconds=2.5)
    conditions = {"reference": speech, "ones": torch.ones_like(speech), **anchors(speech, rate)}
    cut = {name: cut_excerpt(audio, start, stop, rate) for name, audio in conditions.items()}

    assert {audio.shape[-1] for audio in cut.values()} == {stop - start}
    fade = int(0.02 * rate)
    ones = cut["ones"][0]
    assert ones[0] == 0.0 and ones[-1] == 0.0
    assert torch.all(torch.diff(ones[:fade]) > 0) and torch.all(torch.diff(ones[-fade:]) < 0)
    assert torch.all(ones[fade:-fade] == 1.0)
    assert torch.equal(conditions["ones"], torch.ones_like(speech))  # input untouched

    with pytest.raises(ValueError, match="start < stop"):
        cut_excerpt(speech, 100, 50, rate)
    with pytest.raises(ValueError, match="fade"):
        cut_excerpt(speech, 0, 100, rate, fade_seconds=0.02)


@pytest.fixture
def scores() -> pd.DataFrame:
    rows = [(f"s{i:02d}", "speech", 1.0 + 0.3 * i) for i in range(10)]
    rows += [(f"m{i:02d}", "music", 2.0 + 0.5 * ((i * 7) % 6)) for i in range(6)]
    rows += [("a00", "audio", 3.1), ("a01", "audio", 1.7)]
    return pd.DataFrame(rows, columns=["item", "tag", "value"])


def test_select_items_stratifies_by_tag_and_spreads_over_the_metric(scores):
    chosen, description = select_items(scores, 6)

    picked = scores.set_index("item").loc[chosen]
    assert len(set(chosen)) == 6
    assert picked["tag"].value_counts().to_dict() == {"speech": 3, "music": 2, "audio": 1}
    for tag in ("speech", "music"):
        values = scores.loc[scores["tag"] == tag, "value"]
        chosen_values = picked.loc[picked["tag"] == tag, "value"]
        assert chosen_values.min() == values.min() and chosen_values.max() == values.max()
    assert "stratified" in description and "speech 3 of 10" in description

    # Proportionally the small tag would get none of three; every tag still gets one.
    chosen, _ = select_items(scores, 3)
    assert sorted(scores.set_index("item").loc[chosen, "tag"]) == ["audio", "music", "speech"]


def test_select_items_is_deterministic_and_order_independent(scores):
    first = select_items(scores, 7)
    shuffled = scores.sample(frac=1.0, random_state=0).reset_index(drop=True)
    assert select_items(scores, 7) == first
    assert select_items(shuffled, 7) == first


def test_select_items_edge_cases(scores):
    chosen, description = select_items(scores, 50)
    assert sorted(chosen) == sorted(scores["item"])
    assert "All 18" in description and "50 were asked for" in description

    chosen, description = select_items(scores, 2)  # fewer than the tags: the largest ones
    assert scores.set_index("item").loc[chosen, "tag"].tolist() == ["music", "speech"]
    assert "left out: audio" in description

    with pytest.raises(ValueError, match="count=0"):
        select_items(scores, 0)
    with pytest.raises(ValueError, match="missing \\['tag'\\]"):
        select_items(scores.drop(columns="tag"), 3)

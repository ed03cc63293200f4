"""Opus's residual delay, as OpusCodec documents it: libopus's decoder puts out SILK and
hybrid frames 2 samples early at 48 kHz, and CELT frames aligned, on real speech.

That the shift is libopus's and not the pre-skip this wrapper applies is checked by
decoding the same packets, with the same pre-skip, with FFmpeg's own Opus decoder, which is
aligned.
"""

from __future__ import annotations

import functools

import pytest
import torch
from bench.codecs.bitstream import unpack
from bench.codecs.classic.opus import OpusCodec
from bench.codecs.classic.pyav import decode_mono

from bench.audio import load_audio, resample
from bench.data.embedded import EMBEDDED_DIR
from bench.metrics.alignment import estimate_delay, si_sdr_aligned
from bench.metrics.signal import si_sdr
from bench.registry import create_codec

RATE = OpusCodec.sample_rate
# Two embedded LibriVox utterances (3 s of read speech each).
ITEMS = ("librivox_0880", "librivox_0930")


@functools.cache
def _speech(name: str) -> torch.Tensor:
    loaded = load_audio(EMBEDDED_DIR / f"{name}.flac")
    return resample(loaded.audio, loaded.sample_rate, RATE)


@functools.cache
def _codec() -> OpusCodec:
    return create_codec("opus")


@pytest.mark.parametrize("item", ITEMS)
@pytest.mark.parametrize(("bitrate", "lag"), [(12, -2), (24, -2), (64, 0)])
def test_libopus_puts_out_silk_and_hybrid_two_samples_early_and_celt_aligned(item, bitrate, lag):
    reference = _speech(item)
    decoded = _codec().decode(_codec().encode(reference, bitrate))
    assert estimate_delay(reference, decoded, RATE).lag == lag


def _packets(payload: bytes) -> tuple[list[bytes], int]:
    bitstream = unpack(payload)
    size = bitstream.header["packet_bytes"]
    stream = b"".join(bitstream.frames)
    return [stream[i : i + size] for i in range(0, len(stream), size)], bitstream.header["pre_skip"]


@pytest.mark.parametrize("bitrate", [12, 24])
def test_ffmpegs_own_decoder_of_the_same_packets_and_pre_skip_is_aligned(bitrate):
    reference = _speech(ITEMS[0])
    encoded = _codec().encode(reference, bitrate)
    packets, pre_skip = _packets(encoded.payload)
    # "opus" is FFmpeg's native decoder, "libopus" its wrapper of the reference library.
    native = decode_mono("opus", packets, RATE, skip=pre_skip, num_samples=encoded.num_samples)
    assert estimate_delay(reference, torch.from_numpy(native)[None], RATE).lag == 0
    ours = _codec().decode(encoded)
    assert estimate_delay(reference, ours, RATE).lag == -2


def test_the_two_samples_cost_si_sdr_that_si_sdr_aligned_gives_back():
    reference = _speech(ITEMS[0])
    decoded = _codec().decode(_codec().encode(reference, 24))
    plain = si_sdr(reference, decoded, RATE)
    aligned = si_sdr_aligned(reference, decoded, RATE)
    # Measured on this item: 7.86 dB, 11.79 dB aligned by -2 samples.
    assert aligned.value > plain + 3 and "aligned by -2 samples" in aligned.note

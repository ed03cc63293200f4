"""The Codec contract and the bitstream container."""

from __future__ import annotations

import pytest
import torch
from bench.codecs import bitstream
from bench.codecs.base import Encoded, fit_length
from helpers import QuantizingCodec


def test_bad_input_raises_value_error_naming_what_was_expected():
    codec = QuantizingCodec()
    audio = 0.1 * torch.randn(1, 1600)
    with pytest.raises(
        ValueError, match="does not support 6 kbps; supported bitrates \\(kbps\\): 128"
    ):
        codec.encode(audio, 6)
    with pytest.raises(ValueError, match="expects 1 channel\\(s\\), got 2"):
        codec.encode(torch.zeros(2, 1600), 128)
    with pytest.raises(ValueError, match="one-shot decoder and takes no NFE; got nfe=8"):
        codec.decode(codec.encode(audio, 128), nfe=8)
    with pytest.raises(ValueError, match="shaped \\(channels, samples\\)"):
        codec.encode(torch.zeros(1600), 128)
    with pytest.raises(ValueError, match="NaN or infinite"):
        codec.encode(torch.full((1, 1600), float("nan")), 128)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("position", [0, 777, 1599])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_non_finite_sample_anywhere_is_refused(bad, position, dtype):
    codec = QuantizingCodec()
    audio = torch.full((1, 1600), 0.5, dtype=dtype)
    audio[0, position] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        codec.encode(audio, 128)
    audio[0, position] = -1.0
    codec.encode(audio, 128)


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.uint8, torch.bool])
def test_non_float_audio_is_refused_instead_of_cast_unscaled(dtype):
    # An int16 sample of 16384 cast as it is would be 16384 times full scale.
    with pytest.raises(ValueError, match=f"floating-point audio in \\[-1, 1\\], got {dtype}"):
        QuantizingCodec().encode(torch.zeros(1, 1600, dtype=dtype), 128)


def test_round_trip_keeps_length_and_actual_kbps_counts_payload_bytes():
    codec = QuantizingCodec()
    audio = 0.1 * torch.randn(1, 1601)
    encoded = codec.encode(audio, 128)
    assert codec.decode(encoded).shape == (1, 1601)
    assert encoded.actual_kbps == pytest.approx(len(encoded.payload) * 8 / (1601 / 16000) / 1000)
    tripled = Encoded(encoded.payload * 3, encoded.num_samples, 16000, 128.0)
    assert tripled.actual_kbps == pytest.approx(3 * encoded.actual_kbps)


def test_fit_length_trims_and_pads():
    audio = torch.ones(2, 10)
    assert fit_length(audio, 4).shape == (2, 4)
    padded = fit_length(audio, 12)
    assert padded.shape == (2, 12) and padded[:, 10:].abs().sum() == 0


def test_bitstream_round_trip_and_refusals():
    frames = [b"", b"x" * 300, bytes(range(256))]
    payload = bitstream.pack({"pre_skip": 312, "codec": "opus"}, frames)
    parsed = bitstream.unpack(payload)
    assert parsed.header == {"pre_skip": 312, "codec": "opus"} and parsed.frames == frames
    # One byte of length for short frames, two for the 300-byte one: minimal framing.
    header_size = len(payload) - sum(map(len, frames)) - 1 - 2 - 2
    assert header_size == 3 + 1 + 1 + len(b'{"codec":"opus","pre_skip":312}')
    with pytest.raises(bitstream.BitstreamError, match="expected magic"):
        bitstream.unpack(b"XYZ" + payload[3:])
    with pytest.raises(bitstream.BitstreamError, match="unknown bitstream version 9"):
        bitstream.unpack(payload[:3] + bytes([9]) + payload[4:])
    with pytest.raises(bitstream.BitstreamError, match="truncated"):
        bitstream.unpack(payload[:-10])

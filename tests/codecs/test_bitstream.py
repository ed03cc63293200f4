"""Fixed-width packing of quantizer codes, and codes inside the container."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bench.codecs import bitstream
from bench.codecs.bitstream import BitstreamError, pack_codes, unpack_codes


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (3, 5), (8, 75), (32, 13)])
def test_round_trip_at_exact_length(bits: int, shape: tuple[int, int]):
    rng = np.random.default_rng(bits * 100 + shape[1])
    codes = rng.integers(0, 1 << bits, size=shape)
    data = pack_codes(codes, bits)
    assert len(data) == math.ceil(shape[0] * shape[1] * bits / 8)
    decoded = unpack_codes(data, *shape, bits)
    assert decoded.dtype == np.int64
    np.testing.assert_array_equal(decoded, codes)


def test_layout_is_frame_major_msb_first_zero_padded():
    # Frame 0 holds codes (1, 2), frame 1 holds (3, 0); 3 bits each: 001 010 011 000, + 4 pad bits.
    codes = np.array([[1, 3], [2, 0]])
    assert pack_codes(codes, 3) == bytes([0b00101001, 0b10000000])


def test_extreme_codes_and_torch_input():
    codes = torch.tensor([[0, 1023, 512], [1, 1022, 0]])
    data = pack_codes(codes, 10)
    assert len(data) == 8  # 60 bits
    np.testing.assert_array_equal(unpack_codes(data, 2, 3, 10), codes.numpy())
    top = np.array([[2**32 - 1, 0]], dtype=np.uint32)
    np.testing.assert_array_equal(unpack_codes(pack_codes(top, 32), 1, 2, 32), top)


def test_empty_stream():
    assert pack_codes(np.zeros((4, 0), dtype=np.int64), 10) == b""
    assert unpack_codes(b"", 4, 0, 10).shape == (4, 0)


def test_refuses_codes_that_do_not_fit():
    with pytest.raises(ValueError, match=r"\[0, 1024\) to fit 10 bits, got values in \[0, 1024\]"):
        pack_codes(np.array([[0, 1024]]), 10)
    with pytest.raises(ValueError, match=r"got values in \[-1, 3\]"):
        pack_codes(np.array([[-1, 3]]), 4)


def test_refuses_bad_shapes_types_and_widths():
    with pytest.raises(ValueError, match=r"\(n_q, frames\), got shape \(2, 3, 4\)"):
        pack_codes(np.zeros((2, 3, 4), dtype=np.int64), 10)
    with pytest.raises(TypeError, match="integer codes, got dtype float32"):
        pack_codes(np.zeros((2, 3), dtype=np.float32), 10)
    for bits in (0, 33, True, 2.0):
        with pytest.raises(ValueError, match=r"bits must be an int in 1\.\.32"):
            pack_codes(np.zeros((2, 3), dtype=np.int64), bits)
    with pytest.raises(ValueError, match="frames must be a non-negative int, got -1"):
        unpack_codes(b"", 1, -1, 10)


def test_refuses_truncated_or_padded_data():
    data = pack_codes(np.arange(12).reshape(3, 4), 10)
    with pytest.raises(
        BitstreamError, match="expected 15 bytes for 3 x 4 codes of 10 bits, got 14"
    ):
        unpack_codes(data[:-1], 3, 4, 10)
    with pytest.raises(BitstreamError, match="expected 15 bytes .* got 16"):
        unpack_codes(data + b"\0", 3, 4, 10)
    # 3 codes of 3 bits leave 7 padding bits in the second byte; they must be zero.
    with pytest.raises(BitstreamError, match="padding bits"):
        unpack_codes(pack_codes(np.array([[1, 2, 3]]), 3)[:1] + b"\x01", 1, 3, 3)


def test_codes_inside_the_container():
    codes = torch.randint(0, 1024, (8, 75), generator=torch.Generator().manual_seed(0))
    header = {"n_q": 8, "frames": 75, "bits": 10}
    payload = bitstream.pack(header, [pack_codes(codes, 10)])
    parsed = bitstream.unpack(payload)
    decoded = unpack_codes(parsed.frames[0], parsed.header["n_q"], parsed.header["frames"], 10)
    np.testing.assert_array_equal(decoded, codes.numpy())
    # 6 kbps for one second: 750 bytes of codes plus the container's framing.
    assert len(parsed.frames[0]) == 750

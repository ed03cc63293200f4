"""Range coder: exact round trips, code length against entropy, truncated streams, and
byte-identical output to the official EnCodec arithmetic coder."""

from __future__ import annotations

import io
import itertools
import math
import random
import time
import types

import pytest
import torch
from bench.codecs.bitstream import BitstreamError
from bench.codecs.modules.range_coder import (
    BitReader,
    BitWriter,
    RangeDecoder,
    RangeEncoder,
    build_stable_quantized_cdf,
)
from helpers import official_encodec

TOTAL_RANGE = 2**24


def _encode(symbols: list[int], cdfs: list[list[int]]) -> bytes:
    writer = BitWriter()
    encoder = RangeEncoder(writer)
    for symbol, cdf in zip(symbols, cdfs, strict=True):
        encoder.push(symbol, cdf)
    encoder.flush()
    return writer.getvalue()


def _decode(data: bytes, cdfs: list[list[int]]) -> list[int]:
    decoder = RangeDecoder(BitReader(data))
    return [decoder.pull(cdf) for cdf in cdfs]


def _random_pdfs(steps: int, cardinality: int, generator: torch.Generator) -> torch.Tensor:
    """A different distribution per step, from nearly uniform to very peaked."""
    temperature = torch.empty(steps, 1).uniform_(0.1, 8.0, generator=generator)
    return torch.softmax(torch.randn(steps, cardinality, generator=generator) * temperature, -1)


# The CDF


@pytest.mark.parametrize("cardinality", [1, 2, 3, 1024, 4000])
def test_cdf_gives_every_symbol_at_least_two_and_fits_the_range(cardinality):
    generator = torch.Generator().manual_seed(cardinality)
    pdfs = torch.cat([_random_pdfs(100, cardinality, generator), torch.eye(cardinality)[:50]])
    cdf = build_stable_quantized_cdf(pdfs)
    widths = torch.diff(cdf, dim=-1, prepend=torch.zeros_like(cdf[:, :1]))
    assert cdf.dtype == torch.int64 and cdf.shape == pdfs.shape
    assert int(widths.min()) >= 2
    assert int(cdf[:, -1].max()) <= TOTAL_RANGE


def test_cdf_follows_the_formula():
    pdf = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    alpha = 2 * 4 / TOTAL_RANGE
    widths = [math.floor((1 - alpha) * TOTAL_RANGE * p) + 2 for p in pdf.tolist()]
    expected = [sum(widths[: i + 1]) for i in range(4)]
    assert build_stable_quantized_cdf(pdf).tolist() == expected
    # Rounding down to 1e-8 leaves these dyadic probabilities unchanged; to 0.3 it does not.
    assert build_stable_quantized_cdf(pdf, roundoff=0.3).tolist() != expected


def test_cdf_rejects_bad_input():
    with pytest.raises(ValueError, match="finite and non-negative"):
        build_stable_quantized_cdf(torch.tensor([1.5, -0.5]))
    with pytest.raises(ValueError, match="finite and non-negative"):
        build_stable_quantized_cdf(torch.tensor([float("nan"), 0.5]))
    with pytest.raises(ValueError, match="do not fit"):
        build_stable_quantized_cdf(torch.full((16,), 1 / 16), total_range_bits=4)
    with pytest.raises(ValueError, match="min_range"):
        build_stable_quantized_cdf(torch.tensor([0.5, 0.5]), min_range=1)
    with pytest.raises(TypeError, match="floating-point"):
        build_stable_quantized_cdf(torch.tensor([1, 0]))


# Bits


def test_bits_round_trip_and_sit_least_significant_first():
    rng = random.Random(0)
    fields = [(rng.getrandbits(width), width) for width in rng.choices(range(1, 70), k=500)]
    writer = BitWriter()
    for value, width in fields:
        writer.write(value, width)
    reader = BitReader(writer.getvalue())
    assert [reader.read(width) for _, width in fields] == [value for value, _ in fields]
    assert reader.bits_left < 8

    writer = BitWriter()
    writer.write(0b110, 3)  # bits 1, 1, 0 -> byte 0b00000011
    assert writer.getvalue() == b"\x03"
    with pytest.raises(BitstreamError, match="truncated"):
        BitReader(b"\x03").read(9)


# Round trips


@pytest.mark.parametrize(
    ("cardinality", "steps"), [(2, 3000), (5, 3000), (1024, 1000), (4000, 300)]
)
def test_round_trip_under_random_distributions(cardinality, steps):
    generator = torch.Generator().manual_seed(cardinality)
    pdfs = _random_pdfs(steps, cardinality, generator)
    symbols = torch.multinomial(pdfs, 1, generator=generator)[:, 0].tolist()
    cdfs = build_stable_quantized_cdf(pdfs).tolist()
    assert _decode(_encode(symbols, cdfs), cdfs) == symbols


def test_round_trip_under_extreme_distributions():
    cardinality = 1024
    rng = random.Random(1)
    one_hot = build_stable_quantized_cdf(torch.eye(cardinality)[7]).tolist()
    uniform = build_stable_quantized_cdf(torch.full((cardinality,), 1 / cardinality)).tolist()
    single = build_stable_quantized_cdf(torch.ones(1)).tolist()
    steps = []
    for _ in range(4000):
        kind = rng.random()
        if kind < 0.6:  # the likely symbol, and now and then one with probability 0
            steps.append((7 if rng.random() < 0.95 else rng.randrange(cardinality), one_hot))
        elif kind < 0.9:
            steps.append((rng.randrange(cardinality), uniform))
        else:
            steps.append((0, single))
    # Long runs of impossible symbols drive the interval to its minimum width of 2.
    steps += [(rng.choice([0, 1023]), one_hot) for _ in range(300)]
    symbols, cdfs = map(list, zip(*steps, strict=True))
    assert _decode(_encode(symbols, cdfs), cdfs) == symbols


def test_empty_and_zero_information_streams():
    assert _encode([], []) == b""
    assert _decode(b"", []) == []
    certain = build_stable_quantized_cdf(torch.ones(1)).tolist()
    data = _encode([0] * 1000, [certain] * 1000)
    assert len(data) <= 4
    assert _decode(data, [certain] * 1000) == [0] * 1000


def test_encoder_rejects_symbols_outside_the_cdf():
    encoder = RangeEncoder(BitWriter())
    cdf = build_stable_quantized_cdf(torch.full((4,), 0.25)).tolist()
    for symbol in (-1, 4):
        with pytest.raises(ValueError, match="outside"):
            encoder.push(symbol, cdf)


# Code length


@pytest.mark.parametrize("temperature", [0.5, 2.0, 6.0])
def test_code_length_is_close_to_the_entropy(temperature):
    """Within 1 % of the ideal length, plus the final flush (at most ~4 bytes)."""
    generator = torch.Generator().manual_seed(3)
    pdf = torch.softmax(torch.randn(1024, generator=generator) * temperature, -1)
    symbols = torch.multinomial(pdf, 20_000, replacement=True, generator=generator).tolist()
    cdf = build_stable_quantized_cdf(pdf).tolist()
    data = _encode(symbols, [cdf] * len(symbols))
    ideal_bits = -sum(math.log2(float(pdf[symbol])) for symbol in symbols)
    assert 8 * len(data) <= 1.01 * ideal_bits + 40
    # And never below the information content under the quantized model (it is a real code).
    widths = [cdf[0]] + [high - low for low, high in itertools.pairwise(cdf)]
    model_bits = -sum(math.log2(widths[symbol] / TOTAL_RANGE) for symbol in symbols)
    assert 8 * len(data) >= model_bits - 2


# Damaged streams


def test_truncated_stream_raises_and_never_hangs():
    generator = torch.Generator().manual_seed(4)
    pdfs = _random_pdfs(400, 64, generator)
    symbols = torch.multinomial(pdfs, 1, generator=generator)[:, 0].tolist()
    cdfs = build_stable_quantized_cdf(pdfs).tolist()
    data = _encode(symbols, cdfs)
    # The decoder reads exactly the bits the encoder wrote, so losing any byte is detected.
    for length in range(len(data)):
        with pytest.raises(BitstreamError, match="truncated"):
            _decode(data[:length], cdfs)


def test_corrupt_stream_raises_or_decodes_something():
    """Flipped bits cannot always be detected, but the decoder must not hang or crash oddly."""
    generator = torch.Generator().manual_seed(5)
    pdfs = _random_pdfs(300, 32, generator)
    symbols = torch.multinomial(pdfs, 1, generator=generator)[:, 0].tolist()
    cdfs = build_stable_quantized_cdf(pdfs).tolist()
    data = bytearray(_encode(symbols, cdfs))
    rng = random.Random(5)
    for _ in range(50):
        damaged = bytearray(data)
        damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        try:
            decoded = _decode(bytes(damaged), cdfs)
        except BitstreamError:
            continue
        assert all(0 <= symbol < 32 for symbol in decoded)


# Speed (printed, not asserted)


def test_speed_report(capsys):
    generator = torch.Generator().manual_seed(6)
    cdfs = build_stable_quantized_cdf(_random_pdfs(64, 1024, generator)).tolist()
    count = 100_000
    rng = random.Random(6)
    steps = [(rng.randrange(1024), cdfs[i % 64]) for i in range(count)]
    symbols = [symbol for symbol, _ in steps]
    start = time.perf_counter()
    writer = BitWriter()
    encoder = RangeEncoder(writer)
    for symbol, cdf in steps:
        encoder.push(symbol, cdf)
    encoder.flush()
    data = writer.getvalue()
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    decoder = RangeDecoder(BitReader(data))
    decoded = [decoder.pull(cdf) for _, cdf in steps]
    decode_seconds = time.perf_counter() - start
    assert decoded == symbols
    with capsys.disabled():
        print(
            f"\nrange coder, card 1024: encode {count / encode_seconds:,.0f} symbols/s, "
            f"decode {count / decode_seconds:,.0f} symbols/s"
        )


# The official EnCodec coder


@pytest.fixture(scope="module")
def official_ac() -> types.ModuleType:
    return official_encodec().quantization.ac


@pytest.mark.parametrize("cardinality", [16, 1024, 4000])
def test_same_cdfs_and_bytes_as_the_official_coder(official_ac, cardinality):
    generator = torch.Generator().manual_seed(cardinality)
    pdfs = _random_pdfs(300, cardinality, generator)
    symbols = torch.multinomial(pdfs, 1, generator=generator)[:, 0].tolist()
    ours = build_stable_quantized_cdf(pdfs)
    official = torch.stack([official_ac.build_stable_quantized_cdf(pdf, 24) for pdf in pdfs])
    assert torch.equal(ours, official)

    stream = io.BytesIO()
    coder = official_ac.ArithmeticCoder(stream)
    for symbol, cdf in zip(symbols, official, strict=True):
        coder.push(symbol, cdf)
    coder.flush()
    assert _encode(symbols, ours.tolist()) == stream.getvalue()

    stream.seek(0)
    decoder = official_ac.ArithmeticDecoder(stream)
    assert [decoder.pull(cdf) for cdf in official] == symbols

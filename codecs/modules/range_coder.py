"""Range coder with integer CDFs, as EnCodec uses to entropy-code its RVQ tokens.

Follows Défossez et al. (2022), "High Fidelity Neural Audio Compression", Sec. 3.3, and the
arithmetic coder of the official EnCodec code: a range of ``2 ** total_range_bits`` values,
a minimum width of 2 per symbol, probabilities rounded down to ``roundoff`` (1e-8 in the code,
1e-6 in the paper), and common-prefix bits flushed as soon as they are known. The interval
arithmetic is exact integer arithmetic, and the bits land in each byte least significant bit
first, as in EnCodec's ``.ecdc`` streams, so the same CDFs give byte-identical streams.

Any ``2 ** total_range_bits``-scaled, strictly increasing integer CDF works, not only the ones
built here, so other token codecs can reuse the coder with their own models.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch
from bench.codecs.bitstream import BitstreamError

# Maps a byte to the byte with its 8 bits in reverse order. The writer and the reader
# accumulate bits most significant first (cheap with Python integers) and reverse each byte
# on the way out and in, which yields the least-significant-first layout of EnCodec's packer.
_REVERSED_BYTES = bytes(int(f"{value:08b}"[::-1], 2) for value in range(256))


def build_stable_quantized_cdf(
    pdf: torch.Tensor, total_range_bits: int = 24, roundoff: float = 1e-8, min_range: int = 2
) -> torch.Tensor:
    """Turn probabilities into an integer CDF that splits ``[0, 2 ** total_range_bits)``.

    Args:
        pdf: probabilities over the last dimension, shape ``(..., cardinality)``; leading
            dimensions are independent distributions (e.g. one per codebook).
        total_range_bits: the coder's range precision in bits.
        roundoff: the probabilities are first rounded down to a multiple of this, so that tiny
            floating-point differences between two evaluations of a model matter less
            (0 disables the rounding).
        min_range: the smallest width a symbol gets, at least 2 so that every symbol stays
            decodable however narrow the coder's current interval is.

    Returns:
        ``int64`` tensor of the same shape: the running sum of the symbol widths
        ``floor((1 - alpha) * 2 ** total_range_bits * p) + min_range`` with
        ``alpha = min_range * cardinality / 2 ** total_range_bits``, whose last entry is at most
        ``2 ** total_range_bits``.

    The arithmetic stays in the dtype of ``pdf`` (as in the official code) because the encoder
    and the decoder only agree if they compute exactly the same thing; pass the same dtype to
    both.
    """
    if not torch.is_floating_point(pdf):
        raise TypeError(f"expected floating-point probabilities, got {pdf.dtype}")
    if min_range < 2:
        raise ValueError(f"min_range must be at least 2, got {min_range}")
    cardinality = pdf.shape[-1]
    total_range = 2**total_range_bits
    alpha = min_range * cardinality / total_range
    if alpha > 1:
        raise ValueError(
            f"{cardinality} symbols of width >= {min_range} do not fit in 2**{total_range_bits}"
        )
    pdf = pdf.detach()
    if roundoff:
        pdf = (pdf / roundoff).floor() * roundoff
    # Mixing in a uniform distribution of weight alpha reserves min_range for every symbol,
    # so the widths sum to at most total_range.
    widths = (((1 - alpha) * total_range) * pdf).floor().long() + min_range
    if (widths < min_range).any():
        raise ValueError("probabilities must be finite and non-negative")
    # A float pdf can sum to slightly more than 1 (e.g. a float32 softmax over few symbols),
    # which could push the total one or two past the range; the widest symbol gives it back.
    excess = (widths.sum(dim=-1, keepdim=True) - total_range).clamp(min=0)
    widths = widths.scatter_add(-1, widths.argmax(dim=-1, keepdim=True), -excess)
    return widths.cumsum(dim=-1)


class BitWriter:
    """Collects a sequence of bits into bytes, least significant bit first in each byte."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._pending = 0  # bits not yet in a full byte, most significant first
        self._pending_bits = 0
        self._closed = False

    def write(self, value: int, num_bits: int) -> None:
        """Append the ``num_bits`` low bits of ``value``, its most significant bit first."""
        if self._closed:
            raise ValueError("cannot write to a BitWriter after getvalue()")
        self._pending = (self._pending << num_bits) | (value & ((1 << num_bits) - 1))
        self._pending_bits += num_bits
        if self._pending_bits >= 64:
            # Batching bytes keeps the per-call cost flat instead of one conversion per byte.
            keep = self._pending_bits % 8
            full = self._pending >> keep
            self._data += full.to_bytes((self._pending_bits - keep) // 8, "big").translate(
                _REVERSED_BYTES
            )
            self._pending &= (1 << keep) - 1
            self._pending_bits = keep

    def getvalue(self) -> bytes:
        """Pad the last byte with zero bits and return everything written."""
        if not self._closed:
            padding = -self._pending_bits % 8
            self._data += (
                (self._pending << padding)
                .to_bytes((self._pending_bits + padding) // 8, "big")
                .translate(_REVERSED_BYTES)
            )
            self._pending = self._pending_bits = 0
            self._closed = True
        return bytes(self._data)


class BitReader:
    """Reads back the bit sequence of a :class:`BitWriter`."""

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data).translate(_REVERSED_BYTES)
        self._total_bits = 8 * len(data)
        self._position = 0

    @property
    def bits_left(self) -> int:
        """Bits not read yet, padding included."""
        return self._total_bits - self._position

    def read(self, num_bits: int) -> int:
        """Return the next ``num_bits`` bits as an integer, the first bit most significant.

        Raises:
            BitstreamError: fewer than ``num_bits`` bits are left (a truncated stream).
        """
        start = self._position
        end = start + num_bits
        if end > self._total_bits:
            raise BitstreamError(
                f"range-coded stream truncated: needed {num_bits} more bits, {self.bits_left} left"
            )
        self._position = end
        # Only the bytes holding the requested bits are converted: one integer for the whole
        # stream would make every read cost a shift of the full stream.
        first_byte = start >> 3
        last_byte = (end + 7) >> 3
        window = int.from_bytes(self._data[first_byte:last_byte], "big")
        return (window >> (8 * last_byte - end)) & ((1 << num_bits) - 1)


class RangeEncoder:
    """Encodes symbols, each under its own quantized CDF, into a :class:`BitWriter`.

    The state is an interval ``[low, high]`` of ``max_bit + 1``-bit integers. Before each symbol
    it is rescaled (bits appended on the right) until it is at least ``2 ** total_range_bits``
    wide; the symbol then selects its share of it; the leading bits that ``low`` and ``high``
    share can no longer change and go to the stream.

    Args:
        bit_writer: where the bits go; call :meth:`flush` and then ``bit_writer.getvalue()``.
        total_range_bits: must match the CDFs and the decoder.
    """

    def __init__(self, bit_writer: BitWriter, total_range_bits: int = 24) -> None:
        self.bit_writer = bit_writer
        self.total_range_bits = total_range_bits
        self._low = 0
        self._high = 0
        self._max_bit = -1

    def push(self, symbol: int, quantized_cdf: Sequence[int]) -> None:
        """Encode ``symbol`` under ``quantized_cdf`` (from :func:`build_stable_quantized_cdf`).

        A list (``cdf.tolist()``) is much faster to index than a tensor.
        """
        if not 0 <= symbol < len(quantized_cdf):
            raise ValueError(f"symbol {symbol} outside [0, {len(quantized_cdf)})")
        bits = self.total_range_bits
        low, high, max_bit = self._low, self._high, self._max_bit
        delta = high - low + 1
        # Doubling the interval until it is 2**bits wide is one shift by the missing bits.
        grow = bits + 1 - delta.bit_length()
        if grow > 0:
            low <<= grow
            high = (high << grow) | ((1 << grow) - 1)
            max_bit += grow
            delta <<= grow
        cdf_low = int(quantized_cdf[symbol - 1]) if symbol else 0
        cdf_high = int(quantized_cdf[symbol]) - 1
        # Scale [cdf_low, cdf_high] from 2**bits to delta: ceil for the start, floor for the
        # end, so that neighbouring symbols never share a value.
        high = low + ((cdf_high * delta) >> bits)
        low = low + -((-cdf_low * delta) >> bits)
        if low > high:
            raise ValueError(f"symbol {symbol} has an empty range in this CDF (width < 2?)")
        common = max_bit + 1 - (low ^ high).bit_length()
        if common > 0:
            shift = max_bit + 1 - common
            self.bit_writer.write(low >> shift, common)
            mask = (1 << shift) - 1
            low &= mask
            high &= mask
            max_bit -= common
        self._low, self._high, self._max_bit = low, high, max_bit

    def flush(self) -> None:
        """Write the bits of ``low`` still pending; the stream then ends here."""
        if self._max_bit >= 0:
            self.bit_writer.write(self._low, self._max_bit + 1)
        self._low = self._high = 0
        self._max_bit = -1


class RangeDecoder:
    """Decodes what a :class:`RangeEncoder` wrote, given the same sequence of CDFs.

    It mirrors the encoder's interval exactly and keeps ``current``, the stream's bits read
    so far, which always lies inside the interval of the next symbol to decode.

    Args:
        bit_reader: the encoder's bytes.
        total_range_bits: must match the encoder.
    """

    def __init__(self, bit_reader: BitReader, total_range_bits: int = 24) -> None:
        self.bit_reader = bit_reader
        self.total_range_bits = total_range_bits
        self._low = 0
        self._high = 0
        self._current = 0
        self._max_bit = -1

    def pull(self, quantized_cdf: Sequence[int]) -> int:
        """Decode the next symbol, which was encoded under ``quantized_cdf``.

        ``quantized_cdf`` must equal the encoder's bit for bit; pass a list for speed.

        Raises:
            BitstreamError: the stream is truncated or does not come from this CDF sequence.
        """
        bits = self.total_range_bits
        low, high, current, max_bit = self._low, self._high, self._current, self._max_bit
        delta = high - low + 1
        grow = bits + 1 - delta.bit_length()
        if grow > 0:
            low <<= grow
            high = (high << grow) | ((1 << grow) - 1)
            current = (current << grow) | self.bit_reader.read(grow)
            max_bit += grow
            delta <<= grow
        # The symbol s holds current iff ceil(cdf[s-1] * delta / 2**bits) <= offset
        # <= floor((cdf[s] - 1) * delta / 2**bits), i.e. iff cdf[s-1] * delta <= scaled and
        # cdf[s] - 1 >= ceil(scaled / delta): the first such CDF entry is found by bisection.
        scaled = (current - low) << bits
        symbol = bisect.bisect_left(quantized_cdf, -(-scaled // delta) + 1)
        cdf_low = int(quantized_cdf[symbol - 1]) if symbol else 0
        if symbol == len(quantized_cdf) or cdf_low * delta > scaled:
            raise BitstreamError("range-coded stream is corrupt: value outside every symbol")
        cdf_high = int(quantized_cdf[symbol]) - 1
        high = low + ((cdf_high * delta) >> bits)
        low = low + -((-cdf_low * delta) >> bits)
        common = max_bit + 1 - (low ^ high).bit_length()
        if common > 0:
            mask = (1 << (max_bit + 1 - common)) - 1
            low &= mask
            high &= mask
            current &= mask
            max_bit -= common
        self._low, self._high, self._current, self._max_bit = low, high, current, max_bit
        return symbol

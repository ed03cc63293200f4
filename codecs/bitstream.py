"""A small self-describing container for codec bitstreams, and fixed-width packing of codes.

In the spirit of EnCodec's ``.ecdc`` format: magic bytes, a version byte and a compact
JSON header, followed by length-prefixed frames (unsigned LEB128 varints, as in
protobuf). Every byte counts towards a codec's actual bitrate, so the framing is kept
minimal; readers refuse a magic or version they do not know.

Codes of a quantizer without entropy coding are packed at exactly ``bits`` each
(log2 of the codebook size: 10 for 1024 entries), so a payload's size is its nominal bitrate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

MAGIC = b"BNC"
VERSION = 1


class BitstreamError(ValueError):
    """A payload that is not a valid bitstream of this format."""


def _write_varint(value: int, out: bytearray) -> None:
    if value < 0:
        raise ValueError(f"varints are unsigned, got {value}")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if position >= len(data):
            raise BitstreamError("bitstream truncated inside a length field")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


@dataclass(frozen=True)
class Bitstream:
    """A decoded container: its JSON header and its frames, in order."""

    header: dict
    frames: list[bytes]


def pack(header: dict, frames: list[bytes]) -> bytes:
    """Serialise ``header`` (JSON-able) and ``frames`` into one payload."""
    out = bytearray(MAGIC)
    out.append(VERSION)
    header_bytes = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    _write_varint(len(header_bytes), out)
    out += header_bytes
    for frame in frames:
        _write_varint(len(frame), out)
        out += frame
    return bytes(out)


def unpack(payload: bytes) -> Bitstream:
    """Parse a payload written by :func:`pack`; raise :class:`BitstreamError` if invalid."""
    if payload[: len(MAGIC)] != MAGIC:
        raise BitstreamError(f"expected magic {MAGIC!r}, got {payload[: len(MAGIC)]!r}")
    if len(payload) <= len(MAGIC):
        raise BitstreamError("bitstream truncated before its version byte")
    version = payload[len(MAGIC)]
    if version != VERSION:
        raise BitstreamError(f"unknown bitstream version {version}; this reader knows {VERSION}")
    header_length, position = _read_varint(payload, len(MAGIC) + 1)
    header_end = position + header_length
    if header_end > len(payload):
        raise BitstreamError("bitstream truncated inside its header")
    try:
        header = json.loads(payload[position:header_end])
    except json.JSONDecodeError as error:
        raise BitstreamError(f"bitstream header is not valid JSON: {error}") from error
    position = header_end
    frames = []
    while position < len(payload):
        frame_length, position = _read_varint(payload, position)
        if position + frame_length > len(payload):
            raise BitstreamError("bitstream truncated inside a frame")
        frames.append(payload[position : position + frame_length])
        position += frame_length
    return Bitstream(header=header, frames=frames)


MAX_CODE_BITS = 32


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check_bits(bits: int) -> None:
    if not _is_int(bits) or not 1 <= bits <= MAX_CODE_BITS:
        raise ValueError(f"bits must be an int in 1..{MAX_CODE_BITS}, got {bits!r}")


def _bit_weights(bits: int) -> np.ndarray:
    """Place values of the ``bits`` bits of a code, most significant first."""
    return np.left_shift(np.int64(1), np.arange(bits - 1, -1, -1, dtype=np.int64))


def pack_codes(codes: torch.Tensor | np.ndarray, bits: int) -> bytes:
    """Pack ``codes`` ``(n_q, frames)`` at exactly ``bits`` bits each.

    The result is ``ceil(n_q * frames * bits / 8)`` bytes. The order is frame by frame and,
    within a frame, codebook by codebook, so a stream can be cut at frame boundaries; each code
    is written most significant bit first and the last byte is padded with zero bits.
    """
    _check_bits(bits)
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"expected codes shaped (n_q, frames), got shape {codes.shape}")
    if codes.dtype == np.bool_ or not np.issubdtype(codes.dtype, np.integer):
        raise TypeError(f"expected integer codes, got dtype {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() >= 1 << bits):
        raise ValueError(
            f"codes must lie in [0, {1 << bits}) to fit {bits} bits, "
            f"got values in [{codes.min()}, {codes.max()}]"
        )
    values = codes.T.reshape(-1).astype(np.int64)
    bit_matrix = (values[:, None] & _bit_weights(bits)) != 0
    return np.packbits(bit_matrix.reshape(-1)).tobytes()


def unpack_codes(data: bytes, n_q: int, frames: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: codes ``(n_q, frames)`` int64 from ``data``.

    Raises :class:`BitstreamError` unless ``data`` holds exactly the bytes that many codes take,
    with zero padding bits.
    """
    _check_bits(bits)
    for name, value in (("n_q", n_q), ("frames", frames)):
        if not _is_int(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    num_bits = n_q * frames * bits
    expected_bytes = -(-num_bits // 8)
    if len(data) != expected_bytes:
        raise BitstreamError(
            f"expected {expected_bytes} bytes for {n_q} x {frames} codes of {bits} bits, "
            f"got {len(data)}"
        )
    all_bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    if all_bits[num_bits:].any():
        raise BitstreamError("the padding bits after the last code are not zero")
    bit_matrix = all_bits[:num_bits].reshape(frames * n_q, bits).astype(np.int64)
    values = bit_matrix @ _bit_weights(bits)
    return values.reshape(frames, n_q).T.copy()

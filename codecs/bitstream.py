"""A small self-describing container for codec bitstreams.

In the spirit of EnCodec's ``.ecdc`` format: magic bytes, a version byte and a compact
JSON header, followed by length-prefixed frames (unsigned LEB128 varints, as in
protobuf). Every byte counts towards a codec's actual bitrate, so the framing is kept
minimal; readers refuse a magic or version they do not know.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

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

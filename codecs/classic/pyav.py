"""Shared PyAV (FFmpeg) plumbing for the classic codecs: one encode loop, one decode loop.

Opus and MP3 both go through FFmpeg's ``libavcodec`` wrappers of the reference libraries
(libopus, LAME). This module holds what they share: feeding a mono signal to an encoder
and draining it, decoding packets back to float32, and reporting the library versions that
produced the bytes.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

# Samples per frame handed to the encoder (about 1.4 s at 48 kHz), re-chunked by PyAV into
# the encoder's frame size: small enough that the copies of one block cost little.
ENCODE_BLOCK_SAMPLES = 65536


@dataclass(frozen=True)
class EncodedPackets:
    """What an encoder produced for one signal.

    ``packets`` are the codec's packets in order. ``delay`` is the number of samples by
    which the decoded signal lags the input (encoder look-ahead plus, for MP3, the
    decoder's synthesis delay), so dropping the first ``delay`` decoded samples aligns
    output with input.
    """

    packets: list[bytes]
    delay: int


def encode_mono(
    codec_name: str,
    signal: np.ndarray,
    sample_rate: int,
    bit_rate: int,
    sample_format: str,
    options: dict[str, str],
) -> EncodedPackets:
    """Encode a mono float32 ``signal`` ``(samples,)`` with the FFmpeg encoder ``codec_name``.

    ``bit_rate`` is in bits per second; ``options`` are the encoder's private AVOptions
    (strings, as on the ``ffmpeg`` command line).
    """
    context = av.CodecContext.create(codec_name, "w")
    context.sample_rate = sample_rate
    context.layout = "mono"
    context.format = sample_format
    context.bit_rate = bit_rate
    context.options = options

    packets = []
    # The signal goes in a block at a time: one frame of the whole signal would be copied
    # into the frame, and again into PyAV's re-chunking into the encoder's frame_size, all
    # at once. Fed in blocks, the encoder still gets the same frame_size frames.
    for start in range(0, signal.shape[0], ENCODE_BLOCK_SAMPLES):
        block = signal[start : start + ENCODE_BLOCK_SAMPLES]
        # Mono is laid out the same packed or planar, so one (1, samples) array fits both.
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(block, dtype=np.float32)[None, :],
            format=sample_format,
            layout="mono",
        )
        frame.sample_rate = sample_rate
        frame.pts = start
        packets.extend(_packet_bytes_and_pts(context.encode(frame)))
    # Encoding None flushes: without it the last packets (the tail of the signal) stay in
    # the encoder.
    packets.extend(_packet_bytes_and_pts(context.encode(None)))
    if not packets:
        raise RuntimeError(f"{codec_name} produced no packets for {signal.shape[0]} samples")
    # FFmpeg stamps the first packet with pts = -initial_padding: the samples of priming
    # (Opus pre-skip, LAME encoder + decoder delay) that precede the first input sample.
    delay = -packets[0][1]
    if delay < 0:
        raise RuntimeError(f"{codec_name} reported a negative delay of {delay} samples")
    return EncodedPackets(packets=[data for data, _ in packets], delay=delay)


def _packet_bytes_and_pts(packets: Iterable[av.Packet]) -> list[tuple[bytes, int]]:
    # Only the bytes and the time stamp are kept: an av.Packet holds more than its payload.
    return [(bytes(packet), int(packet.pts)) for packet in packets]


def decode_mono(
    codec_name: str,
    packets: Iterable[bytes | av.Packet],
    sample_rate: int,
    skip: int,
    num_samples: int,
    options: dict[str, str] | None = None,
) -> np.ndarray:
    """Decode packets with the FFmpeg decoder ``codec_name`` to float32 ``(num_samples,)``.

    The first ``skip`` decoded samples (the encoder's delay) are dropped, so output sample i
    lines up with input sample i; decoded samples past ``num_samples`` (the padding of the
    last packet) are dropped too, and a stream that decodes to fewer is zero-padded.
    """
    if skip < 0 or num_samples < 0:
        raise ValueError(
            f"{codec_name}: expected a delay and a length of at least 0 samples, "
            f"got {skip} and {num_samples}"
        )
    context = av.CodecContext.create(codec_name, "r")
    context.sample_rate = sample_rate
    context.layout = "mono"
    if options:
        context.options = options
    # Each frame is written into its place in the output as it is decoded: a list of all
    # frames and their concatenation would hold the signal twice.
    decoded = np.zeros(num_samples, dtype=np.float32)
    position = -skip  # where the next decoded sample goes in ``decoded``
    for frame in _decoded_frames(context, packets):
        samples = frame.to_ndarray()
        if samples.dtype != np.float32:
            raise RuntimeError(f"{codec_name} decoded to {samples.dtype}, expected float32")
        first, end = max(position, 0), min(position + samples.shape[1], num_samples)
        if first < end:
            decoded[first:end] = samples[0, first - position : end - position]
        position += samples.shape[1]
    return decoded


def _decoded_frames(
    context: av.CodecContext, packets: Iterable[bytes | av.Packet]
) -> Iterator[av.AudioFrame]:
    for packet in packets:
        if not isinstance(packet, av.Packet):
            packet = av.Packet(packet)
        yield from context.decode(packet)
    yield from context.decode(None)


def _bundled_library_version(stem: str, symbol: str) -> str:
    """Ask a library bundled in the PyAV wheel for its version string.

    PyAV exposes only the FFmpeg library versions, but the bytes come from libopus or
    LAME, whose versions matter as much. The wheel ships them next to the package
    (``av.libs`` on Linux, ``av/.dylibs`` on macOS); loading the same file again returns
    the already-loaded copy.
    """
    package = Path(av.__file__).resolve().parent
    for folder in (package.parent / "av.libs", package / ".dylibs"):
        for path in sorted(folder.glob(f"{stem}*")):
            try:
                function = getattr(ctypes.CDLL(str(path)), symbol)
            except (OSError, AttributeError):
                continue
            function.restype = ctypes.c_char_p
            return function().decode()
    return "unknown"


def backend_versions(stem: str, symbol: str) -> dict[str, str]:
    """PyAV, FFmpeg and the bundled codec library's versions.

    ``stem`` is the library file's name prefix (``"libopus"``) and ``symbol`` the C
    function returning its version string (``"opus_get_version_string"``).
    """
    versions = {"av": av.__version__, "ffmpeg": str(av.ffmpeg_version_info)}
    for library in ("libavcodec", "libavutil"):
        versions[library] = ".".join(str(part) for part in av.library_versions[library])
    versions[stem] = _bundled_library_version(stem, symbol)
    return versions

"""Shared PyAV (FFmpeg) plumbing for the classic codecs: one encode loop, one decode loop.

Opus and MP3 both go through FFmpeg's ``libavcodec`` wrappers of the reference libraries
(libopus, LAME). This module holds what they share: feeding a mono signal to an encoder
and draining it, decoding packets back to float32, and reporting the library versions that
produced the bytes.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np


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

    # Mono is laid out the same packed or planar, so one (1, samples) array fits both.
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(signal, dtype=np.float32)[None, :],
        format=sample_format,
        layout="mono",
    )
    frame.sample_rate = sample_rate
    frame.pts = 0
    # PyAV re-chunks the one long frame into the encoder's frame_size. Encoding None
    # flushes: without it the last packets (the tail of the signal) stay in the encoder.
    packets = [*context.encode(frame), *context.encode(None)]
    if not packets:
        raise RuntimeError(f"{codec_name} produced no packets for {signal.shape[0]} samples")
    # FFmpeg stamps the first packet with pts = -initial_padding: the samples of priming
    # (Opus pre-skip, LAME encoder + decoder delay) that precede the first input sample.
    delay = -int(packets[0].pts)
    if delay < 0:
        raise RuntimeError(f"{codec_name} reported a negative delay of {delay} samples")
    return EncodedPackets(packets=[bytes(packet) for packet in packets], delay=delay)


def decode_mono(
    codec_name: str,
    packets: Iterable[bytes | av.Packet],
    sample_rate: int,
    options: dict[str, str] | None = None,
) -> np.ndarray:
    """Decode packets with the FFmpeg decoder ``codec_name`` to float32 ``(samples,)``.

    Nothing is trimmed here: the output still starts with the encoder's delay.
    """
    context = av.CodecContext.create(codec_name, "r")
    context.sample_rate = sample_rate
    context.layout = "mono"
    if options:
        context.options = options
    chunks = []
    for packet in packets:
        if not isinstance(packet, av.Packet):
            packet = av.Packet(packet)
        chunks.extend(frame.to_ndarray() for frame in context.decode(packet))
    chunks.extend(frame.to_ndarray() for frame in context.decode(None))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    decoded = np.concatenate(chunks, axis=1)
    if decoded.dtype != np.float32:
        raise RuntimeError(f"{codec_name} decoded to {decoded.dtype}, expected float32")
    return decoded[0]


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

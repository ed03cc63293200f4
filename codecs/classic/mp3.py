"""MP3 (MPEG-1 Audio Layer III, ISO/IEC 11172-3) through LAME, via PyAV.

A classic baseline: mono, 44.1 kHz, constant bitrate from 32 to 320 kbps (every
MPEG-1 Layer III rate from 32 up). Encoded by libmp3lame and decoded by FFmpeg's
floating-point MP3 decoder. The payload holds the MP3 elementary stream itself, plus a
small header with the delay to remove.
"""

from __future__ import annotations

import av
import torch
from bench.codecs.base import Codec, Encoded
from bench.codecs.bitstream import pack, unpack
from bench.codecs.classic.pyav import backend_versions, decode_mono, encode_mono

SAMPLES_PER_FRAME = 1152
"""Samples per MPEG-1 Layer III frame (ISO/IEC 11172-3)."""

DECODER = "mp3float"


class Mp3Codec(Codec):
    """LAME CBR at 32 to 320 kbps; the decoded output is aligned with the input.

    The decoded signal lags the input by LAME's encoder delay (576 samples) plus the
    decoder's delay (529 samples), 1105 samples in all, which ``decode`` removes.
    """

    name = "mp3"
    sample_rate = 44100
    channels = 1
    bitrates = (
        32.0,
        40.0,
        48.0,
        56.0,
        64.0,
        80.0,
        96.0,
        112.0,
        128.0,
        160.0,
        192.0,
        224.0,
        256.0,
        320.0,
    )
    frame_rate = sample_rate / SAMPLES_PER_FRAME

    # FFmpeg's libmp3lame wrapper encodes CBR when given a bit_rate and no quality
    # setting; the bit reservoir stays on, as in every ordinary MP3 encoder.
    encoder_options: dict[str, str] = {}

    def _encode(self, audio: torch.Tensor, bitrate: float) -> Encoded:
        encoded = encode_mono(
            "libmp3lame",
            audio[0].detach().cpu().numpy(),
            self.sample_rate,
            round(bitrate * 1000),
            "fltp",
            self.encoder_options,
        )
        # MP3 frames are self-delimiting (a sync word and a header giving the frame's
        # size), so the stream goes in as one block: no per-frame length is needed.
        return Encoded(
            payload=pack({"delay": encoded.delay}, [b"".join(encoded.packets)]),
            num_samples=audio.shape[1],
            sample_rate=self.sample_rate,
            nominal_kbps=bitrate,
        )

    def _decode(self, encoded: Encoded, nfe: int | None, seed: int | None) -> torch.Tensor:
        bitstream = unpack(encoded.payload)
        stream = b"".join(bitstream.frames)
        # FFmpeg's MPEG audio parser splits the elementary stream at the frame headers;
        # parsing None flushes the last frame out of the parser.
        parser = av.CodecContext.create(DECODER, "r")
        packets = [*parser.parse(stream), *parser.parse(None)]
        signal = decode_mono(
            DECODER,
            packets,
            self.sample_rate,
            skip=int(bitstream.header["delay"]),
            num_samples=encoded.num_samples,
        )
        return torch.from_numpy(signal)[None, :]

    def describe(self) -> dict:
        return {
            **super().describe(),
            "standard": "ISO/IEC 11172-3 (MPEG-1 Audio Layer III)",
            "encoder": "libmp3lame (CBR)",
            "decoder": DECODER,
            "encoder_options": dict(self.encoder_options),
        }

    def backend_versions(self) -> dict[str, str]:
        return backend_versions("libmp3lame", "get_lame_version")

"""Opus (IETF RFC 6716) through libopus, the reference implementation, via PyAV.

A classic baseline: mono, 48 kHz, 20 ms frames, hard constant bitrate. The payload holds
the real Opus packets, without an Ogg container (RFC 7845): a small header carries the
pre-skip and the packet size, which is all a decoder needs.
"""

from __future__ import annotations

import torch
from bench.codecs.base import Codec, Encoded
from bench.codecs.bitstream import BitstreamError, pack, unpack
from bench.codecs.classic.pyav import backend_versions, decode_mono, encode_mono

FRAME_MS = 20


class OpusCodec(Codec):
    """libopus at 6 to 64 kbps, hard CBR, so every packet is exactly ``kbps * 20 / 8`` bytes.

    libopus picks its mode and audio bandwidth from the bitrate: with these settings,
    libopus 1.6.1 codes SILK narrowband (4 kHz audio bandwidth) at 6 and 8 kbps, SILK
    wideband at 12 kbps, hybrid fullband from 16 to 48 kbps and CELT fullband at 64 kbps
    (read from the packets' TOC bytes, RFC 6716 section 3.1).
    """

    name = "opus"
    sample_rate = 48000
    channels = 1
    bitrates = (6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)
    frame_rate = 1000 / FRAME_MS

    # Hard CBR (vbr=off) rather than the constrained VBR of FFmpeg's default, so the
    # nominal rate is the real one and every packet has the same size. "audio" is the
    # general-purpose application (FFmpeg's default), stated here so it is recorded.
    encoder_options = {
        "vbr": "off",
        "frame_duration": str(FRAME_MS),
        "application": "audio",
        "compression_level": "10",
    }
    # libopus decodes to 16-bit integers unless float output is requested.
    decoder_options = {"request_sample_fmt": "flt"}

    def _encode(self, audio: torch.Tensor, bitrate: float) -> Encoded:
        encoded = encode_mono(
            "libopus",
            audio[0].detach().cpu().numpy(),
            self.sample_rate,
            round(bitrate * 1000),
            "flt",
            self.encoder_options,
        )
        sizes = {len(packet) for packet in encoded.packets}
        if len(sizes) != 1:
            raise RuntimeError(f"libopus CBR produced packets of several sizes: {sorted(sizes)}")
        # All packets have one size, so it is sent once instead of a length per packet
        # (which would cost 1 to 2 bytes per 15 to 160 byte packet). The pre-skip is what
        # RFC 7845 puts in its OpusHead: 312 samples at 48 kHz with libopus.
        header = {"packet_bytes": sizes.pop(), "pre_skip": encoded.delay}
        return Encoded(
            payload=pack(header, [b"".join(encoded.packets)]),
            num_samples=audio.shape[1],
            sample_rate=self.sample_rate,
            nominal_kbps=bitrate,
        )

    def _decode(self, encoded: Encoded, nfe: int | None, seed: int | None) -> torch.Tensor:
        bitstream = unpack(encoded.payload)
        packet_bytes = int(bitstream.header["packet_bytes"])
        stream = b"".join(bitstream.frames)
        if packet_bytes <= 0 or len(stream) % packet_bytes:
            raise BitstreamError(
                f"Opus stream of {len(stream)} bytes is not a whole number of "
                f"{packet_bytes}-byte packets"
            )
        packets = (stream[i : i + packet_bytes] for i in range(0, len(stream), packet_bytes))
        signal = decode_mono(
            "libopus",
            packets,
            self.sample_rate,
            skip=int(bitstream.header["pre_skip"]),
            num_samples=encoded.num_samples,
            options=self.decoder_options,
        )
        return torch.from_numpy(signal)[None, :]

    def describe(self) -> dict:
        return {
            **super().describe(),
            "standard": "RFC 6716",
            "encoder": "libopus",
            "decoder": "libopus",
            "encoder_options": dict(self.encoder_options),
        }

    def backend_versions(self) -> dict[str, str]:
        return backend_versions("libopus", "opus_get_version_string")

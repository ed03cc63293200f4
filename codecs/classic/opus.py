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

    The output is aligned by the pre-skip alone (libopus's look-ahead, 312 samples at every
    bitrate), which is exact for CELT but not for SILK: libopus's decoder puts out its
    SILK and hybrid modes a few samples off. That is left as the reference decoder gives
    it, since undoing it would mean guessing an amount that depends on the mode and the
    signal. ``residual_delay`` measures, with libopus 1.6.1 on the LibriVox items of
    ../shared/data and the embedded speech: 2 samples early (-0.042 ms) at 12 to 48 kbps
    (SILK wideband and hybrid; 1 early on three of the embedded items); at 6 and 8 kbps
    (SILK narrowband) mostly 2 to 5 samples late, varying with the item (from 1 early to 7
    late); 0 at 64 kbps (CELT). libopus called directly, without FFmpeg, gives the same
    samples bit for bit, and Xiph's opusenc and opusdec (opus-tools 0.2, libopus 1.3.1)
    shift their Ogg files alike; FFmpeg's own Opus decoder, a separate implementation of
    RFC 6716, decodes the same packets with no shift at 12 to 48 kbps (and 5 to 9 samples
    late at 6 and 8 kbps). So the shift is libopus's decoder's, not this wrapper's
    pre-skip. On those LibriVox items it costs SI-SDR 1.6 to 2.0 dB at 12 kbps, 3.9 to
    4.5 dB at 24 kbps and up to 7.7 dB at 48 kbps; ``si_sdr_aligned`` scores without it.
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
